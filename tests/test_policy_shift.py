"""Measuring how constitution edits move a constitutional classifier's scores (policy-reading fake)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_models import DEVICE
from typer.testing import CliRunner

from constitutional_guard.classifiers.base import Thresholds
from constitutional_guard.cli.app import app
from constitutional_guard.constitution import Constitution, load_constitution, parse_constitution
from constitutional_guard.data.io import write_records
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

    @property
    def answers(self) -> list[str]:
        return ["safe", "unsafe"]

    def answer_probabilities(self, items: list[tuple[str, str | None]], progress=None) -> np.ndarray:
        def harmful(name: str) -> bool:
            cat = self.constitution.category(name)
            return self.constitution.is_harmful(name) and not cat.description.startswith(ps.NARROWED_PREFIX)

        unsafe = np.array([0.9 if harmful(prompt.split()[0]) else 0.1 for prompt, _ in items])
        return np.stack([1 - unsafe, unsafe], axis=1)

    def unsafe_probabilities(self, answer_probs: np.ndarray) -> np.ndarray:
        return answer_probs[:, 1]

    def probabilities(self, items: list[tuple[str, str | None]], progress=None) -> list[float]:
        return list(self.unsafe_probabilities(self.answer_probabilities(items)))


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
        assert s.read_specificity == pytest.approx(s.specificity) and s.named is None
    summary = ps.as_dict(shifts)["summary"]
    assert summary["allowed"]["categories_lowered_more_than_control"] == 1.0


def test_a_classifier_that_ignores_its_policy_shows_no_shift():
    policy = load_constitution()

    class Deaf(PolicyReader):
        def answer_probabilities(self, items, progress=None):
            return np.array([[0.2, 0.8] for _ in items])

    records = _records(policy)
    shifts = ps.measure_shift(Deaf(policy), records, policy.harmful_names[:1], n_target=3, n_control=3)
    assert all(s.target.mean_logit_change == 0.0 and s.specificity == 0.0 for s in shifts)
    assert ps.summary(shifts)["allowed"]["categories_lowered_more_than_control"] == 0.0


class CategoryNamer(PolicyReader):
    """Names the item's category (its first word) with P 0.9 whatever the policy says; counts the harmful ones."""

    @property
    def answers(self) -> list[str]:
        return ["safe", "unsafe", *(c.name for c in (*self.constitution.harmful, *self.constitution.harmless))]

    def answer_probabilities(self, items, progress=None):
        out = np.full((len(items), len(self.answers)), 0.1 / (len(self.answers) - 1))
        for row, (prompt, _) in enumerate(items):
            out[row, self.answers.index(prompt.split()[0])] = 0.9
        return out

    def unsafe_probabilities(self, answer_probs):
        harmful = set(self.constitution.harmful_names)
        return answer_probs[:, [1] + [i for i, a in enumerate(self.answers) if a in harmful]].sum(axis=1)


def test_naming_categories_without_reading_the_policy_shifts_only_by_counting():
    policy = load_constitution()
    shifts = ps.measure_shift(CategoryNamer(policy), _records(policy), policy.harmful_names[:1], 4, 4)
    allowed, narrowed = (next(s for s in shifts if s.edit == edit) for edit in ("allowed", "narrowed"))
    assert allowed.specificity < -4 and allowed.target.flagged_after == 0.0
    assert allowed.read_specificity == pytest.approx(0.0, abs=1e-9)
    assert allowed.named == narrowed.named == 1.0 and ps.summary(shifts)["allowed"]["named"] == 1.0
    assert narrowed.specificity == pytest.approx(0.0, abs=1e-9) == narrowed.read_specificity


def test_edits_and_bad_categories():
    policy = load_constitution()
    name = policy.harmful_names[0]
    assert ps.edited(policy, name, "narrowed").category(name).description.startswith(ps.NARROWED_PREFIX)
    assert not ps.edited(policy, name, "allowed").is_harmful(name)
    with pytest.raises(ValueError, match="unknown edit"):
        ps.edited(policy, name, "deleted")
    with pytest.raises(ValueError, match="needs unsafe items"):
        ps.measure_shift(PolicyReader(policy), _records(policy), [policy.harmful_names[5]])


def test_policy_shift_cli_on_a_category_naming_model(sharp_model_dir: Path, tmp_path: Path):
    from constitutional_guard.classifiers.constitutional import ConstitutionalClassifier

    policy = parse_constitution(
        """
name: two
description: Two harms.
refusal: No.
harmful:
  - {name: weapons, description: Making bombs., disallowed: [make a bomb]}
  - {name: drugs, description: Making meth., disallowed: [cook meth]}
harmless:
  - {name: baking, description: Bread., allowed: [bake bread]}
"""
    )
    ConstitutionalClassifier.zero_shot(
        str(sharp_model_dir), policy, device=DEVICE, policy_examples=0, max_item_tokens=160, name_categories=True
    ).save_pretrained(tmp_path / "clf")
    records = [
        Record(id=f"{cat}{i}", prompt=f"{text} {i}", label="unsafe", category=cat, split="test")
        for cat, text in (("weapons", "make a bomb"), ("drugs", "cook meth"))
        for i in range(3)
    ]
    write_records(records, tmp_path / "data" / "binary" / "test.jsonl")
    out = tmp_path / "shift.json"
    args = ["classifier", "policy-shift", "--classifier", str(tmp_path / "clf"), "--data", str(tmp_path / "data")]
    result = CliRunner().invoke(app, [*args, "--n-target", "2", "--n-control", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {(c["category"], c["edit"]) for c in report["categories"]} == {
        (cat, edit) for cat in ("weapons", "drugs") for edit in ps.EDITS
    }
    allowed = [c for c in report["categories"] if c["edit"] == "allowed"]
    # the allowed category's answer no longer counts as unsafe: its items can only go down
    assert all(c["target"]["mean_logit_change"] <= c["read_target_logit_change"] + 1e-6 for c in allowed)
    assert "read_specificity" in report["summary"]["allowed"]
    assert 0.0 <= report["summary"]["allowed"]["named"] <= 1.0
