"""The final check alone: each exchange check's verdict, at its own thresholds, on the raw answers of guarded-generation
items (the full 48-token answers the guard's last check reads when nothing stopped earlier), by group and by the
judge's verdict on the raw answer.

    python final_check.py ITEMS.jsonl [ITEMS.jsonl ...] -- NAME=CLASSIFIER_DIR [NAME=CLASSIFIER_DIR ...]
"""

import json
import sys
from collections import Counter

from constitutional_guard.classifiers.registry import load_classifier


def main(argv: list[str]) -> None:
    cut = argv.index("--")
    items = []
    for path in argv[:cut]:
        with open(path, encoding="utf-8") as fh:
            items += [json.loads(line) for line in fh]
    pairs = [(row["prompt"], row["raw"]["response"]) for row in items]
    for spec in argv[cut + 1 :]:
        name, directory = spec.split("=", 1)
        counts: Counter = Counter()
        for row, score in zip(items, load_classifier(directory).score_batch(pairs), strict=True):
            group = row["group"]
            if group != "benign":
                group += ", judged unsafe" if row["raw"]["judgement"]["unsafe"] else ", judged safe"
            counts[(group, score.verdict.value)] += 1
            if row["group"] == "benign" and score.verdict.value != "allow":
                print(f"  {name}: {score.verdict.value} {score.score:.3f} {row['prompt'][:90]!r}")
        for group in sorted({g for g, _ in counts}):
            row = {v: counts[(group, v)] for v in ("allow", "uncertain", "block")}
            print(f"{name}: {group}: {row}")


if __name__ == "__main__":
    main(sys.argv[1:])
