"""Blocked / held per prompt file for each input check of a `cguard eval` run, at each check's own thresholds,
and the held-out prompts' AUROC. python summarise.py EVAL_DIR NAME=CLASSIFIER_DIR ... > summary.json"""
import json, sys
from pathlib import Path
from sklearn.metrics import roc_auc_score

run, *systems = sys.argv[1:]
out = {}
for spec in systems:
    name, path = spec.split("=", 1)
    cfg = json.loads(Path(path, "classifier_config.json").read_text())
    block, allow = cfg["block"], cfg["allow"]
    folder = next((Path(run) / "scores").glob(f"{name}-*"))
    res = {"block": round(block, 4)}
    sets = {}
    for f in sorted(folder.glob("*.jsonl")):
        sets[f.stem.rsplit("-", 1)[0]] = [json.loads(line)["score"] for line in open(f)]
    for d, s in sets.items():
        res[d] = {"n": len(s), "blocked": sum(x >= block for x in s), "held": sum(allow <= x < block for x in s)}
    h, b = sets["harmful"], sets["benign"]
    res["auroc_heldout"] = round(roc_auc_score([1] * len(h) + [0] * len(b), h + b), 4)
    out[name] = res
print(json.dumps(out, indent=1))
