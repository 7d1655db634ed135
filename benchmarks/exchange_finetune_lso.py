"""The exchange check under leave-source-out: a fine-tuned pair classifier against the frozen embedding one.

The protocol and report are `cguard classifier leave-source-out --inputs exchanges`'s (same splits, caps, folds,
thresholds; `leave_source_out`). Per fold (every source family with at least 50 records, and none for the
in-distribution row) the encoder is fine-tuned as a sentence-pair classifier (``FineTuned`` of
`encoder_folds.py`: all layers, ``--samples`` weighted draws as training weighs records, batch 32, seeded per
fold) on the train split without the family, and scores its records and the calibration split. Written under
``--output``:
- ``fine-tuned/``: that classifier alone;
- ``frozen/``: the frozen embedding classifier (features and default head), on the same splits;
- ``mean/``: the mean of the two scores, fold by fold.
Each holds results.json, report.md and scores.jsonl as the CLI writes them. Fine-tuning ten folds takes minutes
on a GPU and hours on a 2-core CPU.

    python benchmarks/exchange_finetune_lso.py --data CORPUS --max-per-split 6000 --samples 24000 --output OUT
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import torch
from encoder_folds import FineTuned

from constitutional_guard.atomic import write_json_atomic, write_text_atomic
from constitutional_guard.classifiers.embedding_training import DEFAULT_CONSTITUTION_SHARE, sample_weights
from constitutional_guard.classifiers.input_format import record_prompt
from constitutional_guard.data.schema import SPLITS, family_of
from constitutional_guard.evaluation.leave_source_out import (
    corpus_splits,
    embedding_features,
    embedding_fit,
    leave_source_out,
    markdown,
)

Scorer = Callable[[np.ndarray], np.ndarray]
MIN_RECORDS = 50
"""Families held out: those with at least this many records, as the CLI's default."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a built corpus (cguard data build)")
    parser.add_argument("--base-model", default="minilm-l6", help="encoder alias, fine-tuned and frozen")
    parser.add_argument("--max-per-split", type=int, default=6000)
    parser.add_argument("--samples", type=int, default=24000, help="exchanges drawn per fine-tuning run")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="fold k (in-distribution first) is seeded seed + k")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args()
    start = time.perf_counter()

    splits = corpus_splits(args.data, "exchanges", args.max_per_split, 0)
    items = [(record_prompt(r), r.response) for name in SPLITS for r in splits[name]]
    frozen = embedding_features(splits, args.base_model)
    offsets = np.cumsum([0] + [len(splits[name]) for name in SPLITS])
    # feature rows: the record's index (for the fine-tuned scorer), then the frozen features
    features = {
        name: np.column_stack([np.arange(offsets[k], offsets[k + 1]), frozen[name]]) for k, name in enumerate(SPLITS)
    }
    frozen_fit = embedding_fit(splits, {name: f[:, 1:] for name, f in features.items()})
    train_family = np.array([family_of(r) for r in splits["train"]])
    sizes = Counter(family_of(r) for name in SPLITS for r in splits[name])
    folds = [None, *sorted(f for f, n in sizes.items() if n >= MIN_RECORDS)]
    y_train = np.array([int(r.is_unsafe) for r in splits["train"]])
    tuned = FineTuned(args.base_model, args.max_tokens, device=args.device)

    @cache
    def fine_tuned(excluded: str | None) -> Scorer:
        keep = np.flatnonzero(train_family != excluded)
        kept = [splits["train"][i] for i in keep]
        weights = sample_weights(kept, constitution_share=DEFAULT_CONSTITUTION_SHARE)
        model = tuned.fit(
            [items[i] for i in keep], y_train[keep], weights, args.samples, args.lr, args.seed + folds.index(excluded)
        )
        scored: dict[int, float] = {}

        def scorer(x: np.ndarray) -> np.ndarray:
            rows = [int(i) for i in x[:, 0]]
            todo = [i for i in rows if i not in scored]
            if todo:
                scored.update(zip(todo, tuned.score([items[i] for i in todo], model).tolist(), strict=True))
            return np.array([scored[i] for i in rows])

        print(f"fine-tuned without {excluded}: {time.perf_counter() - start:.0f} s", flush=True)
        return scorer

    @cache
    def frozen_scorer(excluded: str | None) -> Scorer:
        scorer = frozen_fit(excluded)
        return lambda x: scorer(x[:, 1:])

    variants = {
        "fine-tuned": fine_tuned,
        "frozen": frozen_scorer,
        "mean": lambda excluded: lambda x: (fine_tuned(excluded)(x) + frozen_scorer(excluded)(x)) / 2,
    }
    settings = {k: v for k, v in vars(args).items() if k not in ("data", "output")}
    for name, fit in variants.items():
        result = leave_source_out(splits, features, fit, min_records=MIN_RECORDS)
        report = {"classifier": {"variant": name, **settings}, "data": args.data, **result.report,
                  "seconds": round(time.perf_counter() - start)}
        out = args.output / name
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "results.json", report)
        write_text_atomic(out / "report.md", markdown(report, f"Leave-source-out, exchanges: {name}"))
        write_text_atomic(out / "scores.jsonl", "".join(json.dumps(i.as_dict()) + "\n" for i in result.scored))
        pooled = report["leave_source_out"]
        print(name, "AUROC", round(pooled["auroc"]["exchanges"], 3), flush=True)


if __name__ == "__main__":
    main()
