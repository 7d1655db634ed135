"""Held-out end-to-end prompts (sources kept out of the e2e corpus): mpnet alone, beside a causal LM's states
(SmolLM2 at layer 18 unless MODEL and LAYER are given), and the states alone; the default head trained on the e2e
corpus, the block threshold at 5 % false blocks on its calibration split's benign prompts (each classifier's own
scores). Run from the repository root:

    python docs/results/guard_quality/e2e-prompts-smollm2-states/run.py E2E_CORPUS HARMFUL BENIGN results.json [MODEL LAYER]
"""

import json
import sys

sys.path.insert(0, "benchmarks")
corpus, harmful, benign, out_path = sys.argv[1:5]
model, layer = (sys.argv[5], int(sys.argv[6])) if len(sys.argv) > 6 else ("smollm2-135m-instruct", 18)
import numpy as np
from lm_state_lso import cached_states, state_features
from sklearn.metrics import roc_auc_score

from constitutional_guard.activations import CaptureSettings
from constitutional_guard.data.schema import Record
from constitutional_guard.evaluation.leave_source_out import corpus_splits, embedding_features, embedding_fit
from constitutional_guard.models.loading import load_causal_lm
from constitutional_guard.paths import cache_dir

splits = corpus_splits(corpus, "prompts")
evals = [Record.model_validate_json(l) for f in (harmful, benign) for l in open(f)]
mp = embedding_features({**splits, "eval": evals}, "mpnet-base")
mp_eval = mp.pop("eval")
lm = load_causal_lm(model, device="cpu", dtype="bfloat16")
settings = CaptureSettings(layers=(layer,), max_length=256, batch_size=64, max_batch_tokens=4096)
st = cached_states(lm, splits, settings, cache_dir() / "lm-states")
st_eval = state_features(lm, evals, settings).astype(np.float32)
y = np.array([int(r.is_unsafe) for r in evals])
adj = np.array([bool((r.meta or {}).get("safety_adjacent")) for r in evals])
cal_safe = np.array([not r.is_unsafe for r in splits["calibration"]])
out = {}
for name, feats, ev in [
    ("mpnet", mp, mp_eval),
    ("mpnet+states", {k: np.hstack([mp[k], st[k].astype(np.float32)]) for k in mp}, np.hstack([mp_eval, st_eval])),
    ("states", {k: st[k].astype(np.float32) for k in st}, st_eval),
]:
    score = embedding_fit(splits, feats)(None)
    thr = float(np.quantile(score(feats["calibration"])[cal_safe], 0.95))
    s = score(ev)
    out[name] = {
        "auroc": roc_auc_score(y, s),
        "threshold": thr,
        "harmful_blocked": float((s[y == 1] >= thr).mean()),
        "benign_blocked": float((s[y == 0] >= thr).mean()),
        "safety_adjacent_blocked": float((s[(y == 0) & adj] >= thr).mean()) if ((y == 0) & adj).any() else None,
        "n": [int(y.sum()), int((1 - y).sum()), int(((y == 0) & adj).sum())],
    }
    print(name, out[name], flush=True)
json.dump(out, open(out_path, "w"), indent=1)
