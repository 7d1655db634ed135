"""Classifier speed: single-item latency and batched throughput, for prompts and exchanges, side by side."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from constitutional_guard.classifiers.base import SafetyClassifier
from constitutional_guard.classifiers.input_format import record_prompt
from constitutional_guard.data.schema import Record


def _latencies(classifier: SafetyClassifier, items: Sequence[tuple[str, str | None]]) -> list[float]:
    out = []
    for prompt, response in items:
        start = time.perf_counter()
        classifier.score(prompt, response)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _throughput(classifier: SafetyClassifier, items: Sequence[tuple[str, str | None]], batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(items), batch_size):
        classifier.score_batch(list(items[i : i + batch_size]))
    return len(items) / (time.perf_counter() - start)


def bench_classifier(
    classifier: SafetyClassifier,
    records: Sequence[Record],
    batch_sizes: Sequence[int] = (1, 8, 32),
    warmup: int = 3,
) -> dict[str, Any]:
    """Per kind of input (prompts, exchanges): p50 / p95 single-item latency, items/s at each batch size."""
    groups = {
        "prompts": [(record_prompt(r), None) for r in records],
        "exchanges": [(record_prompt(r), r.response) for r in records if r.response],
    }
    results = []
    for kind, items in groups.items():
        if not items:
            continue
        _latencies(classifier, items[:warmup])
        latencies = sorted(_latencies(classifier, items))
        row: dict[str, Any] = {
            "input": kind,
            "items": len(items),
            "latency_ms_p50": statistics.median(latencies),
            "latency_ms_p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        }
        for size in batch_sizes:
            row[f"items_per_s_batch{size}"] = _throughput(classifier, items, size)
        results.append(row)
    return {
        "kind": classifier.kind,
        "device": str(getattr(classifier, "device", "cpu")),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "batch_sizes": list(batch_sizes),
        "results": results,
    }
