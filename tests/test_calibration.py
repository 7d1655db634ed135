"""Calibration: thresholds chosen on calibration data, judged on test data, for any classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from constitutional_guard.classifiers.base import ClassifierScore, Thresholds
from constitutional_guard.classifiers.calibration import (
    calibrate,
    choose_thresholds,
    evaluate_scores,
    score_records,
)
from constitutional_guard.data.schema import Record


class KeywordClassifier:
    """A transparent stand-in classifier: the unsafe score is the share of flagged words."""

    kind = "keyword"

    def __init__(self, words: set[str]):
        self.words = words
        self.thresholds = Thresholds()
        self.saved: list[Path] = []

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore:
        text = f"{prompt} {response or ''}".lower().split()
        value = sum(w in self.words for w in text) / max(len(text), 1)
        return ClassifierScore(value, self.thresholds.verdict(value), self.thresholds, "unsafe" if value else "safe")

    def score_batch(self, items: list[tuple[str, str | None]]) -> list[ClassifierScore]:
        return [self.score(p, r) for p, r in items]

    def save_pretrained(self, path: str | Path) -> None:
        self.save_config(path)

    def save_config(self, path: str | Path) -> None:
        self.saved.append(Path(path))


def _records(seed: int, n: int = 200) -> list[Record]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        unsafe = i % 2 == 0
        bad = int(rng.integers(1, 5)) if unsafe else int(rng.integers(0, 2))
        words = ["bomb"] * bad + ["bread"] * int(rng.integers(3, 8))
        response = " ".join(words[len(words) // 2 :]) if i % 3 == 0 else None
        prompt = " ".join(words[: len(words) // 2] if response else words)
        out.append(
            Record(id=f"r{i}", prompt=prompt, response=response, label=int(unsafe), source="a" if i % 4 < 2 else "b")
        )
    return out


def test_block_threshold_meets_target_fpr_on_calibration() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 500 + [1] * 500)
    scores = np.concatenate([rng.beta(2, 5, 500), rng.beta(5, 2, 500)])
    for target in (0.01, 0.05, 0.2):
        t = choose_thresholds(labels, scores, block_fpr=target, allow_recall=0.95)
        fpr = float((scores[labels == 0] >= t.block).mean())
        recall_not_allowed = float((scores[labels == 1] >= t.allow).mean())
        assert fpr <= target
        assert recall_not_allowed >= 0.95
        assert 0.0 <= t.allow <= t.block <= 1.0


def test_allow_never_exceeds_block() -> None:
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.2, 0.9, 0.95, 0.97, 0.99]
    t = choose_thresholds(labels, scores, block_fpr=0.0, allow_recall=0.5)
    assert t.block > 0.9 and t.allow <= t.block


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        ([0, 0], {}, "both safe and unsafe"),
        ([0, 1], {"block_fpr": 1.0}, "block_fpr"),
        ([0, 1], {"allow_recall": 0.0}, "allow_recall"),
    ],
)
def test_bad_calibration_input(labels: list[int], kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose_thresholds(labels, [0.2, 0.8][: len(labels)], **kwargs)


def test_calibrate_sets_thresholds_and_reports_test_metrics() -> None:
    clf = KeywordClassifier({"bomb"})
    calibration, test = _records(1), _records(2)
    report = calibrate(clf, calibration, test, block_fpr=0.05, allow_recall=0.99)
    assert clf.thresholds == report.thresholds
    calib_scores = np.array(score_records(clf, calibration))
    safe = np.array([not r.is_unsafe for r in calibration])
    assert (calib_scores[safe] >= report.thresholds.block).mean() <= 0.05
    # Test metrics come from the test split at the calibrated threshold.
    test_scores = np.array(score_records(clf, test))
    test_unsafe = np.array([r.is_unsafe for r in test])
    assert report.test.n == len(test)
    assert report.test.tpr == pytest.approx((test_scores[test_unsafe] >= report.thresholds.block).mean())
    assert report.test.fpr == pytest.approx((test_scores[~test_unsafe] >= report.thresholds.block).mean())
    assert report.test.auroc is not None and report.test.auroc > 0.8
    names = {s.name for s in report.subsets}
    assert {"prompts", "exchanges", "source:a", "source:b"} <= names
    assert sum(s.n for s in report.subsets if s.name in ("prompts", "exchanges")) == len(test)
    assert clf.saved == []  # persisting is the caller's choice


def test_evaluate_scores_uncertain_band() -> None:
    test = [Record(id=f"t{i}", prompt="p", label=i % 2) for i in range(4)]
    report = evaluate_scores([0, 0, 1, 1], [0.1, 0.7, 0.5, 0.9], test, [0.1, 0.6, 0.6, 0.95], 0.0, 1.0)
    assert report.thresholds == Thresholds(allow=0.5, block=float(np.nextafter(0.7, 1)))
    assert report.test_uncertain_rate == pytest.approx(0.5)
    assert report.test_allowed_unsafe_rate == 0.0
    assert (report.test.tpr, report.test.fpr) == (0.5, 0.0)
