"""How well one human annotator predicts the others' label: the ceiling label noise puts on any classifier.

Records that carry several human scores (``meta["human_scores"]``, as the pyrit harm-scored exchanges
do) are scored leave-one-out: each annotator's score is compared with the label the remaining
annotators' mean gives at the corpus threshold. The AUROC of those pairs is what a single careful
human reaches against the labels; a classifier evaluated on such labels cannot be expected to do much
better. Response prefixes of one exchange share its scores and count once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from constitutional_guard.data.schema import Record
from constitutional_guard.data.sources.pyrit_data import HARM_THRESHOLD
from constitutional_guard.errors import InputError


@dataclass(frozen=True)
class Agreement:
    source: str
    exchanges: int
    """Distinct exchanges with two or more human scores."""
    pairs: int
    """(exchange, held-out annotator) pairs scored."""
    auroc: float | None
    """One annotator's score against the other annotators' label; None when that label has one class."""
    unanimous: float
    """Share of exchanges whose annotators all fall on the same side of the threshold."""


def human_scores(records: Sequence[Record]) -> dict[str, dict[str, list[float]]]:
    """``source -> exchange key -> scores`` for records with two or more human scores (prefixes folded)."""
    out: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for record in records:
        scores = record.meta.get("human_scores")
        if isinstance(scores, list) and len(scores) >= 2:
            if not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores):
                raise InputError.one(
                    f"record {record.id}", f"human scores must be numbers, got {scores!r}", field="meta.human_scores"
                )
            key = str(record.meta.get("prefix_of", record.id))
            out[record.source or "unknown"].setdefault(key, [float(s) for s in scores])
    return out


def annotator_agreement(records: Sequence[Record], threshold: float = HARM_THRESHOLD) -> list[Agreement]:
    """Leave-one-annotator-out agreement per source (sources without multi-annotator records are left out)."""
    results = []
    for source, by_exchange in sorted(human_scores(records).items()):
        held, rest = [], []
        unanimous = 0
        for scores in by_exchange.values():
            sides = {s >= threshold for s in scores}
            unanimous += len(sides) == 1
            for i, score in enumerate(scores):
                held.append(score)
                rest.append(np.mean(scores[:i] + scores[i + 1 :]) >= threshold)
        auroc = float(roc_auc_score(rest, held)) if len(set(rest)) == 2 else None
        results.append(Agreement(source, len(by_exchange), len(held), auroc, unanimous / len(by_exchange)))
    return results
