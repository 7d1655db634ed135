"""Leave-source-out of the input check on MiniLM and mpnet features side by side: the same folds, head and
thresholds as `cguard classifier leave-source-out --inputs prompts` (features from both encoders' caches).

    python run.py CORPUS results.json linear+mlp minilm-l6,mpnet-base
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from constitutional_guard.classifiers.embedding import SentenceEncoder, item_features
from constitutional_guard.classifiers.embedding_training import (
    FeatureCache,
    fit_head,
    record_items,
    sample_weights,
)
from constitutional_guard.classifiers.exchange_training import cap_records, select_inputs, with_prefixes
from constitutional_guard.data.augment import DEFAULT_CUTS
from constitutional_guard.data.corpus import load_split
from constitutional_guard.data.schema import SPLITS
from constitutional_guard.evaluation.leave_source_out import family_of, leave_source_out
from constitutional_guard.models.loading import resolve_model

data_dir, out, head = sys.argv[1], sys.argv[2], sys.argv[3]
bases = sys.argv[4].split(",")
inputs = "prompts"
splits = {name: load_split(data_dir, name) for name in SPLITS}
splits["train"] = with_prefixes(splits["train"], DEFAULT_CUTS)
splits = {name: cap_records(select_inputs(rows, inputs), None, 0) for name, rows in splits.items()}
feats = {name: [] for name in splits}
for base in bases:
    enc = SentenceEncoder.from_pretrained(resolve_model(base))
    cache = FeatureCache.for_encoder(base, enc)
    for name, records in splits.items():
        f = item_features(enc, record_items(records), cache)
        feats[name].append(f)
    cache.save()
features = {n: np.hstack(v) for n, v in feats.items()}
print({n: f.shape for n, f in features.items()}, flush=True)
train_family = np.array([family_of(r, "source") for r in splits["train"]])
val_family = np.array([family_of(r, "source") for r in splits["validation"]])
y_train = np.array([r.label_id for r in splits["train"]])
y_val = np.array([int(r.is_unsafe) for r in splits["validation"]])
share = 0.0


def fit(excluded):
    keep, keep_val = train_family != excluded, val_family != excluded
    kept = [r for r, k in zip(splits["train"], keep, strict=True) if k]
    fitted, _ = fit_head(
        features["train"][keep],
        y_train[keep],
        sample_weights(kept, constitution_share=share),
        features["validation"][keep_val],
        y_val[keep_val],
        [1],
        None,
        0,
        head,
    )
    return lambda x: fitted.probabilities(x)[:, 1] if len(x) else np.zeros(0)


t = time.time()
rep = leave_source_out(
    splits, features, fit, "source", 50, 0.05, 0.01, lambda m: print(m, round(time.time() - t), flush=True)
).report
Path(out).write_text(json.dumps(rep, indent=1), encoding="utf-8")
print("AUROC", rep["leave_source_out"]["auroc"], "cross-source", rep["leave_source_out"]["outcomes_cross_source"])
