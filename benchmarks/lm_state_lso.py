"""Leave-source-out on a causal LM's hidden states: does the target model's own view of a prompt or an exchange
generalise to unseen sources better than a sentence encoder's?

Each record is read as the model reads it while generating (``encode_record``: the chat with its generation
prompt, the answer teacher-forced after it), through the blocks up to the deepest requested layer only. Per layer
two feature blocks are kept (``pooled_states``, as the embedding classifier's ``states`` read them): the last
token's hidden state (the assistant header for a prompt, the last answer token for an exchange) and the mean over
the answer's tokens (over every token for a prompt). `cguard classifier leave-source-out --states-model` runs the
same on one layer set; this script caches several layers at once and ``--use-layers`` picks the ones the head
reads; ``--encoder`` puts that sentence encoder's features (the embedding classifier's, from its cache) beside
them. The folds, head, weights and thresholds are
`cguard classifier leave-source-out`'s (``embedding_fit``, ``leave_source_out``); results.json, report.md and
scores.jsonl are written as the CLI writes them. The states are cached per split under ``--cache`` (float16 .npy,
keyed by everything they depend on), so variants of the head rerun in minutes.

    python benchmarks/lm_state_lso.py --data CORPUS --inputs prompts --layers 12,18,24 --use-layers 18 \
        --encoder mpnet-base --output OUT
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from constitutional_guard.activations import (
    CaptureSettings,
    data_hash,
    encode_record,
    pooled_states,
    template_hash,
)
from constitutional_guard.atomic import atomic_path, write_json_atomic, write_text_atomic
from constitutional_guard.data.schema import SPLITS, Record
from constitutional_guard.evaluation.leave_source_out import (
    corpus_splits,
    embedding_features,
    embedding_fit,
    leave_source_out,
    markdown,
)
from constitutional_guard.models.loading import LoadedModel, load_causal_lm
from constitutional_guard.paths import cache_dir


def state_features(lm: LoadedModel, records: Sequence[Record], settings: CaptureSettings) -> np.ndarray:
    """``pooled_states`` of each record's chat and answer; float16, ``[records, 2 * len(layers) * hidden]``."""
    return pooled_states(lm, [encode_record(lm, r, settings) for r in records], settings).astype(np.float16)


def cached_states(
    lm: LoadedModel, splits: dict[str, list[Record]], settings: CaptureSettings, cache: Path
) -> dict[str, np.ndarray]:
    """``state_features`` of every split, read from or written to ``cache`` (atomic .npy per split, keyed by the
    model, its dtype and chat template, the layers, the lengths and the records)."""
    features = {}
    for name in SPLITS:
        key = json.dumps(
            [
                lm.name,
                str(lm.model.dtype),
                template_hash(lm),
                list(settings.layers),
                settings.max_length,
                settings.max_response_tokens,
                data_hash(splits[name]),
            ]
        )
        path = cache / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
        if not path.exists():
            start = time.perf_counter()
            values = state_features(lm, splits[name], settings)
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, values)
            print(f"states: {name} ({len(splits[name])} records) {time.perf_counter() - start:.0f} s", flush=True)
        features[name] = np.load(path)
    return features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a built corpus (cguard data build)")
    parser.add_argument("--inputs", choices=("prompts", "exchanges"), default="prompts")
    parser.add_argument("--max-per-split", type=int, default=None, help="seeded cap per split, as the CLI's")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="causal LM alias, path or hub id")
    parser.add_argument("--layers", default="18", help="hidden-state indices to read, e.g. 12,18,24")
    parser.add_argument("--use-layers", default=None, help="the layers the head reads (default: all read)")
    parser.add_argument("--encoder", default=None, help="a sentence encoder whose features go beside the states")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per record")
    parser.add_argument("--max-response-tokens", type=int, default=128)
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--cache", type=Path, default=cache_dir() / "lm-states")
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args()
    start = time.perf_counter()

    layers = tuple(int(x) for x in args.layers.split(","))
    used = tuple(int(x) for x in args.use_layers.split(",")) if args.use_layers else layers
    if not set(used) <= set(layers):
        parser.error(f"--use-layers {args.use_layers}: read only from --layers {args.layers}")
    splits = corpus_splits(args.data, args.inputs, args.max_per_split, 0)
    lm = load_causal_lm(args.model, dtype=args.dtype)  # on CUDA when present
    settings = CaptureSettings(
        layers=layers,
        max_length=args.max_length,
        max_response_tokens=args.max_response_tokens,
        batch_size=64,
        max_batch_tokens=args.max_batch_tokens,
    )
    args.cache.mkdir(parents=True, exist_ok=True)
    states = cached_states(lm, splits, settings, args.cache)
    block = 2 * lm.hidden_size
    columns = np.concatenate([np.arange(layers.index(u) * block, (layers.index(u) + 1) * block) for u in used])
    features = {name: states[name][:, columns].astype(np.float32) for name in SPLITS}
    if args.encoder:
        encoded = embedding_features(splits, args.encoder)
        features = {name: np.hstack([encoded[name], features[name]]) for name in SPLITS}

    result = leave_source_out(
        splits, features, embedding_fit(splits, features), progress=lambda m: print(m, flush=True)
    )
    settings_out = {k: v for k, v in vars(args).items() if k not in ("output", "cache")}
    report = {
        "classifier": {"kind": "lm-states", **settings_out},
        "data": args.data,
        **result.report,
        "seconds": round(time.perf_counter() - start),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output / "results.json", report)
    title = f"Leave-source-out, {args.inputs}: {args.model} states (layers {','.join(map(str, used))})"
    if args.encoder:
        title += f" beside {args.encoder}"
    write_text_atomic(args.output / "report.md", markdown(report, title))
    write_text_atomic(args.output / "scores.jsonl", "".join(json.dumps(i.as_dict()) + "\n" for i in result.scored))
    pooled = report["leave_source_out"]
    print("AUROC", pooled["auroc"], "cross-source", pooled.get("outcomes_cross_source"), flush=True)


if __name__ == "__main__":
    main()
