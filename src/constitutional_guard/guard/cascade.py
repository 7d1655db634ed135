"""The cascade: per-stream state and the release / hold / block decisions over steps from any token source.

A token source yields ``SourceStep``s (a text piece, maybe a token id, maybe a probe score); the cascade
smooths the scores, escalates to the classifier, and releases text only once a check covers it. It never
knows whether the steps came from the local generation loop or a remote stream.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from constitutional_guard.classifiers.base import SafetyClassifier, Verdict
from constitutional_guard.classifiers.lm_states import AnswerStates, ReadsAnswerStates
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
from constitutional_guard.guard.policy import (
    PolicySettings,
    RiskState,
    RiskThresholds,
    StreamState,
    apply_verdict,
    needs_classifier,
    observe,
    release_bound,
    risk_state,
)
from constitutional_guard.guard.protocols import Smoother
from constitutional_guard.guard.sources import SourceStream, add_time

REFUSAL_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Cascade:
    """The checks every stream of one guard goes through."""

    thresholds: RiskThresholds
    policy: PolicySettings
    refusal: str
    classifier: SafetyClassifier | None = None
    input_classifier: SafetyClassifier | None = None
    classifier_every: int = 16
    """Without probe scores, the classifier reads the response every this many tokens."""
    prompt_states: bool = False
    """The source keeps the prompt's states the input check reads: it reads the prompt before the check."""

    def run(self, prompt: str, source: SourceStream, smoother: Smoother | None,
            timings: dict[str, float]) -> Iterator[GuardEvent]:
        """Check the prompt, then every step of ``source``; the last event is always ``Finished``."""
        run = CascadeRun(self, prompt, source, smoother, timings)
        try:
            yield from run.guarded()
            return
        except _Stop as stop:
            closing = stop.events
        except SourceError as exc:  # the source failed (e.g. the upstream): hold what was not released
            closing = run.held(exc.code, str(exc))
        except Exception as exc:  # fail closed: the stream still ends with Finished, nothing more released
            closing = run.held(GuardErrorCode.GENERATION_FAILED, f"generation failed: {exc!r}")
        finally:
            source.steps.close()  # a block or failure stops the source (and aborts an upstream request) at once
            timings["total"] = time.perf_counter() - run.start
        yield from closing


