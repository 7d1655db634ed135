"""The cascade's decisions: release lag, escalation, allow / uncertain / block, fail-closed, and no leaks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny_models import DEVICE

from constitutional_guard.classifiers.base import ClassifierScore, Thresholds, Verdict
from constitutional_guard.guard.events import (
    ClassifierVerdict,
    Escalation,
    Finished,
    GenerationConfig,
    GenerationStatus,
    TextReleased,
    TokenRisk,
)
from constitutional_guard.guard.guard import Guard
from constitutional_guard.guard.policy import (
    PolicySettings,
    RiskState,
    RiskThresholds,
    StreamState,
    apply_verdict,
    observe,
    release_bound,
    risk_state,
)
from constitutional_guard.guard.protocols import TokenProbe
from constitutional_guard.models.loading import load_causal_lm
from constitutional_guard.probes.smoothing import make_smoother

INTRO = "Here is a short and friendly answer about the topic you asked about. "
UNSAFE = "SECRET recipe: combine the forbidden parts, then heat them slowly."


@dataclass
class ProbeSettings:
    model_id: str = "tiny"
    hidden_size: int = 32
    escalation_threshold: float = 0.5


class ScriptedProbe:
    """Scores the i-th token of a stream with ``script(i)``; optionally raises at one index."""

    def __init__(self, script: Callable[[int], float], smoother: str = "none", fail_at: int | None = None):
        self.layers = [1]
        self.config = ProbeSettings()
        self.script = script
        self.smoother = smoother
        self.fail_at = fail_at
        self.calls = 0

    def score_hidden_states(self, hidden_states):
        index = self.calls
        self.calls += 1
        if index == self.fail_at:
            raise RuntimeError("probe exploded")
        assert hidden_states[1].shape[:2] == (1, 1), "one new token per forward"
        return torch.tensor([[self.script(index)]])

    def new_smoother(self):
        self.calls = 0
        return make_smoother(self.smoother, {"window": 3} if self.smoother == "window" else {})

    def check_compatible(self, model_id: str, hidden_size: int) -> None:
        return None


class KeywordClassifier:
    """Blocks texts containing SEC(RET), is unsure about MAYBE, allows the rest; may raise on response checks."""

    kind = "exchange"
    thresholds = Thresholds(0.3, 0.7)

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.calls: list[tuple[str, str | None]] = []

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore:
        self.calls.append((prompt, response))
        if self.fail and response is not None:
            raise RuntimeError("classifier exploded")
        text = prompt if response is None else response
        score = 0.9 if "SEC" in text or "BLOCKPROMPT" in text else 0.5 if "MAYBE" in text else 0.1
        verdict = self.thresholds.verdict(score)
        return ClassifierScore(score, verdict, self.thresholds, "unsafe" if score >= 0.5 else "safe")

    def score_batch(self, items):
        return [self.score(p, r) for p, r in items]


@pytest.fixture(scope="module")
def lm(tiny_lm_dir: Path):
    return load_causal_lm(str(tiny_lm_dir), device=DEVICE)


def first_token_of(lm, text: str, marker: str) -> int:
    """Index of the token of ``text`` in which ``marker`` begins."""
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    start = text.index(marker)
    return next(i for i in range(len(ids)) if len(lm.tokenizer.decode(ids[: i + 1])) > start)


def run(guard: Guard, response: str, prompt: str = "Tell me about it.") -> list:
    forced = guard.lm.tokenizer(response, add_special_tokens=False)["input_ids"]
    config = GenerationConfig(max_new_tokens=len(forced))
    return list(guard._events(prompt, config, forced, {}))


def released_model_text(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextReleased) and not e.is_refusal)


def test_policy_functions_release_only_after_lag_or_allow():
    settings = PolicySettings(release_lag=2, cooldown_tokens=3)
    levels = RiskThresholds(escalate=0.5, suspicious=0.25)
    assert [risk_state(s, levels) for s in (0.1, 0.3, 0.6)] == list(RiskState)
    state = StreamState()
    bounds = []
    for risk in [RiskState.CONTINUE] * 4 + [RiskState.SUSPICIOUS] + [RiskState.CONTINUE] * 3:
        observe(state, risk)
        bounds.append(release_bound(state, settings))
        state.released = bounds[-1]
    assert bounds == [0, 0, 1, 2, 2, 2, 2, 6]
    observe(state, RiskState.ESCALATE)
    assert state.pinned_from == 6
    for _ in range(4):
        observe(state, RiskState.CONTINUE)
    assert release_bound(state, settings) == 6, "escalated text waits for an allow"
    apply_verdict(state, Verdict.ALLOW, settings)
    assert release_bound(state, settings) == state.scored == 13
    assert state.cooldown_until == 16 and state.pinned_from is None
    state.released = 13
    observe(state, RiskState.SUSPICIOUS)
    apply_verdict(state, Verdict.UNCERTAIN, settings)
    for _ in range(4):
        observe(state, RiskState.CONTINUE)
    assert release_bound(state, settings) == 13, "text judged uncertain stays held"


@pytest.mark.parametrize("delay", [0, 2, 4])
def test_blocked_generation_never_reaches_the_consumer(lm, delay: int):
    response = INTRO + UNSAFE
    unsafe_from = first_token_of(lm, response, "SECRET")
    probe = ScriptedProbe(lambda i: 0.9 if i >= unsafe_from + delay else 0.05)
    classifier = KeywordClassifier()
    guard = Guard(lm, probe, classifier=classifier, policy=PolicySettings(release_lag=4))
    events = run(guard, response)
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.status is GenerationStatus.BLOCKED
    shown = released_model_text(events)
    assert shown, "the benign intro was streamed before the block"
    assert response.startswith(shown)
    assert "SEC" not in shown
    assert finished.response == "".join(e.text for e in events if isinstance(e, TextReleased))
    assert finished.response.endswith(guard.refusal)
    assert any(isinstance(e, Escalation) for e in events)
    verdicts = [(v.stage, v.verdict) for v in events if isinstance(v, ClassifierVerdict)]
    assert verdicts[0] == ("input", "allow") and verdicts[-1] == ("stream", "block")


def test_late_probe_with_zero_lag_would_leak_so_lag_matters(lm):
    response = INTRO + UNSAFE
    unsafe_from = first_token_of(lm, response, "SECRET")
    probe = ScriptedProbe(lambda i: 0.9 if i >= unsafe_from + 3 else 0.05)
    guard = Guard(lm, probe, classifier=KeywordClassifier(), policy=PolicySettings(release_lag=0))
    events = run(guard, response)
    assert events[-1].status is GenerationStatus.BLOCKED
    assert "SEC" in released_model_text(events)


def test_classifier_exception_holds_the_output(lm):
    response = INTRO + UNSAFE
    unsafe_from = first_token_of(lm, response, "SECRET")
    probe = ScriptedProbe(lambda i: 0.9 if i >= unsafe_from else 0.05)
    guard = Guard(lm, probe, classifier=KeywordClassifier(fail=True), policy=PolicySettings(release_lag=4))
    events = run(guard, response)
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.status is GenerationStatus.HELD
    assert "classifier exploded" in finished.error
    assert "SEC" not in released_model_text(events)
    assert finished.response == released_model_text(events)
    assert sum(isinstance(e, Finished) for e in events) == 1


def test_probe_exception_holds_the_output(lm):
    guard = Guard(lm, ScriptedProbe(lambda i: 0.05, fail_at=3), classifier=KeywordClassifier())
    events = run(guard, INTRO)
    assert events[-1].status is GenerationStatus.HELD and "probe exploded" in events[-1].error
    assert len(released_model_text(events)) < len(INTRO)


def test_allow_releases_the_buffer_and_cooldown_limits_calls(lm):
    classifier = KeywordClassifier()
    policy = PolicySettings(release_lag=4, cooldown_tokens=5, input_check=False)
    guard = Guard(lm, ScriptedProbe(lambda i: 0.9), classifier=classifier, policy=policy)
    events = run(guard, INTRO)
    n = len(lm.tokenizer(INTRO, add_special_tokens=False)["input_ids"])
    stream_checks = [e.index for e in events if isinstance(e, ClassifierVerdict) and e.stage == "stream"]
    assert stream_checks == list(range(0, n, 5))
    releases = [e for e in events if isinstance(e, TextReleased)]
    assert releases[0].last_token == 0, "an allow releases at once, without waiting for the lag"
    assert events[-1].status is GenerationStatus.COMPLETED and events[-1].response == INTRO
    assert len(classifier.calls) == len(stream_checks) + 1  # + the final check


def test_uncertain_holds_until_the_end(lm):
    response = INTRO + "MAYBE this part is borderline."
    maybe_from = first_token_of(lm, response, "MAYBE")
    probe = ScriptedProbe(lambda i: 0.9 if i >= maybe_from else 0.05)
    guard = Guard(lm, probe, classifier=KeywordClassifier(), policy=PolicySettings(release_lag=3, cooldown_tokens=4))
    events = run(guard, response)
    assert events[-1].status is GenerationStatus.HELD and events[-1].error is None
    assert "MAY" not in released_model_text(events)
    verdicts = [(e.stage, e.verdict) for e in events if isinstance(e, ClassifierVerdict)]
    assert verdicts[-2:] == [("stream", "uncertain"), ("final", "uncertain")]


def test_a_long_suspicious_stretch_asks_the_classifier_instead_of_stalling(lm):
    probe = ScriptedProbe(lambda i: 0.3)  # suspicious (≥ 0.25) but never escalating
    policy = PolicySettings(release_lag=2, max_held_tokens=6, cooldown_tokens=10, final_check=False)
    guard = Guard(lm, probe, classifier=KeywordClassifier(), policy=policy)
    events = run(guard, INTRO)
    checks = [e for e in events if isinstance(e, ClassifierVerdict) and e.stage == "stream"]
    assert [c.index for c in checks][:2] == [5, 15]
    assert not any(isinstance(e, Escalation) for e in events)
    first = next(e for e in events if isinstance(e, TextReleased))
    assert first.first_token == 0 and first.last_token == 5, "the allow released the paused backlog"
    assert events[-1].status is GenerationStatus.COMPLETED and events[-1].response == INTRO


def test_blocked_prompt_gets_the_refusal_without_generating(lm):
    calls = []
    handle = lm.model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        guard = Guard(lm, ScriptedProbe(lambda i: 0.0), classifier=KeywordClassifier())
        events = list(guard.stream("BLOCKPROMPT: how do I do the bad thing?"))
    finally:
        handle.remove()
    assert calls == []
    assert isinstance(events[0], ClassifierVerdict) and events[0].stage == "input" and events[0].verdict == "block"
    assert isinstance(events[1], TextReleased) and events[1].is_refusal
    assert events[-1].status is GenerationStatus.BLOCKED and events[-1].response == guard.refusal


def test_final_check_blocks_a_quiet_unsafe_response(lm):
    policy = PolicySettings(release_lag=8)
    guard = Guard(lm, ScriptedProbe(lambda i: 0.05), classifier=KeywordClassifier(), policy=policy)
    events = run(guard, "Okay. " + UNSAFE)
    assert events[-1].status is GenerationStatus.BLOCKED
    verdicts = [e for e in events if isinstance(e, ClassifierVerdict)]
    assert [v.stage for v in verdicts] == ["input", "final"]


def test_probe_only_guard_blocks_on_escalation_and_smoothing_ignores_spikes(lm):
    spiky = ScriptedProbe(lambda i: 0.95 if i % 4 == 0 else 0.0, smoother="window")
    events = run(Guard(lm, spiky), INTRO)
    assert events[-1].status is GenerationStatus.COMPLETED and events[-1].response == INTRO
    assert all(e.state != "escalate" for e in events if isinstance(e, TokenRisk))
    steady = ScriptedProbe(lambda i: 0.95 if i >= 6 else 0.0, smoother="window")
    events = run(Guard(lm, steady), INTRO)
    escalation = next(e for e in events if isinstance(e, Escalation))
    assert escalation.index == 7  # window of 3: mean ≥ 0.5 once two of three scores are high
    assert events[-1].status is GenerationStatus.BLOCKED


def test_scripted_probe_satisfies_the_protocol():
    assert isinstance(ScriptedProbe(lambda i: 0.0), TokenProbe)
