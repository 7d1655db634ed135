"""The demo's shipped input check under each way of counting false blocks: thresholds from its shipped cross-source
calibration scores, applied to its scores of the test split and of sets kept out of training (`cguard eval`
score folders; a labelled set's blocks are counted per label from benchmarks/NAME_prompts.jsonl).
python rules_demo.py ASSETS_DIR DEMO_CORPUS OUT_JSON SCORES_DIR..."""
import json
import sys
from pathlib import Path

import numpy as np

from constitutional_guard.classifiers.calibration import block_threshold, hold_allow
from constitutional_guard.data.corpus import load_split

assets, corpus, out, *dirs = sys.argv[1:]
shipped = json.loads((Path(assets) / "input-classifier" / "calibration_scores.json").read_text())
score_of = dict(zip(shipped["ids"], shipped["scores"], strict=True))
calib = [r for r in load_split(Path(corpus), "calibration") if r.response is None and r.id in score_of]
safe = [(r.source, score_of[r.id]) for r in calib if not r.is_unsafe]
values, sources = np.array([s for _, s in safe]), [src for src, _ in safe]
sets = {}
for d in dirs:
    for f in Path(d).glob("*/*.jsonl"):
        name = f.stem.rsplit("-", 1)[0]
        scores = {r["id"]: r["score"] for r in map(json.loads, f.read_text().splitlines())}
        labelled = Path(f"benchmarks/{name}_prompts.jsonl")
        if labelled.exists():
            label = {r["id"]: r["label"] for r in map(json.loads, labelled.read_text().splitlines())}
            for value in ("safe", "unsafe"):
                sets[f"{name} {value}"] = [s for i, s in scores.items() if label[i] == value]
        else:
            sets[name] = list(scores.values())
res = {"calibration_safe_prompts": len(values), "rows": {}}
for over, target in (("items", 0.05), ("sources", 0.05), ("every-source", 0.10)):
    t = min(block_threshold(values, target, over, sources), 1.0)
    row = {"block": round(t, 4), "allow": round(min(hold_allow(values, t, 0.01), t), 4),
           **{d: int(sum(x >= t for x in s)) for d, s in sets.items()}, "n": {d: len(s) for d, s in sets.items()}}
    res["rows"][f"{over} {target}"] = row
    print(over, target, row)
Path(out).write_text(json.dumps(res, indent=1))