@dataclass
class CascadeRun:
    """Everything one guarded generation tracks while it runs, and its per-step decisions."""

    cascade: Cascade
    prompt: str
    source: SourceStream
    smoother: Smoother | None
    timings: dict[str, float]
    state: StreamState = field(default_factory=StreamState)
    released_text: str = ""
    checked_at: int = 0
    """Tokens scored at the last periodic classifier check (streams without probe scores)."""
    start: float = field(default_factory=time.perf_counter)

    def guarded(self) -> Iterator[GuardEvent]:
        cascade = self.cascade
        if cascade.policy.input_check and cascade.input_classifier is not None:
            states = None
            if cascade.prompt_states and self.source.read_prompt is not None:
                self.source.read_prompt()  # work the source does anyway; a failure holds the stream
                states = self.source.answer_states
            verdict = self.classify(cascade.input_classifier, "input", -1, None, states)
            yield verdict
            if verdict.verdict == Verdict.BLOCK:
                raise _Stop(self.blocked())
        text = self.source.text
        for step in self.source.steps:
            if step.score is None:
                yield from self.on_unscored(step.index)
            else:
                yield from self.on_scored(step.index, step.score)
            if text.stopped:
                self.source.finish_reason = FinishReason.STOP
                break
        yield from self.finish(self.source.finish_reason)

    def on_scored(self, index: int, score: float) -> Iterator[GuardEvent]:
        """One token with a probe score: smooth, decide, maybe ask the classifier, release what is covered."""
        cascade = self.cascade
        assert self.smoother is not None, "probe scores need a smoother"
        try:
            smoothed = float(self.smoother.update(score))
        except Exception as exc:  # fail closed: nothing more is released
            raise _Stop(self.held(GuardErrorCode.PROBE_FAILED, f"probe failed: {exc!r}")) from exc
        if not (math.isfinite(score) and math.isfinite(smoothed)):
            message = f"probe scored token {index} as {score} (smoothed {smoothed})"
            raise _Stop(self.held(GuardErrorCode.NON_FINITE_SCORE, message))
        risk = risk_state(smoothed, cascade.thresholds)
        observe(self.state, risk)
        yield TokenRisk(index, self.source.text.token_text(index), score, smoothed, risk.value)
        if risk is RiskState.ESCALATE and cascade.classifier is None:
            yield Escalation(index, smoothed)
            raise _Stop(self.blocked())  # probe-only: an escalation blocks
        if cascade.classifier is not None and needs_classifier(self.state, risk, cascade.policy):
            if risk is RiskState.ESCALATE:
                yield Escalation(index, smoothed)
            yield from self.check_stream(index)
        released = self.release(release_bound(self.state, cascade.policy), final=False)
        if released is not None:
            yield released

    def on_unscored(self, index: int) -> Iterator[GuardEvent]:
        """One token without a probe score: held until a periodic classifier allow covers it."""
        state = self.state
        state.scored += 1
        state.low_run = 0
        if self.cascade.classifier is None:
            raise _Stop(self.held(GuardErrorCode.PROBE_FAILED, "no probe score and no classifier to check the text"))
        if state.scored - self.checked_at >= self.cascade.classifier_every:
            self.checked_at = state.scored
            yield from self.check_stream(index)
            released = self.release(state.approved, final=False)
            if released is not None:
                yield released

    def check_stream(self, index: int) -> Iterator[GuardEvent]:
        """Classify the response so far: block stops the stream, allow / uncertain update the state."""
        assert self.cascade.classifier is not None
        response = self.source.text.text_through(index + 1, True)
        verdict = self.classify(self.cascade.classifier, "stream", index, response, self.source.answer_states)
        yield verdict
        if verdict.verdict == Verdict.BLOCK:
            raise _Stop(self.blocked())
        apply_verdict(self.state, Verdict(verdict.verdict), self.cascade.policy)

    def finish(self, reason: FinishReason) -> Iterator[GuardEvent]:
        cascade, state = self.cascade, self.state
        unscored_tail = self.smoother is None and state.approved < state.scored
        must_check = cascade.policy.final_check or state.pinned_from is not None or unscored_tail
        if cascade.classifier is not None and must_check:
            response = self.source.text.text_through(state.scored, final=True)
            verdict = self.classify(cascade.classifier, "final", state.scored - 1, response, self.source.answer_states)
            yield verdict
            if verdict.verdict == Verdict.BLOCK:
                raise _Stop(self.blocked())
            if verdict.verdict == Verdict.UNCERTAIN:
                raise _Stop(self.held())
        released = self.release(state.scored, final=True)
        if released is not None:
            yield released
        yield Finished(GenerationStatus.COMPLETED, reason, self.released_text, self.source.prompt_tokens,
                       len(self.source.text))

    def release(self, bound: int, final: bool) -> TextReleased | None:
        state = self.state
        if bound <= state.released and not final:
            return None
        text = self.source.text.text_through(bound, final=final)
        if not text.startswith(self.released_text) or len(text) == len(self.released_text):
            state.released = max(state.released, bound)
            return None
        first, state.released = state.released, max(state.released, bound)
        chunk = text[len(self.released_text) :]
        self.released_text = text
        self.timings.setdefault("first_release", time.perf_counter() - self.start)
        return TextReleased(chunk, first, max(first, bound - 1))

    def classify(
        self, classifier: SafetyClassifier, stage: str, index: int, response: str | None,
        answer_states: AnswerStates | None = None,
    ) -> ClassifierVerdict:
        """``answer_states``: the source's states of the prompt and answer, for a classifier that reads them."""
        tick = time.perf_counter()
        try:
            if answer_states is not None and isinstance(classifier, ReadsAnswerStates):
                result = classifier.score(self.prompt, response, answer_states=answer_states)
            else:
                result = classifier.score(self.prompt, response)
        except Exception as exc:  # fail closed: nothing more is released
            message = f"{stage} classifier failed: {exc!r}"
            raise _Stop(self.held(GuardErrorCode.CLASSIFIER_FAILED, message)) from exc
        if not math.isfinite(float(result.score)):
            message = f"{stage} classifier scored {result.score}"
            raise _Stop(self.held(GuardErrorCode.NON_FINITE_SCORE, message))
        elapsed = time.perf_counter() - tick
        add_time(self.timings, "input_check" if stage == "input" else "classifier", elapsed)
        return ClassifierVerdict(
            stage=stage,
            index=index,
            score=float(result.score),
            verdict=Verdict(result.verdict).value,
            label=result.label,
            latency_ms=elapsed * 1000.0,
            categories=dict(result.categories),
        )

    def blocked(self) -> list[GuardEvent]:
        chunk = (REFUSAL_SEPARATOR if self.released_text else "") + self.cascade.refusal
        self.released_text += chunk
        return [
            TextReleased(chunk, -1, -1, is_refusal=True),
            Finished(GenerationStatus.BLOCKED, FinishReason.CONTENT_FILTER, self.released_text,
                     self.source.prompt_tokens, len(self.source.text)),
        ]

    def held(self, code: GuardErrorCode | None = None, error: str | None = None) -> list[GuardEvent]:
        """Hold everything not yet released; ``code`` and ``error`` say why when a check failed (fail closed)."""
        return [
            Finished(GenerationStatus.HELD, FinishReason.HELD, self.released_text, self.source.prompt_tokens,
                     len(self.source.text), error=error, error_code=code)
        ]


class _Stop(Exception):
    """Ends a stream early with its closing events."""

    def __init__(self, events: list[GuardEvent]):
        super().__init__()
        self.events = events
