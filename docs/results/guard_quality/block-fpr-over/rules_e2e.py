"""Block thresholds of an input check under each way of counting false blocks (``block_threshold``), from its
calibration prompts' cross-source scores (five folds of sources), applied to the scores of `cguard classifier eval`
runs; the cross-source scores are kept beside OUT_JSON (.calibration.json) for a rerun.
python rules_e2e.py CLASSIFIER CORPUS EVAL_SCORES_DIR OUT_JSON"""
import json
import sys
from pathlib import Path

import numpy as np

from constitutional_guard.classifiers.calibration import block_threshold
from constitutional_guard.classifiers.embedding_training import cross_source_calibration_scores
from constitutional_guard.classifiers.registry import load_classifier
from constitutional_guard.data.corpus import load_split

clf_dir, corpus, scores_dir, out = sys.argv[1:]
calib = [r for r in load_split(Path(corpus), "calibration") if r.response is None]
cache = Path(out).with_suffix(".calibration.json")
if cache.exists():
    scores = json.loads(cache.read_text())
else:
    scores, _ = cross_source_calibration_scores(load_classifier(clf_dir), calib, 5)
    cache.write_text(json.dumps(scores))
safe = [(r.source, s) for r, s in zip(calib, scores, strict=True) if not r.is_unsafe]
values, sources = np.array([s for _, s in safe]), [src for src, _ in safe]
sets = {
    f.stem.rsplit("-", 1)[0]: [json.loads(line)["score"] for line in f.read_text().splitlines()]
    for f in Path(scores_dir).glob("*.jsonl")
}
res = {"calibration_sources": {k: sources.count(k) for k in dict.fromkeys(sources)}, "rows": {}}
for over, target in (("items", 0.05), ("sources", 0.05), ("every-source", 0.10), ("items", 0.04), ("items", 0.03)):
    t = block_threshold(values, target, over, sources)
    blocked = {d: int(sum(x >= t for x in s)) for d, s in sets.items()}
    res["rows"][f"{over} {target}"] = {"block": round(t, 4), **blocked, "n": {d: len(s) for d, s in sets.items()}}
    print(over, target, res["rows"][f"{over} {target}"])
Path(out).write_text(json.dumps(res, indent=1))
