import numpy as np
import pytest

from constitutional_guard.probes.calibration import (
    calibrate_threshold,
    choose_smoother,
    escalation_metrics,
    first_escalation,
)
from constitutional_guard.probes.smoothing import (
    default_candidates,
    make_smoother,
    max_risk,
    single_spike_escalates,
    smooth,
)


def test_smoothers_follow_their_definitions():
    scores = [0.0, 1.0, 1.0, 0.0, 1.0]
    np.testing.assert_allclose(smooth(scores, make_smoother("ema", {"alpha": 0.5})), [0, 0.5, 0.75, 0.375, 0.6875])
    np.testing.assert_allclose(smooth(scores, make_smoother("window", {"window": 2})), [0, 0.5, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(smooth(scores, make_smoother("cummax")), [0, 1, 1, 1, 1])
    np.testing.assert_allclose(smooth(scores, make_smoother("k_consecutive", {"k": 2})), [0, 0, 1, 0, 0])
    np.testing.assert_allclose(smooth(scores, make_smoother("none")), scores)


def test_reset_forgets_the_previous_stream():
    smoother = make_smoother("k_consecutive", {"k": 2})
    smoother.update(0.9)
    smoother.reset()
    assert smoother.update(0.9) == 0.0  # needs two fresh scores again
    assert smoother.update(0.9) == pytest.approx(0.9)


@pytest.mark.parametrize("kind,params", [("ema", {"alpha": 0}), ("window", {"window": 0}), ("k_consecutive", {"k": 0})])
def test_bad_parameters_fail(kind, params):
    with pytest.raises(ValueError):
        make_smoother(kind, params)
    with pytest.raises(ValueError, match="unknown smoother"):
        make_smoother("median")


def test_single_spike_check():
    assert single_spike_escalates(make_smoother("none"), 0.5)
    assert single_spike_escalates(make_smoother("cummax"), 0.5)
    assert not single_spike_escalates(make_smoother("k_consecutive", {"k": 2}), 0.01)
    assert single_spike_escalates(make_smoother("ema", {"alpha": 0.3}), 0.3)
    assert not single_spike_escalates(make_smoother("ema", {"alpha": 0.3}), 0.31)
    assert not single_spike_escalates(make_smoother("window", {"window": 4}), 0.3)


def make_streams(n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Safe streams are low with rare single spikes; unsafe streams rise and stay high after a start."""
    rng = np.random.default_rng(seed)
    labels, seqs = [], []
    for i in range(n):
        length = int(rng.integers(20, 40))
        seq = rng.uniform(0.0, 0.3, length)
        if i % 2:
            start = int(rng.integers(2, length // 2))
            seq[start:] = rng.uniform(0.6, 0.95, length - start)
        else:
            seq[int(rng.integers(0, length))] = 0.99  # a spike
        labels.append(i % 2)
        seqs.append(seq)
    return np.array(labels), seqs


def test_threshold_meets_the_target_rate_on_calibration():
    labels, seqs = make_streams(200, 1)
    threshold = calibrate_threshold(labels, seqs, "window", {"window": 4}, 0.1)
    metrics = escalation_metrics(labels, seqs, "window", {"window": 4}, threshold)
    assert metrics.escalation_rate_safe <= 0.1
    risks = max_risk(seqs, make_smoother("window", {"window": 4}))
    assert risks[labels == 0].max() >= threshold or metrics.escalation_rate_safe == 0


def test_choose_smoother_resists_spikes_and_generalises():
    val_y, val_seq = make_streams(200, 2)
    cal_y, cal_seq = make_streams(200, 3)
    test_y, test_seq = make_streams(200, 4)
    choice = choose_smoother(val_y, val_seq, cal_y, cal_seq, target_rate=0.05)
    assert choice.kind not in ("none", "cummax")  # raw reads escalate on the safe streams' spikes
    assert not single_spike_escalates(make_smoother(choice.kind, choice.params), choice.threshold)
    assert len(choice.validation) == len(default_candidates())
    test = escalation_metrics(test_y, test_seq, choice.kind, choice.params, choice.threshold)
    assert test.recall_unsafe >= 0.95 and test.escalation_rate_safe <= 0.1
    assert 0 < test.median_escalation_fraction < 1


def test_first_escalation():
    assert first_escalation(np.array([0.1, 0.6, 0.7]), 0.5) == 1
    assert first_escalation(np.array([0.1, 0.2]), 0.5) is None
