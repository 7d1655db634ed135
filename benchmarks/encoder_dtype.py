"""An embedding classifier's encoder (or the LM whose states it reads) in float32 against bfloat16: time, AUROC
and decisions on labelled prompts.

``--part states`` swaps the dtype of the LM read beside the encoder instead of the encoder's. Both passes score
the same records with the same head, one after the other in one process; the report gives each pass's seconds
(compare them as a ratio: shared machines are noisy), AUROC, the shares blocked at the classifier's thresholds
(the prompt pair for prompts alone), and how far the scores and decisions moved.

    python benchmarks/encoder_dtype.py --classifier CLF --data harmful.jsonl --data benign.jsonl --out dtype.json
    python benchmarks/encoder_dtype.py --part states --classifier CLF --data test.jsonl --max-records 200 --out s.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from constitutional_guard.classifiers.base import load_classifier
from constitutional_guard.classifiers.calibration import item_thresholds, score_records
from constitutional_guard.classifiers.embedding import ENCODER_DIR, EmbeddingClassifier, SentenceEncoder
from constitutional_guard.classifiers.lm_states import StateReader, StatesSettings
from constitutional_guard.data.io import read_records
from constitutional_guard.metrics import auroc

DTYPES = ("float32", "bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifier", type=Path, required=True, help="An embedding classifier directory.")
    parser.add_argument("--data", type=Path, action="append", required=True, help="Labelled records (JSONL).")
    parser.add_argument("--part", choices=("encoder", "states"), default="encoder",
                        help="What runs in each dtype: the sentence encoder or the LM read beside it.")
    parser.add_argument("--max-records", type=int, default=0, help="A seeded sample of this many records (0: all).")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    classifier = load_classifier(args.classifier)
    if not isinstance(classifier, EmbeddingClassifier):
        raise SystemExit(f"{args.classifier}: not an embedding classifier")
    if args.part == "states" and not classifier.config.states:
        raise SystemExit(f"{args.classifier}: reads no LM states")
    records = [r for path in args.data for r in read_records(path)]
    if 0 < args.max_records < len(records):
        records = random.Random(0).sample(records, args.max_records)
    y = np.array([int(r.is_unsafe) for r in records])
    _, block = item_thresholds(records, classifier.thresholds, classifier.prompt_thresholds)
    report: dict = {
        "classifier": str(args.classifier), "part": args.part, "n_unsafe": int(y.sum()), "n_safe": int((y == 0).sum())
    }
    scores = {}
    for dtype in DTYPES:
        config = classifier.config
        if args.part == "states":
            settings = replace(StatesSettings.from_mapping(config.states), dtype=dtype)
            classifier.states = StateReader.load(settings)
        else:
            classifier.encoder = SentenceEncoder.from_pretrained(
                args.classifier / ENCODER_DIR, config.window, config.max_windows, dtype=dtype
            )
        start = time.perf_counter()
        scores[dtype] = np.array(score_records(classifier, records))
        seconds = time.perf_counter() - start
        blocked = scores[dtype] >= block
        report[dtype] = {
            "seconds": round(seconds, 1),
            "auroc": auroc(y, scores[dtype]),
            "unsafe_blocked": float(blocked[y == 1].mean()),
            "safe_blocked": float(blocked[y == 0].mean()),
        }
    moved = np.abs(scores["float32"] - scores["bfloat16"])
    report["speedup"] = round(report["float32"]["seconds"] / report["bfloat16"]["seconds"], 2)
    report["score_change_max"], report["score_change_mean"] = float(moved.max()), float(moved.mean())
    report["decisions_changed"] = int(((scores["float32"] >= block) != (scores["bfloat16"] >= block)).sum())
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
