"""Hidden-state capture for probe training: batched, length-bucketed, cached on disk, resumable.

A capture stores, for every record and every requested layer, the hidden state at the final token and at
each response token, as float16 safetensors shards plus an ``index.json``. The cache key covers the model,
the layers, the chat template, the capture limits and the records, so a layer sweep or a retraining reads
the cache instead of running the model again. Layer indices follow Hugging Face ``output_hidden_states``:
0 is the embedding output, ``l`` the output of block ``l``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from constitutional_guard.atomic import atomic_path, write_json_atomic
from constitutional_guard.data.schema import Record
from constitutional_guard.models.loading import LoadedModel, Message
from constitutional_guard.paths import cache_dir

INDEX_NAME = "index.json"
FORMAT_VERSION = 1
Progress = Callable[[int, int], None]
"""Called with (records done, records total)."""


@dataclass(frozen=True)
class CaptureSettings:
    """What to capture and how to batch it."""

    layers: tuple[int, ...]
    """Hidden-state indices (0 = embeddings, l = output of block l)."""
    max_length: int = 512
    """Tokens per sequence; longer prompts are cut from the left so the response stays in view."""
    max_response_tokens: int = 128
    """Response tokens kept (and captured) per exchange."""
    batch_size: int = 16
    max_batch_tokens: int = 6144
    """Upper bound on padded tokens per forward pass (batch size × longest sequence)."""
    shard_records: int = 128
    """Records per safetensors shard (the unit of resumption)."""


def resolve_layers(spec: str | Sequence[int] | None, num_layers: int) -> list[int]:
    """Parse ``"all"``, ``"every:N"``, ``"a-b"`` or ``"3,7,12"`` (or a list) into checked hidden-state indices."""
    if spec is None or spec == "all":
        return list(range(num_layers + 1))
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("every:"):
            step = int(text.removeprefix("every:"))
            return sorted(set(range(0, num_layers + 1, step)) | {num_layers})
        layers: list[int] = []
        for part in text.split(","):
            match = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if not match:
                raise ValueError(f"bad layer spec {spec!r}: use 'all', 'every:N', '4-8' or '3,7,12'")
            start, end = int(match[1]), match[2]
            layers.extend(range(start, int(end) + 1) if end is not None else [start])
    else:
        layers = [int(x) for x in spec]
    out = []
    for layer in layers:
        index = layer + num_layers + 1 if layer < 0 else layer
        if not 0 <= index <= num_layers:
            raise ValueError(
                f"layer {layer} is out of range for a model with {num_layers} layers: "
                f"use 0 (embeddings) to {num_layers}, or negative indices from the end"
            )
        if index not in out:
            out.append(index)
    return out


def encode_record(lm: LoadedModel, record: Record, settings: CaptureSettings) -> tuple[list[int], int]:
    """Token ids of a record as the model sees it while generating, and how many belong to the prompt."""
    return encode_exchange(lm, record.chat, record.response, settings.max_length, settings.max_response_tokens)


def encode_exchange(
    lm: LoadedModel, chat: list[Message], response: str | None, max_length: int, max_response_tokens: int
) -> tuple[list[int], int]:
    """Token ids of a chat and its (partial) answer as the model sees them while generating, and how many belong
    to the prompt.

    The response is tokenised on its own and appended after the generation prompt, as generated tokens are; it
    keeps its first ``max_response_tokens`` tokens, and the prompt is cut from the left to fit ``max_length``.
    """
    prompt_ids = lm.encode_messages(chat, add_generation_prompt=True)
    response_ids: list[int] = []
    if response:
        response_ids = list(lm.tokenizer(response, add_special_tokens=False)["input_ids"])[:max_response_tokens]
    keep = max(1, max_length - len(response_ids))
    prompt_ids = prompt_ids[-keep:]
    return prompt_ids + response_ids, len(prompt_ids)


def template_hash(lm: LoadedModel) -> str:
    """Fingerprint of how chats are rendered (template text and whether it is used)."""
    template = getattr(lm.tokenizer, "chat_template", None) if lm.use_chat_template else None
    return hashlib.sha256(json.dumps([lm.use_chat_template, template]).encode()).hexdigest()[:16]


def data_hash(records: Sequence[Record]) -> str:
    """Fingerprint of the records' ids, chats and responses, in order."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record.id, record.chat, record.response], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def capture_key(lm: LoadedModel, records: Sequence[Record], settings: CaptureSettings) -> dict:
    """Everything the captured values depend on (batching does not change them)."""
    return {
        "format": FORMAT_VERSION,
        "model_id": lm.name,
        "num_layers": lm.num_layers,
        "hidden_size": lm.hidden_size,
        "layers": list(settings.layers),
        "template_hash": template_hash(lm),
        "data_hash": data_hash(records),
        "num_records": len(records),
        "max_length": settings.max_length,
        "max_response_tokens": settings.max_response_tokens,
    }


