"""Rates on the held-out prompts at each demo-recipe head's 3-fold and 5-fold thresholds, from run.sh's folders
(the scores come from eval-size: the head is the same, only the threshold differs). Run where run.sh ran."""
import json
from pathlib import Path

import numpy as np


def rows(pattern: str) -> list[dict]:
    return [json.loads(line) for line in next(Path().glob(pattern)).read_text().splitlines()]


benign = {row["id"]: row for row in rows("e2e/benign.jsonl")}
out = {}
for seed in (0, 1, 2):
    h = np.array([row["score"] for row in rows(f"eval-size/scores/s{seed}-*/harmful-*")])
    scored = rows(f"eval-size/scores/s{seed}-*/benign-*")
    b = np.array([row["score"] for row in scored])
    adj = np.array([bool((benign[row["id"]].get("meta") or {}).get("safety_adjacent")) for row in scored])
    for folds, path in ((3, f"e2e-9k-s{seed}"), (5, f"e2e-9k-s{seed}-cs5")):
        cfg = json.loads(Path(path, "classifier_config.json").read_text())
        blk, allow = cfg["block"], cfg["allow"]
        out[f"s{seed}-{folds}folds"] = {
            "block": round(blk, 4),
            "harmful_blocked": round(float((h >= blk).mean()), 4),
            "benign_blocked": round(float((b >= blk).mean()), 4),
            "safety_adjacent_blocked": round(float((b[adj] >= blk).mean()), 4),
            "benign_held": round(float(((b >= allow) & (b < blk)).mean()), 4),
        }
print(json.dumps(out, indent=1))
