"""Capture throughput: the batched, length-bucketed path against unbatched loops, in one run.

Three variants read the same records and layers on the same model:

- ``reference_loop``: how a per-layer sweep script captures (open-constitution's ``sweep_layers.py``):
  for every layer, one full forward per example with every hidden state returned, keeping the final
  token of that one layer.
- ``one_at_a_time``: the stronger unbatched baseline: one full forward per example (LM head included)
  that keeps every requested layer.
- ``batched``: the capture path: the transformer body only (no LM head, stopping after the deepest
  requested block) on length-sorted, right-padded batches.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from constitutional_guard.activations import CaptureSettings, encode_record, forward_batch, length_batches
from constitutional_guard.data.schema import Record
from constitutional_guard.models.loading import LoadedModel


@dataclass(frozen=True)
class CaptureTiming:
    variant: str
    records: int
    tokens: int
    seconds: float
    records_per_s: float
    tokens_per_s: float


def _timing(variant: str, records: int, tokens: int, seconds: float) -> CaptureTiming:
    return CaptureTiming(variant, records, tokens, seconds, records / seconds, tokens / seconds)


@torch.inference_mode()
def reference_loop(lm: LoadedModel, sequences: Sequence[list[int]], layers: Sequence[int]) -> float:
    """Seconds to read the final token of each layer with one full-model forward per layer and example."""
    start = time.perf_counter()
    for layer in layers:
        for ids in sequences:
            lm.hidden_states(ids)[layer][-1].to(torch.float16)
    return time.perf_counter() - start


@torch.inference_mode()
def one_at_a_time(lm: LoadedModel, sequences: Sequence[list[int]], layers: Sequence[int]) -> float:
    """Seconds to read the layers of every sequence with one full-model forward each."""
    start = time.perf_counter()
    for ids in sequences:
        hidden = lm.hidden_states(ids)
        torch.stack([hidden[layer] for layer in layers], dim=1).to(torch.float16)
    return time.perf_counter() - start


def batched(lm: LoadedModel, sequences: Sequence[list[int]], settings: CaptureSettings) -> float:
    """Seconds for the batched, length-bucketed capture path (no disk writes)."""
    lengths = [len(s) for s in sequences]
    order = sorted(range(len(sequences)), key=lambda i: (lengths[i], i))
    start = time.perf_counter()
    for batch in length_batches(lengths, order, settings):
        forward_batch(lm, [sequences[i] for i in batch], settings.layers)
    return time.perf_counter() - start


def bench_capture(
    lm: LoadedModel, records: Sequence[Record], settings: CaptureSettings, warmup: int = 2, chunk: int = 32
) -> dict[str, Any]:
    """Time the three variants on the same records; returns a JSON-ready report with the speed-ups.

    The records are visited in length order in chunks, and each chunk is timed with every variant back to
    back, so that load from other processes on a shared machine hits them alike. ``speedup`` compares the
    batched path with ``one_at_a_time``, ``speedup_vs_reference_loop`` with ``reference_loop``.
    """
    sequences = [encode_record(lm, r, settings)[0] for r in records]
    tokens = sum(len(s) for s in sequences)
    reference_loop(lm, sequences[:warmup], settings.layers[:1])
    one_at_a_time(lm, sequences[:warmup], settings.layers)
    batched(lm, sequences[:warmup], settings)
    ordered = sorted(sequences, key=len)
    ref_s = base_s = fast_s = 0.0
    for start in range(0, len(ordered), chunk):
        part = ordered[start : start + chunk]
        ref_s += reference_loop(lm, part, settings.layers)
        base_s += one_at_a_time(lm, part, settings.layers)
        fast_s += batched(lm, part, settings)
    ref = _timing("reference_loop", len(sequences), tokens, ref_s)
    base = _timing("one_at_a_time", len(sequences), tokens, base_s)
    fast = _timing("batched", len(sequences), tokens, fast_s)
    return {
        "model": lm.name,
        "layers": list(settings.layers),
        "records": len(sequences),
        "tokens": tokens,
        "settings": asdict(settings),
        "torch_threads": torch.get_num_threads(),
        "device": str(lm.device),
        "dtype": str(lm.dtype),
        "machine": platform.machine(),
        "results": [asdict(ref), asdict(base), asdict(fast)],
        "speedup": base.seconds / fast.seconds,
        "speedup_vs_reference_loop": ref.seconds / fast.seconds,
    }
