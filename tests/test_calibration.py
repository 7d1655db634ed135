"""Calibration: thresholds chosen on calibration data, judged on test data, for any classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constitutional_guard.classifiers.base import ClassifierScore, Thresholds
from constitutional_guard.classifiers.baselines import TextBaseline
from constitutional_guard.classifiers.calibration import (
    MIN_SOURCE_ITEMS,
    CalibrationReport,
    block_threshold,
    calibrate,
    calibrate_and_save,
    choose_thresholds,
    evaluate_scores,
    hold_allow,
    item_thresholds,
    score_records,
)
from constitutional_guard.data.schema import Record


class KeywordClassifier:
    """A transparent stand-in classifier: the unsafe score is the share of flagged words."""

    kind = "keyword"

    def __init__(self, words: set[str]):
        self.words = words
        self.thresholds = Thresholds()
        self.prompt_thresholds: Thresholds | None = None
        self.saved: list[Path] = []

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore:
        text = f"{prompt} {response or ''}".lower().split()
        value = sum(w in self.words for w in text) / max(len(text), 1)
        t = self.thresholds if response is not None else self.prompt_thresholds or self.thresholds
        return ClassifierScore(value, t.verdict(value), t, "unsafe" if value else "safe")

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
    assert report.prompt_thresholds is not None  # both splits hold both classes of prompts and of exchanges
    assert (clf.thresholds, clf.prompt_thresholds) == (report.thresholds, report.prompt_thresholds)
    calib_scores = np.array(score_records(clf, calibration))
    safe = np.array([not r.is_unsafe for r in calibration])
    prompt = np.array([r.response is None for r in calibration])
    _, calib_block = item_thresholds(calibration, report.thresholds, report.prompt_thresholds)
    for side in (prompt, ~prompt):
        assert (calib_scores[safe & side] >= calib_block[safe & side]).mean() <= 0.05
    # Test metrics come from the test split, each item at its own (prompt or exchange) threshold.
    test_scores = np.array(score_records(clf, test))
    test_unsafe = np.array([r.is_unsafe for r in test])
    _, block = item_thresholds(test, report.thresholds, report.prompt_thresholds)
    assert report.test.n == len(test)
    assert report.test.tpr == pytest.approx((test_scores[test_unsafe] >= block[test_unsafe]).mean())
    assert report.test.fpr == pytest.approx((test_scores[~test_unsafe] >= block[~test_unsafe]).mean())
    assert report.test.auroc is not None and report.test.auroc > 0.8
    names = {s.name for s in report.subsets}
    assert {"prompts", "exchanges", "source:a", "source:b"} <= names
    assert sum(s.n for s in report.subsets if s.name in ("prompts", "exchanges")) == len(test)
    assert clf.saved == []  # persisting is the caller's choice


def test_subsets_by_augmentation_only_when_records_are_augmented() -> None:
    calib = [Record(id=f"c{i}", prompt="p", label=i % 2) for i in range(4)]
    originals = [Record(id=f"t{i}", prompt="p", label=i % 2) for i in range(4)]
    wrapped = [r.model_copy(update={"id": f"{r.id}~t", "meta": {"augmentation": "template"}}) for r in originals]
    prefix = Record(id="x~cut10", prompt="p", response="r", label=1, meta={"prefix_of": "x", "cut": 0.1})
    scores = [0.1, 0.9, 0.2, 0.8]
    plain = evaluate_scores(calib, scores, originals, scores, 0.0, 1.0)
    assert not [s for s in plain.subsets if s.name.startswith("augmentation:")]
    test_scores = [*scores, 0.9, 0.1, 0.8, 0.2, 0.5]
    report = evaluate_scores(calib, scores, [*originals, *wrapped, prefix], test_scores, 0.0, 1.0)
    by_name = {s.name: s for s in report.subsets}
    assert by_name["augmentation:original"].auroc == 1.0
    assert by_name["augmentation:template"].auroc == 0.0  # wrapped items ranked upside down
    assert (by_name["augmentation:template"].n, by_name["augmentation:prefix"].n) == (4, 1)


def test_evaluate_scores_uncertain_band() -> None:
    calib = [Record(id=f"c{i}", prompt="p", label=label) for i, label in enumerate([0, 0, 1, 1])]
    test = [Record(id=f"t{i}", prompt="p", label=i % 2) for i in range(4)]
    report = evaluate_scores(calib, [0.1, 0.7, 0.5, 0.9], test, [0.1, 0.6, 0.6, 0.95], 0.0, 1.0)
    assert report.thresholds == Thresholds(allow=0.5, block=float(np.nextafter(0.7, 1)))
    assert report.prompt_thresholds is None  # no exchanges to calibrate apart
    assert report.test_uncertain_rate == pytest.approx(0.5)
    assert report.test_allowed_unsafe_rate == 0.0
    assert (report.test.tpr, report.test.fpr) == (0.5, 0.0)


def _item(i: int, label: int, exchange: bool) -> Record:
    return Record(id=f"i{i}", prompt="p", response="r" if exchange else None, label=label)


# Prompts score higher than exchanges: safe prompts reach 0.85, unsafe exchanges only 0.2-0.4.
CALIB = [
    (_item(0, 0, False), 0.5), (_item(1, 0, False), 0.85), (_item(2, 1, False), 0.7), (_item(3, 1, False), 0.9),
    (_item(4, 0, True), 0.05), (_item(5, 0, True), 0.35), (_item(6, 1, True), 0.2), (_item(7, 1, True), 0.4),
]  # fmt: skip
TEST = [(_item(8, 0, False), 0.5), (_item(9, 1, False), 0.9), (_item(10, 0, True), 0.1), (_item(11, 1, True), 0.38)]


def _evaluate(separate_prompts: bool = True, calib: list = CALIB) -> CalibrationReport:
    (records, scores), (test, test_scores) = zip(*calib, strict=True), zip(*TEST, strict=True)
    return evaluate_scores(records, scores, test, test_scores, 0.0, 1.0, separate_prompts)


def test_prompts_and_exchanges_get_their_own_thresholds() -> None:
    report = _evaluate()
    assert report.thresholds == Thresholds(0.2, float(np.nextafter(0.35, 1)))
    assert report.prompt_thresholds == Thresholds(0.7, float(np.nextafter(0.85, 1)))
    # Each test item at its own pair: the safe prompt (0.5) is allowed, the unsafe exchange (0.38) blocked.
    assert (report.test.tpr, report.test.fpr, report.test.threshold) == (1.0, 0.0, None)
    assert (report.test_uncertain_rate, report.test_allowed_unsafe_rate) == (0.0, 0.0)
    assert (report.calibration.tpr, report.calibration.fpr) == (0.5, 0.0)
    subsets = {s.name: s for s in report.subsets}
    assert (subsets["prompts"].tpr, subsets["exchanges"].tpr, subsets["prompts"].uncertain_rate) == (1.0, 1.0, 0.0)
    # One shared pair, fixed by the high-scoring safe prompts, lets the unsafe exchange through to a hold.
    shared = _evaluate(separate_prompts=False)
    assert shared.prompt_thresholds is None
    assert shared.thresholds == Thresholds(0.2, float(np.nextafter(0.85, 1)))
    assert (shared.test.tpr, shared.test_uncertain_rate) == (0.5, 0.5)


def test_prompts_can_have_their_own_block_target() -> None:
    (records, scores), (test, test_scores) = zip(*CALIB, strict=True), zip(*TEST, strict=True)
    report = evaluate_scores(records, scores, test, test_scores, 0.0, 1.0, True, None, prompt_block_fpr=0.5)
    assert report.thresholds == _evaluate().thresholds  # exchanges keep the 0 % target
    assert report.prompt_thresholds.block == float(np.nextafter(0.5, 1))  # one of the two safe prompts may block
    assert (report.block_fpr_target, report.prompt_block_fpr_target) == (0.0, 0.5)
    assert _evaluate().prompt_block_fpr_target is None


def test_shared_thresholds_when_prompts_lack_a_class() -> None:
    only_safe_prompts = [(r, s) for r, s in CALIB if r.response is not None or not r.is_unsafe]
    report = _evaluate(calib=only_safe_prompts)
    assert report.prompt_thresholds is None
    assert report.thresholds == choose_thresholds([int(r.is_unsafe) for r, _ in only_safe_prompts],
                                                  [s for _, s in only_safe_prompts], 0.0, 1.0)  # fmt: skip
    assert {s.name: s.uncertain_rate for s in report.subsets}["prompts"] == 0.5


def _shifted(texts: list[str]) -> list[float]:
    """Share of "bomb" words, plus 0.5 for a prompt alone: prompts score on a higher scale than exchanges."""
    return [min(1.0, t.split().count("bomb") / len(t.split()) + (0.0 if "\n\n" in t else 0.5)) for t in texts]


def test_calibrated_baseline_gives_prompts_their_own_verdicts() -> None:
    baseline = TextBaseline("shifted", _shifted)
    assert baseline.prompt_thresholds == baseline.thresholds == Thresholds()
    report = calibrate(baseline, _records(1), _records(2), block_fpr=0.05, allow_recall=0.9)
    assert report.prompt_thresholds is not None and report.prompt_thresholds.block > report.thresholds.block + 0.3
    assert (baseline.thresholds, baseline.prompt_thresholds) == (report.thresholds, report.prompt_thresholds)
    prompt, exchange = baseline.score_batch([("bread bread", None), ("bread", "bread")])
    assert (prompt.thresholds, exchange.thresholds) == (report.prompt_thresholds, report.thresholds)
    assert prompt.verdict == "allow"  # 0.5 blocks under the exchange pair
    assert report.thresholds.verdict(prompt.score) == "block"
    calibrate(baseline, _records(1), _records(2), separate_prompts=False)
    assert baseline.prompt_thresholds == baseline.thresholds


def test_calibrate_and_save_records_both_pairs() -> None:
    clf = KeywordClassifier({"bomb"})
    report = calibrate_and_save(clf, "somewhere", _records(1), _records(2), separate_prompts=False)
    assert report.prompt_thresholds is None and clf.prompt_thresholds is None
    assert clf.saved == [Path("somewhere")]
    calibrate_and_save(clf, "somewhere", _records(1), _records(2))
    assert clf.prompt_thresholds is not None and clf.score("bomb").thresholds == clf.prompt_thresholds


def test_hold_target_bounds_the_safe_items_held() -> None:
    rng = np.random.default_rng(0)
    safe, unsafe = rng.beta(2, 8, 1000), rng.beta(8, 2, 300)
    labels = [0] * len(safe) + [1] * len(unsafe)
    scores = np.concatenate([safe, unsafe])
    for hold in (0.0, 0.01, 0.1):
        t = choose_thresholds(labels, scores, block_fpr=0.05, hold_rate=hold)
        held = ((safe >= t.allow) & (safe < t.block)).mean()
        assert held <= hold + 1e-9
        assert held >= hold - 0.002  # the lowest allow that meets the target, not a needlessly narrow band
    assert choose_thresholds(labels, scores, 0.05, hold_rate=0.0).allow == pytest.approx(
        choose_thresholds(labels, scores, 0.05, hold_rate=0.0).block
    )
    with pytest.raises(ValueError, match="hold_rate"):
        choose_thresholds(labels, scores, 0.05, hold_rate=1.0)


def test_hold_allow_when_everything_fits_in_the_budget() -> None:
    assert hold_allow(np.array([0.1, 0.6, 0.7]), block=0.5, hold_rate=0.5) == 0.0  # the one unblocked item may be held
    assert hold_allow(np.array([0.1, 0.2, 0.9]), block=0.5, hold_rate=0.0) > 0.2


def _rates(scores: np.ndarray, sources: list[str], threshold: float) -> dict[str, float]:
    names = np.array(sources)
    return {name: float((scores[names == name] >= threshold).mean()) for name in dict.fromkeys(sources)}


def _skewed_sources() -> tuple[np.ndarray, list[str]]:
    """A large source of easy safe items beside two small ones that score higher (new kinds of traffic)."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.beta(1, 30, 2000), rng.beta(3, 4, 60), rng.beta(2, 5, 80)])
    return scores, ["trivia"] * 2000 + ["letters"] * 60 + ["health"] * 80