def capture_dir(key: dict) -> Path:
    """Cache folder for a capture key, under ``cache_dir()/activations``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    model = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(key["model_id"]).name)[-48:]
    return cache_dir() / "activations" / f"{model}-{digest}"


@dataclass
class ActivationSet:
    """Captured hidden states of a list of records, in the records' order (float16 numpy arrays)."""

    layers: list[int]
    final: np.ndarray
    """[records, layers, hidden]: the last token of each sequence."""
    tokens: np.ndarray
    """[response tokens of all records, layers, hidden]: every response token, record after record."""
    offsets: np.ndarray
    """[records + 1]: record i's response tokens are ``tokens[offsets[i]:offsets[i + 1]]``."""
    model_id: str
    hidden_size: int
    path: Path | None = None

    def layer_positions(self, layers: Sequence[int]) -> list[int]:
        """Positions of hidden-state indices within this capture, or a clear error."""
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise ValueError(f"layers {missing} were not captured (captured: {self.layers}); capture them first")
        return [self.layers.index(layer) for layer in layers]

    def final_features(self, layers: Sequence[int]) -> np.ndarray:
        return self.final[:, self.layer_positions(layers)].astype(np.float32)

    def token_features(self, layers: Sequence[int]) -> np.ndarray:
        return self.tokens[:, self.layer_positions(layers)].astype(np.float32)

    def response_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def select(self, layers: Sequence[int]) -> ActivationSet:
        """The same capture restricted to some of its layers."""
        positions = self.layer_positions(layers)
        return ActivationSet(
            list(layers), self.final[:, positions], self.tokens[:, positions], self.offsets, self.model_id,
            self.hidden_size, self.path,
        )


def find_superset(key: dict) -> Path | None:
    """A complete cached capture that matches ``key`` except that it holds more layers."""
    wanted = {k: v for k, v in key.items() if k != "layers"}
    for index_path in sorted((cache_dir() / "activations").glob(f"*/{INDEX_NAME}")):
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        other = index.get("key", {})
        if index.get("complete") and {k: v for k, v in other.items() if k != "layers"} == wanted and set(
            key["layers"]
        ) <= set(other.get("layers", [])):
            return index_path.parent
    return None


