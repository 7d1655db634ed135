"""Constitutional classifier throughput: shared policy-prefix KV cache vs recomputing the prefix per item.

Both variants score the same items with the same model and batch size in one run, and the report
records how far their scores differ (they should agree to float precision).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from constitutional_guard.classifiers.constitutional import ConstitutionalClassifier
from constitutional_guard.classifiers.constitutional_prompt import record_item
from constitutional_guard.data.schema import Record


def _timed(
    classifier: ConstitutionalClassifier, items: list[tuple[str, str | None]], reuse_prefix: bool
) -> tuple[float, list[float]]:
    classifier.scorer.clear_cache()
    start = time.perf_counter()
    scores = classifier.probabilities(items, reuse_prefix=reuse_prefix)
    return time.perf_counter() - start, scores


def bench_prefix_cache(
    classifier: ConstitutionalClassifier,
    records: Sequence[Record],
    warmup: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Items per second with and without the cached prefix (the cached run includes computing the prefix once)."""
    items = [record_item(r) for r in records]
    if not items:
        raise ValueError("no records to benchmark")
    classifier.probabilities(items[:warmup])
    results = {}
    scores = {}
    for name, reuse in (("cached_prefix", True), ("recompute_prefix", False)):
        if progress is not None:
            progress(f"scoring {len(items)} items: {name}")
        seconds, scores[name] = _timed(classifier, items, reuse)
        results[name] = {"seconds": seconds, "items_per_s": len(items) / seconds}
    item_tokens = [len(classifier.prompt.item_ids(p, r)) for p, r in items]
    return {
        "benchmark": "constitutional prefix cache",
        "model": classifier.config.base_model,
        "weights": classifier.config.weights,
        "constitution": classifier.constitution.name,
        "items": len(items),
        "batch_size": classifier.config.batch_size,
        "prefix_tokens": len(classifier.prompt.prefix_ids),
        "item_tokens_mean": float(np.mean(item_tokens)),
        "results": results,
        "speedup": results["recompute_prefix"]["seconds"] / results["cached_prefix"]["seconds"],
        "max_score_difference": float(
            np.max(np.abs(np.array(scores["cached_prefix"]) - np.array(scores["recompute_prefix"])))
        ),
        "device": str(classifier.scorer.device),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
