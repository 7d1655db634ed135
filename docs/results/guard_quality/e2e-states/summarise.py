"""AUROC and blocked / held shares of the held-out end-to-end prompts for each input check of a `cguard eval` run,
at each classifier's own calibrated thresholds, with the benign prompts split into plain and safety-adjacent
(``meta.safety_adjacent``). Run from the repository root:

    python docs/results/guard_quality/e2e-states/summarise.py EVAL_DIR BENIGN_JSONL NAME=CLASSIFIER_DIR ... > summary.json
"""

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

run, benign_file, *systems = sys.argv[1:]
benign = {json.loads(line)["id"]: json.loads(line) for line in open(benign_file)}
out = {}
for spec in systems:
    name, path = spec.split("=", 1)
    cfg = json.loads(Path(path, "classifier_config.json").read_text())
    block = cfg["prompt_block"] if cfg.get("prompt_block") is not None else cfg["block"]
    allow = cfg["prompt_allow"] if cfg.get("prompt_allow") is not None else cfg["allow"]
    folder = next((Path(run) / "scores").glob(f"{name}-*"))
    harmful = np.array([json.loads(line)["score"] for line in open(next(folder.glob("harmful-*")))])
    rows = [json.loads(line) for line in open(next(folder.glob("benign-*")))]
    safe = np.array([row["score"] for row in rows])
    adjacent = np.array([bool((benign[row["id"]].get("meta") or {}).get("safety_adjacent")) for row in rows])
    labels = np.r_[np.ones(len(harmful)), np.zeros(len(safe))]
    out[name] = {
        "auroc": round(float(roc_auc_score(labels, np.r_[harmful, safe])), 4),
        "block": round(block, 4),
        "harmful_blocked": round(float((harmful >= block).mean()), 4),
        "benign_blocked": round(float((safe >= block).mean()), 4),
        "benign_held": round(float(((safe >= allow) & (safe < block)).mean()), 4),
        "plain_benign_blocked": round(float((safe[~adjacent] >= block).mean()), 4),
        "safety_adjacent_blocked": round(float((safe[adjacent] >= block).mean()), 4),
        "n_harmful_plain_adjacent": [len(harmful), int((~adjacent).sum()), int(adjacent.sum())],
    }
print(json.dumps(out, indent=1))