def test_false_blocks_counted_over_sources_weigh_each_source_alike() -> None:
    scores, sources = _skewed_sources()
    items = block_threshold(scores, 0.05)
    mean = block_threshold(scores, 0.05, "sources", sources)
    each = block_threshold(scores, 0.05, "every-source", sources)
    assert float((scores >= items).mean()) <= 0.05
    assert _rates(scores, sources, items)["letters"] > 0.3  # the pooled target hides a small source
    assert np.mean(list(_rates(scores, sources, mean).values())) <= 0.05
    assert max(_rates(scores, sources, each).values()) <= 0.05
    assert items < mean < each
    assert np.mean(list(_rates(scores, sources, np.nextafter(mean, -1)).values())) > 0.05  # the smallest that meets it


def test_small_sources_count_as_one_and_every_source_needs_a_large_one() -> None:
    scores, sources = _skewed_sources()
    few = ["tiny-a"] * 10 + ["tiny-b"] * 10  # under MIN_SOURCE_ITEMS: one source together
    assert MIN_SOURCE_ITEMS > 10
    more, more_sources = np.r_[scores, np.full(20, 0.99)], [*sources, *few]
    # too small for a rate of its own, the merged source does not move the every-source threshold
    assert block_threshold(more, 0.05, "every-source", more_sources) == block_threshold(
        scores, 0.05, "every-source", sources
    )
    alone = np.full(20, 0.5)
    assert block_threshold(alone, 0.05, "every-source", few) == block_threshold(alone, 0.05)  # nothing large: pooled
    # in the mean the two small sources weigh as one source: four rates, not five

    def four(t: float) -> float:
        rates = _rates(more, more_sources, t)
        return (rates["trivia"] + rates["letters"] + rates["health"] + float((more[-20:] >= t).mean())) / 4

    mean = block_threshold(more, 0.25, "sources", more_sources)
    assert four(mean) <= 0.25 < four(float(more[more < mean].max()))


