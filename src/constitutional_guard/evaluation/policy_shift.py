"""How far a constitution edit moves a constitutional classifier's scores, category by category.

For each harmful category the same held-out items are scored under the constitution as given and under
two edits, with the same weights (only the policy prefix changes):

- ``allowed``: the category moved to the harmless side, its disallowed examples now allowed;
- ``narrowed``: its description restricted to the most extreme cases.

*Target* items are unsafe items of the edited category, *control* items unsafe items of other harmful
categories. A classifier that reads its policy lowers the target scores (negative mean change in
log-odds, fewer items flagged at the block threshold) and leaves the control scores alone.

A classifier that names categories also stops counting an allowed category's answer as unsafe. The
``read`` changes isolate what the edited policy text does to its answers: the edited run's answers
counted as under the original constitution.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from constitutional_guard.classifiers.constitutional import ConstitutionalClassifier
from constitutional_guard.classifiers.constitutional_prompt import record_item
from constitutional_guard.constitution import Constitution
from constitutional_guard.data.schema import Record

NARROWED_PREFIX = "Only the most extreme cases: "
EDITS = ("allowed", "narrowed")


def edited(constitution: Constitution, category: str, edit: str) -> Constitution:
    """The constitution with one harmful category ``allowed`` or ``narrowed``."""
    if edit == "allowed":
        return constitution.allowing(category)
    if edit == "narrowed":
        cat = constitution.category(category)
        narrowed = cat.model_copy(update={"description": NARROWED_PREFIX + cat.description})
        return constitution.model_copy(
            update={"harmful": [narrowed if c.name == category else c for c in constitution.harmful]}
        )
    raise ValueError(f"unknown edit {edit!r}; known: {', '.join(EDITS)}")


@dataclass(frozen=True)
class GroupShift:
    """Score change of one item group (target or control) under one edit."""

    n: int
    mean_score_before: float
    mean_score_after: float
    mean_logit_change: float
    share_lowered: float
    flagged_before: float
    """Share of items at or above the block threshold under the original constitution."""
    flagged_after: float


@dataclass(frozen=True)
class CategoryShift:
    category: str
    edit: str
    target: GroupShift
    control: GroupShift
    read_target_logit_change: float
    """Mean target log-odds change with the edited run's answers counted as under the original policy."""
    read_control_logit_change: float
    named: float | None
    """Share of target items whose likeliest harmful category is this one (None: categories are not named)."""

    @property
    def specificity(self) -> float:
        """Target minus control mean log-odds change: negative when the edit acts on its own category."""
        return self.target.mean_logit_change - self.control.mean_logit_change

    @property
    def read_specificity(self) -> float:
        """The same from reading the edited policy alone (equal to ``specificity`` unless categories are named)."""
        return self.read_target_logit_change - self.read_control_logit_change


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _group(before: np.ndarray, after: np.ndarray, threshold: float) -> GroupShift:
    return GroupShift(
        n=len(before),
        mean_score_before=float(before.mean()),
        mean_score_after=float(after.mean()),
        mean_logit_change=float((_logit(after) - _logit(before)).mean()),
        share_lowered=float((after < before).mean()),
        flagged_before=float((before >= threshold).mean()),
        flagged_after=float((after >= threshold).mean()),
    )


def eligible_categories(constitution: Constitution, records: Sequence[Record], min_items: int) -> list[str]:
    """Harmful categories with at least ``min_items`` unsafe records (and other harmful categories to compare)."""
    if len(constitution.harmful) < 2:
        return []
    counts = {name: sum(r.category == name and r.is_unsafe for r in records) for name in constitution.harmful_names}
    return [name for name, n in counts.items() if n >= min_items]


def _named_share(answers: Sequence[str], harmful: Sequence[str], probs: np.ndarray, category: str) -> float | None:
    """Share of rows whose likeliest harmful-category answer is ``category``; None without category answers."""
    columns = [i for i, word in enumerate(answers) if word in harmful]
    if not columns:
        return None
    top = np.array(columns)[probs[:, columns].argmax(axis=1)]
    return float((top == answers.index(category)).mean())


def measure_shift(
    classifier: ConstitutionalClassifier,
    records: Sequence[Record],
    categories: Sequence[str],
    n_target: int = 24,
    n_control: int = 24,
    edits: Sequence[str] = EDITS,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[CategoryShift]:
    """Score target and control items of each category under the original and each edited constitution.

    ``progress`` is called with the number of items scored after each batch.
    """
    policy = classifier.constitution
    threshold = classifier.thresholds.block
    results = []
    for category in categories:
        rng = random.Random(f"{seed}:{category}")
        target = [r for r in records if r.category == category and r.is_unsafe]
        control = [r for r in records if r.category != category and policy.is_harmful(r.category or "") and r.is_unsafe]
        if not target or not control:
            raise ValueError(f"category {category!r}: needs unsafe items of it and of another harmful category")
        target = rng.sample(target, min(n_target, len(target)))
        control = rng.sample(control, min(n_control, len(control)))
        items = [record_item(r) for r in target + control]
        split = len(target)
        before_answers = classifier.answer_probabilities(items, progress=progress)
        before = classifier.unsafe_probabilities(before_answers)
        named = _named_share(classifier.answers, policy.harmful_names, before_answers[:split], category)
        for edit in edits:
            shifted = classifier.with_constitution(edited(policy, category, edit))
            answers = shifted.answer_probabilities(items, progress=progress)
            after = shifted.unsafe_probabilities(answers)
            as_before = answers[:, [shifted.answers.index(word) for word in classifier.answers]]
            read = _logit(classifier.unsafe_probabilities(as_before)) - _logit(before)
            results.append(
                CategoryShift(
                    category,
                    edit,
                    _group(before[:split], after[:split], threshold),
                    _group(before[split:], after[split:], threshold),
                    float(read[:split].mean()),
                    float(read[split:].mean()),
                    named,
                )
            )
    return results


def summary(shifts: Sequence[CategoryShift]) -> dict[str, dict[str, float]]:
    """Per edit: mean target and control log-odds change, specificity and flagged shares, over categories."""
    out = {}
    for edit in sorted({s.edit for s in shifts}):
        rows = [s for s in shifts if s.edit == edit]
        out[edit] = {
            "categories": len(rows),
            "target_mean_logit_change": float(np.mean([s.target.mean_logit_change for s in rows])),
            "control_mean_logit_change": float(np.mean([s.control.mean_logit_change for s in rows])),
            "specificity": float(np.mean([s.specificity for s in rows])),
            "read_specificity": float(np.mean([s.read_specificity for s in rows])),
            "named": None if any(s.named is None for s in rows) else float(np.mean([s.named for s in rows])),
            "categories_lowered_more_than_control": float(np.mean([s.specificity < 0 for s in rows])),
            "target_flagged_before": float(np.mean([s.target.flagged_before for s in rows])),
            "target_flagged_after": float(np.mean([s.target.flagged_after for s in rows])),
        }
    return out


def as_dict(shifts: Sequence[CategoryShift]) -> dict:
    return {
        "summary": summary(shifts),
        "categories": [
            {**asdict(s), "specificity": s.specificity, "read_specificity": s.read_specificity} for s in shifts
        ],
    }
