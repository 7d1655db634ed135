"""Property-based checks of the cascade's release decisions: whatever the probe, the classifier and the
policy do, no text leaves the guard that a check did not cover.

Random per-token probe scores (NaN and infinities included), classifier verdicts (errors and non-finite
scores included), source failures, stop strings and policy settings drive the real ``Cascade`` over a
scripted token source. ``CGUARD_CASCADE_EXAMPLES`` sets the example count (default 300), e.g. the long run
in docs/results/serving.md: ``CGUARD_CASCADE_EXAMPLES=5000 .venv/bin/pytest tests/test_cascade_properties.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import event as record
from hypothesis import strategies as st

from constitutional_guard.classifiers.base import ClassifierScore, Thresholds, Verdict
from constitutional_guard.guard.cascade import REFUSAL_SEPARATOR, Cascade
from constitutional_guard.guard.events import (
    ClassifierVerdict,
    Escalation,
    Finished,
    FinishReason,
    GenerationStatus,
    GuardErrorCode,
    GuardEvent,
    SourceError,
    TextReleased,
    TokenRisk,
)
from constitutional_guard.guard.policy import PolicySettings
from constitutional_guard.guard.sources import PieceText, SourceStep, SourceStream
from constitutional_guard.probes.smoothing import make_smoother

EXAMPLES = int(os.environ.get("CGUARD_CASCADE_EXAMPLES", "300"))
PROPERTIES = settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROMPT = "Tell me about it."
REFUSAL = "I can't help with that."
NON_FINITE = (math.nan, math.inf, -math.inf)


def weighted(*options: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """Draw from one of ``options`` with probability proportional to its weight."""

    def pick(n: int) -> st.SearchStrategy:
        for weight, strategy in options:
            if n < weight:
                return strategy
            n -= weight
        raise AssertionError(n)

    return st.integers(0, sum(weight for weight, _ in options) - 1).flatmap(pick)


unit = st.floats(min_value=0.0, max_value=1.0)
non_finite = st.sampled_from(NON_FINITE)
low_scores = st.floats(min_value=0.0, max_value=0.05)
spikes = weighted((4, st.floats(min_value=0.5, max_value=1.0)), (2, unit), (1, non_finite))
classifier_outcomes = weighted((5, st.just(Verdict.ALLOW)), (4, st.just(Verdict.UNCERTAIN)),
                               (2, st.just(Verdict.BLOCK)), (1, non_finite), (1, st.just("error")))
risk_levels = weighted((3, st.floats(min_value=0.3, max_value=1.0)), (1, unit))
"""Mostly above the low readings, sometimes anywhere (then every token may be risky)."""
smoothers = weighted((3, st.just("none")), (2, st.just("ema")),
                     (1, st.sampled_from(["window", "cummax", "k_consecutive"])))
pieces = st.text(alphabet="ab c\n", min_size=1, max_size=3) | st.just("")
policies = st.builds(
    PolicySettings,
    escalation_threshold=st.none() | risk_levels,
    suspicious_fraction=weighted((3, st.floats(min_value=0.3, max_value=1.0)),
                                 (1, st.floats(min_value=0.01, max_value=1.0))),
    release_lag=st.integers(0, 6),
    cooldown_tokens=st.integers(0, 12),
    max_held_tokens=st.integers(1, 12),
    input_check=st.booleans(),
    final_check=st.booleans(),
)


@dataclass
class Failure:
    """The first failed check of a run: once set, the only event left is a held ``Finished`` with ``code``."""

    code: GuardErrorCode | None = None


class ScriptedClassifier:
    """Answers each call with a freshly drawn verdict (a score in its range), a non-finite score or an exception."""

    kind = "scripted"

    def __init__(self, data: st.DataObject, thresholds: Thresholds, failure: Failure) -> None:
        self.data = data
        self.thresholds = thresholds
        self.failure = failure

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore:
        outcome = self.data.draw(classifier_outcomes, label="classifier outcome")
        if outcome == "error":
            self.failure.code = GuardErrorCode.CLASSIFIER_FAILED
            raise RuntimeError("classifier crashed")
        if isinstance(outcome, float):
            self.failure.code = GuardErrorCode.NON_FINITE_SCORE
            score = outcome
        else:
            allow, block = self.thresholds.allow, self.thresholds.block
            ranges = {Verdict.ALLOW: (0.0, allow), Verdict.UNCERTAIN: (allow, block), Verdict.BLOCK: (block, 1.0)}
            low, high = ranges[outcome]
            score = low if low >= high else self.data.draw(st.floats(low, high, exclude_max=outcome != Verdict.BLOCK))
        verdict = self.thresholds.verdict(score)
        return ClassifierScore(score, verdict, self.thresholds, "unsafe" if verdict != Verdict.ALLOW else "safe")


@dataclass
class ScriptedSource:
    """A response of given text pieces and probe scores (None: no probe); it may break off at ``fail_at``."""

    pieces: list[str]
    scores: list[float | None]
    stops: list[str]
    fail_at: int | None
    failure: Failure
    yielded: int = 0
    text: PieceText = field(init=False)

    def open(self) -> SourceStream:
        self.text = PieceText(self.stops)
        stream = SourceStream(self.text, prompt_tokens=5)
        stream.steps = self._steps(stream)
        return stream

    def _steps(self, stream: SourceStream) -> Generator[SourceStep, None, None]:
        for index, (piece, score) in enumerate(zip(self.pieces, self.scores, strict=True)):
            if index == self.fail_at:
                self.failure.code = GuardErrorCode.UPSTREAM_ERROR
                raise SourceError(GuardErrorCode.UPSTREAM_ERROR, "the upstream broke off")
            self.text.append(piece)
            if score is not None and not math.isfinite(score):
                self.failure.code = GuardErrorCode.NON_FINITE_SCORE
            self.yielded += 1
            yield SourceStep(index, None, score)
        stream.finish_reason = FinishReason.STOP


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ScriptedSource, bool]:
    """A scripted source and whether it is probe-scored (else only periodic classifier checks cover it)."""
    scored = draw(st.booleans())
    length = draw(st.integers(1, 40))
    texts = draw(st.lists(pieces, min_size=length, max_size=length))
    scores: list[float | None] = [draw(low_scores) if scored else None for _ in texts]
    if scored:  # a few risky (or broken) readings among low ones
        for index in draw(st.lists(st.integers(0, len(texts) - 1), max_size=3)):
            scores[index] = draw(spikes)
    stops = draw(weighted((3, st.just([])), (1, st.lists(st.text(alphabet="abc", min_size=1, max_size=3), max_size=2))))
    fail_at = draw(weighted((4, st.none()), (1, st.integers(0, max(len(texts) - 1, 0)))))
    return ScriptedSource(texts, scores, stops, fail_at, Failure()), scored


@dataclass
class Seen:
    """One event and what the source had produced when it arrived."""

    event: GuardEvent
    scored: int
    failure: GuardErrorCode | None


def run_cascade(data: st.DataObject) -> tuple[list[Seen], ScriptedSource, Cascade, SourceStream]:
    source, scored = data.draw(scenarios(), label="source")
    policy = data.draw(policies, label="policy")
    allow = data.draw(unit, label="allow threshold")
    thresholds = Thresholds(allow, data.draw(st.floats(min_value=allow, max_value=1.0), label="block threshold"))
    classifier = ScriptedClassifier(data, thresholds, source.failure)
    with_classifier = data.draw(weighted((3 if scored else 9, st.just(True)), (1, st.just(False))),
                                label="has classifier")
    cascade = Cascade(
        thresholds=policy.thresholds(data.draw(risk_levels, label="probe threshold")),
        policy=policy,
        refusal=REFUSAL,
        classifier=classifier if with_classifier else None,
        input_classifier=classifier if data.draw(st.booleans(), label="has input classifier") else None,
        classifier_every=data.draw(st.integers(1, 8), label="classifier every"),
    )
    smoother = make_smoother(data.draw(smoothers, label="smoother")) if scored else None
    stream = source.open()
    seen = [Seen(event, source.yielded, source.failure.code)
            for event in cascade.run(PROMPT, stream, smoother, {})]
    return seen, source, cascade, stream


@PROPERTIES
@given(st.data())
def test_nothing_unchecked_is_ever_released(data: st.DataObject) -> None:
    seen, source, cascade, stream = run_cascade(data)
    lag = cascade.policy.release_lag
    released = ""
    released_tokens = 0
    allowed_through = 0
    """Tokens covered by a classifier allow."""
    needs_allow_from: int | None = None
    """First token unreleased at an escalation or uncertain verdict: from here on only an allow releases."""
    risks: dict[int, TokenRisk] = {}
    blocked_at: int | None = None
    pinned = False

    finished = [i for i, s in enumerate(seen) if isinstance(s.event, Finished)]
    assert finished == [len(seen) - 1], "every stream ends with exactly one Finished, as its last event"
    end = seen[-1].event
    assert isinstance(end, Finished)
    assert stream.steps.gi_frame is None, "the source is closed when the stream ends"

    for position, s in enumerate(seen):
        event = s.event
        if s.failure is not None:
            assert event is end, f"{event} came after a failed check"
            assert end.status is GenerationStatus.HELD and end.finish_reason is FinishReason.HELD
            assert end.error_code is s.failure and end.error
        if blocked_at is not None and position > blocked_at:
            assert position - blocked_at <= 2, "only the refusal and Finished follow a block"
            if isinstance(event, TextReleased):
                assert event.is_refusal and event.text == (REFUSAL_SEPARATOR if released else "") + REFUSAL
            continue
        match event:
            case TokenRisk():
                risks[event.index] = event
                if event.state == "escalate" and needs_allow_from is None:
                    needs_allow_from = released_tokens
                    pinned = True
            case Escalation() if cascade.classifier is None:
                blocked_at = position
            case ClassifierVerdict(verdict="block"):
                blocked_at = position
            case ClassifierVerdict(verdict="allow", stage=stage, index=index) if stage != "input":
                allowed_through = max(allowed_through, index + 1)
                needs_allow_from = None
            case ClassifierVerdict(verdict="uncertain", stage="stream") if needs_allow_from is None:
                needs_allow_from = released_tokens
                pinned = True
            case TextReleased():
                assert not event.is_refusal, "a refusal only after a block"
                assert event.text, "no empty releases"
                final = position == len(seen) - 2 and end.status is GenerationStatus.COMPLETED
                # from the first token not yet covered by a release: text held back (the start of a stop
                # string) goes out later, under the index of a token released before without text
                covered = min(event.last_token + 1, s.scored)
                for token in range(released_tokens, covered):
                    if token < allowed_through:
                        continue
                    assert needs_allow_from is None or token < needs_allow_from, \
                        f"token {token} released while it waited for an allow"
                    if final:
                        assert source.scores[token] is not None, f"unscored token {token} released unchecked"
                        assert risks[token].state != "escalate"
                        continue
                    assert token + lag < s.scored, f"token {token} released before {lag} later tokens were read"
                    recent = [risks.get(i) for i in range(s.scored - lag - 1, s.scored)]
                    assert all(r is not None and r.state == "continue" for r in recent), \
                        f"token {token} released without {lag + 1} low-risk tokens after it"
                released += event.text
                released_tokens = max(released_tokens, covered)
                checked = source.text.text_through(covered, final=True)
                assert checked.startswith(released), "released text is a prefix of the checked text"

    record(f"ends {end.status.value}" + (f" ({end.error_code.value})" if end.error_code else ""))
    record(f"released model text: {bool(released)}; waited for an allow: {pinned}")
    visible = source.text.text_through(len(source.text), final=True)
    assert visible.startswith(released) and source.text.text.startswith(released)
    if blocked_at is not None:
        assert end.status is GenerationStatus.BLOCKED and end.finish_reason is FinishReason.CONTENT_FILTER
        assert end.response == released + (REFUSAL_SEPARATOR if released else "") + REFUSAL
    else:
        assert end.response == released
    if end.status is GenerationStatus.COMPLETED:
        assert end.error_code is None and source.failure.code is None
        assert end.response == visible, "a completed stream released all of its visible text"