def test_bad_false_block_counting() -> None:
    with pytest.raises(ValueError, match="block_fpr_over"):
        block_threshold([0.1, 0.2], 0.05, "families", ["a", "b"])
    with pytest.raises(ValueError, match="source of every safe item"):
        block_threshold([0.1, 0.2], 0.05, "sources")
    with pytest.raises(ValueError, match="without safe items"):
        block_threshold([], 0.05)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 80), min_size=1, max_size=6),
    target=st.sampled_from([0.0, 0.01, 0.05, 0.2, 0.5]),
    over=st.sampled_from(["items", "sources", "every-source"]),
    seed=st.integers(0, 10_000),
)
def test_block_threshold_is_the_smallest_that_meets_its_target(
    sizes: list[int], target: float, over: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(sum(sizes)), 2)  # ties included
    sources = [f"s{i}" for i, n in enumerate(sizes) for _ in range(n)]
    names = np.array(sources)
    groups = [names == f"s{i}" for i, n in enumerate(sizes) if n >= MIN_SOURCE_ITEMS]
    small = ~np.any(groups, axis=0) if groups else np.ones(len(names), dtype=bool)
    if small.any():
        groups.append(small)  # the small sources, together

    def rate(t: float) -> float:
        rates = [float((scores[g] >= t).mean()) for g in groups]
        if over == "sources":
            return float(np.mean(rates))
        large = [r for r, g in zip(rates, groups, strict=True) if g.sum() >= MIN_SOURCE_ITEMS]
        if over == "items" or not large:
            return float((scores >= t).mean())
        return max(large)

    t = block_threshold(scores, target, over, sources)
    assert rate(t) <= target + 1e-9
    below = [c for c in np.r_[scores.min(), np.nextafter(scores, np.inf)] if c < t]  # the candidates under it
    assert all(rate(float(c)) > target for c in below)


def test_calibration_counts_false_blocks_over_the_records_sources() -> None:
    records = _records(3, 400)
    scores = [0.9 if (r.source == "b" and i % 5 == 0) else (0.8 if r.is_unsafe else 0.1) for i, r in enumerate(records)]
    pooled = evaluate_scores(records, scores, records, scores, block_fpr=0.1, separate_prompts=False)
    by_source = evaluate_scores(
        records, scores, records, scores, block_fpr=0.1, separate_prompts=False, block_fpr_over="every-source"
    )
    assert pooled.block_fpr_over == "items" and by_source.block_fpr_over == "every-source"
    assert by_source.thresholds.block > pooled.thresholds.block
    assert by_source.as_dict()["block_fpr_over"] == "every-source"
