"""Measuring how constitution edits move a constitutional classifier's scores (policy-reading fake)."""

from __future__ import annotations

import pytest

from constitutional_guard.classifiers.base import Thresholds
from constitutional_guard.constitution import Constitution, load_constitution
from constitutional_guard.data.schema import Record
from constitutional_guard.evaluation import policy_shift as ps


class PolicyReader:
    """Scores 0.9 when the prompt names a category its constitution calls harmful (unless narrowed), else 0.1."""

    kind = "constitutional"
    thresholds = Thresholds(0.5, 0.5)

    def __init__(self, constitution: Constitution):
        self.constitution = constitution

    def with_constitution(self, constitution: Constitution) -> PolicyReader:
        return type(self)(constitution)

    def probabilities(self, items: list[tuple[str, str | None]], progress=None) -> list[float]:
        def harmful(name: str) -> bool:
            cat = self.constitution.category(name)
            return self.constitution.is_harmful(name) and not cat.description.startswith(ps.NARROWED_PREFIX)

        return [0.9 if harmful(prompt.split()[0]) else 0.1 for prompt, _ in items]


def _records(policy: Constitution) -> list[Record]:
    names = policy.harmful_names[:3]
    return [Record(id=f"{n}{i}", prompt=f"{n} item {i}", label="unsafe", category=n) for n in names for i in range(5)]


def test_a_policy_reader_lowers_only_the_edited_category():
    policy = load_constitution()
    records = _records(policy)
    categories = ps.eligible_categories(policy, records, min_items=5)
    assert categories == policy.harmful_names[:3]
    shifts = ps.measure_shift(PolicyReader(policy), records, categories, n_target=4, n_control=6)
    assert len(shifts) == 6 and {s.edit for s in shifts} == {"allowed", "narrowed"}
    for s in shifts:
        assert (s.target.n, s.control.n) == (4, 6)
        assert s.target.flagged_before == 1.0 and s.target.flagged_after == 0.0 and s.target.share_lowered == 1.0
        assert s.control.mean_logit_change == 0.0 and s.control.flagged_after == 1.0
        assert s.specificity == pytest.approx(s.target.mean_logit_change) and s.specificity < -4
    summary = ps.as_dict(shifts)["summary"]
    assert summary["allowed"]["categories_lowered_more_than_control"] == 1.0


def test_a_classifier_that_ignores_its_policy_shows_no_shift():
    policy = load_constitution()

    class Deaf(PolicyReader):
        def probabilities(self, items, progress=None):
            return [0.8 for _ in items]

    records = _records(policy)
    shifts = ps.measure_shift(Deaf(policy), records, policy.harmful_names[:1], n_target=3, n_control=3)
    assert all(s.target.mean_logit_change == 0.0 and s.specificity == 0.0 for s in shifts)
    assert ps.summary(shifts)["allowed"]["categories_lowered_more_than_control"] == 0.0


def test_edits_and_bad_categories():
    policy = load_constitution()
    name = policy.harmful_names[0]
    assert ps.edited(policy, name, "narrowed").category(name).description.startswith(ps.NARROWED_PREFIX)
    assert not ps.edited(policy, name, "allowed").is_harmful(name)
    with pytest.raises(ValueError, match="unknown edit"):
        ps.edited(policy, name, "deleted")
    with pytest.raises(ValueError, match="needs unsafe items"):
        ps.measure_shift(PolicyReader(policy), _records(policy), [policy.harmful_names[5]])
