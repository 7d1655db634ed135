import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from constitutional_guard.classifiers import Thresholds, Verdict, load_classifier
from constitutional_guard.config_io import load_config, save_config
from constitutional_guard.errors import InputError
from constitutional_guard.metrics import (
    auroc,
    binary_metrics,
    bootstrap_ci,
    threshold_at_fpr,
    threshold_sweep,
    tpr_at_fpr,
)


def test_binary_metrics_by_hand():
    y = [1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.0]
    m = binary_metrics(y, s, 0.5)
    assert (m.n, m.n_unsafe, m.n_safe) == (7, 3, 4)
    assert m.tpr == pytest.approx(2 / 3) and m.missed_unsafe_rate == pytest.approx(1 / 3)
    assert m.fpr == pytest.approx(1 / 4)
    assert m.precision == pytest.approx(2 / 3) and m.f1 == pytest.approx(2 / 3)
    assert m.auroc == pytest.approx(11 / 12)


def test_one_class_sets_give_none_not_nan():
    m = binary_metrics([0, 0], [0.1, 0.9], 0.5)
    assert m.tpr is None and m.auroc is None and m.f1 is None and m.fpr == 0.5
    assert auroc([1, 1], [0.2, 0.3]) is None


def test_threshold_at_fpr_respects_target():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(1000, int), np.ones(100, int)]
    s = np.r_[rng.random(1000) * 0.8, 0.5 + rng.random(100) * 0.5]
    for target in (0.0, 0.005, 0.01, 0.05):
        t = threshold_at_fpr(y, s, target)
        assert binary_metrics(y, s, t).fpr <= target
    assert binary_metrics(y, s, threshold_at_fpr(y, s, 0.0)).fpr == 0.0
    with pytest.raises(ValueError, match="without safe items"):
        threshold_at_fpr([1], [0.3], 0.01)


def test_sweep_applies_calibration_threshold_to_test():
    calib_y, calib_s = [0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.9, 0.95]
    test_y, test_s = [0, 0, 1, 1], [0.45, 0.1, 0.5, 0.3]
    rows = threshold_sweep(calib_y, calib_s, test_y, test_s, targets=(0.0,))
    assert rows[0].threshold == pytest.approx(0.4, abs=1e-9) and rows[0].threshold > 0.4
    assert rows[0].test.fpr == 0.5 and rows[0].test.tpr == 0.5
    assert tpr_at_fpr(test_y, test_s, 0.0) == 0.5


def test_bootstrap_ci_brackets_point_estimate():
    y = [1] * 50 + [0] * 50
    s = [0.9] * 40 + [0.1] * 10 + [0.1] * 45 + [0.9] * 5
    low, high = bootstrap_ci(y, s, 0.5, "tpr", n_boot=200)
    assert low <= 0.8 <= high


def test_thresholds_verdicts_and_validation():
    t = Thresholds(allow=0.2, block=0.8)
    assert t.verdict(0.1) is Verdict.ALLOW and t.verdict(0.5) is Verdict.UNCERTAIN and t.verdict(0.8) is Verdict.BLOCK
    with pytest.raises(ValueError, match="allow ≤ block"):
        Thresholds(allow=0.9, block=0.1)


def test_load_classifier_errors(tmp_path: Path):
    with pytest.raises(InputError, match="not a classifier directory"):
        load_classifier(tmp_path)
    (tmp_path / "classifier_config.json").write_text(json.dumps({"kind": "magic"}))
    with pytest.raises(InputError, match="unknown classifier kind 'magic'"):
        load_classifier(tmp_path)


@dataclasses.dataclass
class _Cfg:
    a: int = 1
    b: str = "x"


def test_config_round_trip_and_unknown_keys(tmp_path: Path):
    path = tmp_path / "cfg.json"
    save_config(_Cfg(a=3), path)
    assert "cguard_version" in json.loads(path.read_text())
    assert load_config(_Cfg, path) == _Cfg(a=3)
    path.write_text(json.dumps({"a": 2, "future": True}))
    with pytest.warns(UserWarning, match="unknown config keys"):
        assert load_config(_Cfg, path) == _Cfg(a=2)
