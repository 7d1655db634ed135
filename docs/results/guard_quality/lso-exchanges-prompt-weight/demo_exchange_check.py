"""The demo's exchange classifier on the test split's exchanges: pair alone vs weighed, each calibrated at 1 % / 1 %."""
import json, sys
import numpy as np
from constitutional_guard.classifiers.base import load_classifier
from constitutional_guard.classifiers.calibration import choose_thresholds
from constitutional_guard.classifiers.embedding import weigh_prompt
from constitutional_guard.classifiers.embedding_training import feature_caches, save_caches, record_items
from constitutional_guard.data.corpus import load_split
from constitutional_guard.metrics import auroc
clf = load_classifier(sys.argv[1]); corpus = sys.argv[2]
caches = feature_caches(clf.config.base_model, clf.encoder, clf.states)
def scores(records):
    items = record_items(records); x = clf.features(items, caches)
    rows = clf.head.probabilities(x); alone = clf.head.probabilities(clf.prompt_alone(items, x))
    return {w: weigh_prompt(rows, alone, w, [1])[:, 1] for w in (0.0, 0.5)}
cal = [r for r in load_split(corpus, "calibration") if r.response is not None]
test = [r for r in load_split(corpus, "test") if r.response is not None]
sc, st = scores(cal), scores(test); save_caches(caches)
yc = np.array([r.is_unsafe for r in cal], int); yt = np.array([r.is_unsafe for r in test], int)
gen = np.array([r.source.startswith("generated/") for r in test])
out = {}
for w in (0.0, 0.5):
    t = choose_thresholds(yc, sc[w], 0.01, hold_rate=0.01); s = st[w]
    blocked, held = s >= t.block, (s >= t.allow) & (s < t.block)
    out[w] = {"allow": t.allow, "block": t.block, "auroc": auroc(yt, s), "auroc_own_answers": auroc(yt[gen], s[gen]),
              "harmful_blocked": blocked[yt == 1].mean(), "benign_blocked": blocked[yt == 0].mean(),
              "benign_held": held[yt == 0].mean(), "harmful_held": held[yt == 1].mean(),
              "own_answers_benign_blocked_or_held": (blocked | held)[(yt == 0) & gen].mean(),
              "own_answers_harmful_blocked": blocked[(yt == 1) & gen].mean(), "n_test": len(test), "n_cal": len(cal)}
    print(w, json.dumps({k: round(float(v), 4) for k, v in out[w].items()}), flush=True)
json.dump({str(k): {a: float(b) for a, b in v.items()} for k, v in out.items()}, open(sys.argv[3], "w"), indent=1)
