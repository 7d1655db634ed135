"""Block thresholds of the end-to-end input check from its calibration prompts' cross-source scores: the pooled
5 % false-block target (what `cguard classifier calibrate` does) against per-source targets, applied to the scores
of a `cguard eval` run. python per_source.py CLASSIFIER CORPUS EVAL_SCORES_DIR OUT_JSON"""
import json, sys
from collections import defaultdict
from pathlib import Path
import numpy as np
from constitutional_guard.classifiers.registry import load_classifier
from constitutional_guard.classifiers.embedding_training import cross_source_calibration_scores
from constitutional_guard.data.corpus import load_split

clf_dir, corpus, scores_dir, out = sys.argv[1:]
clf = load_classifier(clf_dir)
calib = [r for r in load_split(Path(corpus), "calibration") if r.response is None]
scores, _ = cross_source_calibration_scores(clf, calib, 5)
safe = defaultdict(list)
for r, s in zip(calib, scores):
    if not r.is_unsafe:
        safe[r.source].append(s)
pooled = np.concatenate([np.array(v) for v in safe.values()])


def fpr_at(t: float, values) -> float:
    return float((np.asarray(values) >= t).mean())


grid = np.unique(np.r_[pooled, 1.0])
def smallest(ok) -> float:
    return float(min(t for t in grid if ok(t)))

thresholds = {
    "pooled 5 %": smallest(lambda t: fpr_at(t, pooled) <= 0.05),
    "mean over sources 5 %": smallest(lambda t: np.mean([fpr_at(t, v) for v in safe.values()]) <= 0.05),
    "worst source 10 %": smallest(lambda t: max(fpr_at(t, v) for v in safe.values() if len(v) >= 30) <= 0.10),
}
sets = {f.stem.rsplit("-", 1)[0]: [json.loads(l)["score"] for l in open(f)] for f in Path(scores_dir).glob("*.jsonl")}
res = {"calibration_sources": {k: len(v) for k, v in safe.items()}, "rows": {}}
for name, t in thresholds.items():
    res["rows"][name] = {"block": round(t, 4), **{d: int(sum(x >= t for x in s)) for d, s in sets.items()},
                         "n": {d: len(s) for d, s in sets.items()}}
    print(name, res["rows"][name])
json.dump(res, open(out, "w"), indent=1)
