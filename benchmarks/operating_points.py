"""Operating points of an embedding prompt classifier: what each false-block target does on held-out prompts.

For each ``--targets`` rate the block and allow thresholds are chosen on the classifier's calibration prompts
(its training corpus's calibration split), on cross-source scores (``--folds`` refits of the head that each
leave a fold of source families out, as ``cguard classifier calibrate --cross-source-prompts`` does) and on the
classifier's own scores, and applied to labelled test prompts from sources the classifier never saw. Reported
per target and score kind: the thresholds, and the shares of harmful prompts blocked and of benign prompts
blocked and held, overall and per group (``meta.safety_adjacent`` marks hard benign prompts).

    python benchmarks/operating_points.py --classifier CLF --test harmful.jsonl --test benign.jsonl --out points.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from constitutional_guard.classifiers.base import load_classifier
from constitutional_guard.classifiers.calibration import DEFAULT_HOLD_RATE, choose_thresholds, score_records
from constitutional_guard.classifiers.embedding import EmbeddingClassifier
from constitutional_guard.classifiers.embedding_training import cross_source_scores
from constitutional_guard.classifiers.exchange_training import select_inputs
from constitutional_guard.data.corpus import load_split
from constitutional_guard.data.io import read_records
from constitutional_guard.data.schema import Record

TARGETS = "0.01,0.02,0.03,0.05"


def group_of(record: Record) -> str:
    if record.is_unsafe:
        return "harmful"
    return "benign, safety-adjacent" if record.meta.get("safety_adjacent") else "benign, plain"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifier", type=Path, required=True, help="An embedding classifier of prompts.")
    parser.add_argument("--test", type=Path, action="append", required=True, help="Labelled prompts (JSONL).")
    parser.add_argument("--targets", default=TARGETS, help="False-block targets, comma-separated.")
    parser.add_argument("--hold-rate", type=float, default=DEFAULT_HOLD_RATE)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    classifier = load_classifier(args.classifier)
    if not isinstance(classifier, EmbeddingClassifier):
        raise SystemExit(f"{args.classifier}: not an embedding classifier")
    calibration = select_inputs(load_split(classifier.config.training["data_dir"], "calibration"), "prompts")
    y_cal = np.array([int(r.is_unsafe) for r in calibration])
    calibration_scores = {
        "cross-source": cross_source_scores(classifier, calibration, args.folds),
        "own": np.array(score_records(classifier, calibration)),
    }
    test = [r for path in args.test for r in read_records(path)]
    scores = np.array(score_records(classifier, test))
    groups = np.array([group_of(r) for r in test])
    report: dict = {
        "classifier": str(args.classifier),
        "hold_rate": args.hold_rate,
        "test": {name: int((groups == name).sum()) for name in sorted(set(groups))},
        "points": [],
    }
    for kind, values in calibration_scores.items():
        for target in (float(t) for t in args.targets.split(",")):
            thresholds = choose_thresholds(y_cal, values, target, hold_rate=args.hold_rate)
            blocked, held = scores >= thresholds.block, (scores >= thresholds.allow) & (scores < thresholds.block)
            point = {"scores": kind, "target": target, "allow": thresholds.allow, "block": thresholds.block}
            for name in sorted(set(groups)):
                members = groups == name
                point[name] = {"blocked": float(blocked[members].mean()), "held": float(held[members].mean())}
            report["points"].append(point)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for point in report["points"]:
        cells = "  ".join(f"{name}: {point[name]['blocked']:.1%} blocked" for name in report["test"])
        print(f"{point['scores']:>12} {point['target']:.0%}  block {point['block']:.3f}  {cells}")


if __name__ == "__main__":
    main()
