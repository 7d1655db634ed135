"""The library's block_threshold rules applied to a leave-source-out run's cross-source scores (exact when every
family is held out). python lso_rules.py SCORES_JSONL OUT_JSON"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from constitutional_guard.classifiers.calibration import block_threshold, hold_allow

RULES = (("items", 0.05), ("sources", 0.05), ("every-source", 0.10), ("items", 0.04), ("items", 0.03))

rows = [r for r in map(json.loads, Path(sys.argv[1]).read_text().splitlines()) if r["input"] == "prompt"]
by_family = defaultdict(list)
for r in rows:
    by_family[r["family"]].append(r)
out = {}
for over, target in RULES:
    counts = defaultdict(int)
    families = {}
    for family, members in by_family.items():
        cal = [r for r in rows if r["split"] == "calibration" and r["family"] != family and r["label"] == "safe"]
        safe = np.array([r["score"] for r in cal])
        block = min(block_threshold(safe, target, over, [r["source"] for r in cal]), 1.0)
        allow = min(hold_allow(safe, block, 0.01), block)
        s = np.array([r["score"] for r in members])
        y = np.array([r["label"] == "unsafe" for r in members])
        original = np.array(["~" not in r["id"] for r in members])
        counts["unsafe_blocked"] += int((s[y] >= block).sum())
        counts["unsafe"] += int(y.sum())
        counts["safe_blocked"] += int((s[~y] >= block).sum())
        counts["safe"] += int((~y).sum())
        counts["safe_held"] += int(((s[~y] >= allow) & (s[~y] < block)).sum())
        counts["original_safe_blocked"] += int((s[~y & original] >= block).sum())
        counts["original_safe"] += int((~y & original).sum())
        if (~y & original).sum() >= 30:
            families[family] = round(float((s[~y & original] >= block).mean()), 4)
    out[f"{over} {target}"] = {
        "harmful_blocked": counts["unsafe_blocked"] / counts["unsafe"],
        "benign_blocked": counts["safe_blocked"] / counts["safe"],
        "benign_held": counts["safe_held"] / counts["safe"],
        "original_benign_blocked": counts["original_safe_blocked"] / counts["original_safe"],
        "benign_families": families,
        "benign_families_over_5pct": sum(v > 0.05 for v in families.values()),
    }
    print(over, target, {k: v for k, v in out[f"{over} {target}"].items() if k != "benign_families"})
Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
