"""Exchange leave-source-out with sentence-pair features: the embedding classifier's ``[prompt, response]`` rows
plus their product and absolute difference, the same splits, head and thresholds as
`cguard classifier leave-source-out --inputs exchanges --max-per-split 6000` (whose run is ../frozen).

    python run.py CORPUS results.json
"""

import json
import sys
from pathlib import Path

import numpy as np

from constitutional_guard.evaluation.leave_source_out import (
    corpus_splits,
    embedding_features,
    embedding_fit,
    leave_source_out,
)

splits = corpus_splits(sys.argv[1], "exchanges", 6000)
features = {}
for name, x in embedding_features(splits, "minilm-l6").items():
    half = (x.shape[1] - 1) // 2
    p, r, has = x[:, :half], x[:, half : 2 * half], x[:, -1:]
    features[name] = np.concatenate([p, r, p * r, np.abs(p - r) * has, has], axis=1)
report = leave_source_out(splits, features, embedding_fit(splits, features)).report
Path(sys.argv[2]).write_text(json.dumps(report, indent=1), encoding="utf-8")
print("AUROC", report["leave_source_out"]["auroc"]["exchanges"])
