"""Leave-source-out of the input check on MiniLM and mpnet features side by side: the same folds, head and
thresholds as `cguard classifier leave-source-out --inputs prompts` (features from both encoders' caches).

    python run.py CORPUS results.json linear+mlp minilm-l6,mpnet-base
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from constitutional_guard.evaluation.leave_source_out import (
    corpus_splits,
    embedding_features,
    embedding_fit,
    leave_source_out,
)

data_dir, out, head = sys.argv[1], sys.argv[2], sys.argv[3]
splits = corpus_splits(data_dir, "prompts")
per_encoder = [embedding_features(splits, base) for base in sys.argv[4].split(",")]
features = {name: np.hstack([f[name] for f in per_encoder]) for name in splits}
print({n: f.shape for n, f in features.items()}, flush=True)
fit = embedding_fit(splits, features, head=head, constitution_share=0.0)

t = time.time()
rep = leave_source_out(
    splits, features, fit, "source", 50, 0.05, 0.01, lambda m: print(m, round(time.time() - t), flush=True)
).report
Path(out).write_text(json.dumps(rep, indent=1), encoding="utf-8")
print("AUROC", rep["leave_source_out"]["auroc"], "cross-source", rep["leave_source_out"]["outcomes_cross_source"])