def length_batches(lengths: Sequence[int], order: Sequence[int], settings: CaptureSettings) -> list[list[int]]:
    """Consecutive runs of length-sorted records within the batch-size and padded-token budgets."""
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = max([lengths[i] for i in current] + [lengths[index]])
        too_many = longest * (len(current) + 1) > settings.max_batch_tokens
        if current and (len(current) >= settings.batch_size or too_many):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _decoder(lm: LoadedModel) -> torch.nn.Module:
    """The transformer body without the LM head (hidden states need no logits)."""
    get_decoder = getattr(lm.model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    return decoder if isinstance(decoder, torch.nn.Module) else lm.model


class _StopForward(Exception):
    """Raised by a hook once the deepest requested layer has been computed."""


def can_exit_early(decoder: torch.nn.Module, layers: Sequence[int]) -> bool:
    """Whether ``early_exit_states`` can stop ``decoder`` after the deepest of ``layers`` (a stack of blocks, and
    not its last index, which comes after the final norm)."""
    blocks = getattr(decoder, "layers", None)
    return isinstance(blocks, torch.nn.ModuleList) and max(layers) < len(blocks)


def early_exit_states(
    decoder: torch.nn.Module, layers: Sequence[int], **forward: Any
) -> dict[int, torch.Tensor] | None:
    """Hidden states of ``decoder(**forward)`` read by hooks, stopping after the deepest requested block (None where
    ``can_exit_early`` says no). A KV cache in ``forward`` is filled up to that block only.

    Index 0 is the input of the first block, ``l`` the output of block ``l``, as in ``output_hidden_states``.
    The hooks act only in the calling thread: concurrent callers (a server's requests, a stream monitor's batcher)
    run the same model through each other's hooks.
    """
    if not can_exit_early(decoder, layers):
        return None
    blocks = decoder.layers
    states: dict[int, torch.Tensor] = {}
    owner = threading.get_ident()

    def first_input(module, args, kwargs):
        if threading.get_ident() != owner:
            return
        states[0] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        if max(layers) == 0:
            raise _StopForward

    def block_output(index: int):
        def hook(module, args, output):
            if threading.get_ident() != owner:
                return
            states[index] = output[0] if isinstance(output, tuple) else output
            if index == max(layers):
                raise _StopForward

        return hook

    handles = [blocks[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    handles += [blocks[i - 1].register_forward_hook(block_output(i)) for i in sorted(set(layers)) if i > 0]
    try:
        decoder(**forward)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return states


@torch.inference_mode()
def forward_batch(lm: LoadedModel, sequences: Sequence[list[int]], layers: Sequence[int]) -> list[torch.Tensor]:
    """Hidden states of right-padded sequences: one ``[seq_len, layers, hidden]`` float16 CPU tensor each.

    Runs the transformer body only (no LM head) and stops after the deepest requested block.
    """
    longest = max(len(s) for s in sequences)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(sequences), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    decoder = _decoder(lm)
    states = early_exit_states(decoder, layers, input_ids=ids, attention_mask=mask, use_cache=False)
    if states is None:
        out = decoder(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        states = {layer: out.hidden_states[layer] for layer in layers}
    stacked = torch.stack([states[layer] for layer in layers], dim=2).to("cpu", torch.float16)
    return [stacked[row, : len(seq)] for row, seq in enumerate(sequences)]


def pooled_states(
    lm: LoadedModel, encoded: Sequence[tuple[list[int], int]], settings: CaptureSettings
) -> np.ndarray:
    """Per sequence (ids, prompt length from ``encode_exchange``) and layer: the last token's state, then the mean
    over the answer's tokens (over every token when there is no answer); float32 ``[n, 2 * layers * hidden]``.

    For a prompt alone the last token is the assistant header: the state from which the model would answer."""
    out = np.zeros((len(encoded), 2 * len(settings.layers) * lm.hidden_size), dtype=np.float32)
    lengths = [len(ids) for ids, _ in encoded]
    order = sorted(range(len(encoded)), key=lambda i: (lengths[i], i))
    for batch in length_batches(lengths, order, settings):
        states = forward_batch(lm, [encoded[i][0] for i in batch], settings.layers)
        for i, state in zip(batch, states, strict=True):
            answer = state[encoded[i][1] :] if len(state) > encoded[i][1] else state
            pooled = torch.stack([state[-1].float(), answer.float().mean(0)], dim=1)  # [layers, 2, hidden]
            out[i] = pooled.reshape(-1).numpy()
    return out


def capture(
    lm: LoadedModel,
    records: Sequence[Record],
    settings: CaptureSettings,
    root: str | Path | None = None,
    progress: Progress | None = None,
) -> ActivationSet:
    """Capture (or read from the cache) the final-token and response-token hidden states of ``records``.

    Records are sorted by length and batched so that little padding is computed; each shard is written
    atomically and listed in the index, so an interrupted capture resumes at the first missing shard. A
    cached capture of the same records with more layers is reused (a probe trained after a sweep).
    """
    key = capture_key(lm, records, settings)
    if root is None and not (capture_dir(key) / INDEX_NAME).exists():
        superset = find_superset(key)
        if superset is not None:
            return load_capture(superset).select(settings.layers)
    folder = Path(root) if root is not None else capture_dir(key)
    index_path = folder / INDEX_NAME
    index = json.loads(index_path.read_text()) if index_path.exists() else None
    if index is None or index.get("key") != key:
        index = {"key": key, "settings": asdict(settings), "shards": [], "complete": False}
    done = {i for shard in index["shards"] for i in shard["records"]}
    if not index["complete"]:
        encoded = [encode_record(lm, r, settings) for r in records]
        lengths = [len(ids) for ids, _ in encoded]
        order = sorted(range(len(records)), key=lambda i: (lengths[i], i))
        chunks = [order[i : i + settings.shard_records] for i in range(0, len(order), settings.shard_records)]
        if progress:
            progress(len(done), len(records))
        for number, chunk in enumerate(chunks):
            if set(chunk) <= done:
                continue
            finals, tokens, counts = [], [], []
            for batch in length_batches(lengths, chunk, settings):
                states = forward_batch(lm, [encoded[i][0] for i in batch], settings.layers)
                for i, state in zip(batch, states, strict=True):
                    finals.append(state[-1])
                    tokens.append(state[encoded[i][1] :])
                    counts.append(len(state) - encoded[i][1])
                if progress:
                    done.update(batch)
                    progress(len(done), len(records))
            name = f"shard-{number:05d}.safetensors"
            tensors = {
                "final": torch.stack(finals),
                "tokens": torch.cat(tokens),
                "counts": torch.tensor(counts, dtype=torch.long),
            }
            with atomic_path(folder / name) as tmp:
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
            index["shards"].append({"file": name, "records": list(chunk)})
            done.update(chunk)
            write_json_atomic(index_path, index)
        index["complete"] = True
        write_json_atomic(index_path, index)
    return load_capture(folder)


def load_capture(folder: str | Path) -> ActivationSet:
    """Read a complete capture folder back into record order."""
    folder = Path(folder)
    index_path = folder / INDEX_NAME
    if not index_path.exists():
        raise FileNotFoundError(f"{folder} is not an activation capture (no {INDEX_NAME})")
    index = json.loads(index_path.read_text())
    if not index.get("complete"):
        raise ValueError(f"{folder}: capture is incomplete; run the capture again to resume it")
    key = index["key"]
    n, n_layers, hidden = key["num_records"], len(key["layers"]), key["hidden_size"]
    final = np.zeros((n, n_layers, hidden), dtype=np.float16)
    per_record: list[np.ndarray | None] = [None] * n
    for shard in index["shards"]:
        tensors = load_file(str(folder / shard["file"]))
        final[shard["records"]] = tensors["final"].numpy()
        tokens = tensors["tokens"].numpy()
        starts = np.concatenate([[0], np.cumsum(tensors["counts"].numpy())])
        for j, record in enumerate(shard["records"]):
            per_record[record] = tokens[starts[j] : starts[j + 1]]
    lengths = [len(t) if t is not None else 0 for t in per_record]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    pieces = [t for t in per_record if t is not None and len(t)]
    tokens_all = np.concatenate(pieces) if pieces else np.zeros((0, n_layers, hidden), dtype=np.float16)
    return ActivationSet(
        layers=list(key["layers"]),
        final=final,
        tokens=tokens_all,
        offsets=offsets,
        model_id=key["model_id"],
        hidden_size=hidden,
        path=folder,
    )
