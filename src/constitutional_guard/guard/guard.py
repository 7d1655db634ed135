"""``Guard``: guarded streaming generation — input check, KV-cached token loop, probe cascade, no leaks."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from constitutional_guard.classifiers.base import ClassifierScore, SafetyClassifier, Verdict
from constitutional_guard.constitution import Constitution, load_constitution
from constitutional_guard.guard.events import (
    ClassifierVerdict,
    Escalation,
    Finished,
    FinishReason,
    GenerationConfig,
    GenerationResult,
    GenerationStatus,
    GuardEvent,
    TextReleased,
    TokenRisk,
)
from constitutional_guard.guard.policy import (
    PolicySettings,
    RiskState,
    StreamState,
    apply_verdict,
    needs_classifier,
    observe,
    release_bound,
    risk_state,
)
from constitutional_guard.guard.protocols import Smoother, TokenProbe
from constitutional_guard.guard.streaming import ResponseText, token_loop
from constitutional_guard.models.loading import LoadedModel, Message

Messages = str | list[Message]
REFUSAL_SEPARATOR = "\n\n"


def as_messages(messages: Messages) -> list[Message]:
    """A bare string is one user message."""
    return [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)


def exchange_prompt(messages: list[Message]) -> str:
    """The prompt side of an exchange as classifiers read it: the user text, or ``role: content`` lines."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


@dataclass
class _Stream:
    """Everything one guarded generation tracks while it runs."""

    prompt: str
    prompt_tokens: int
    text: ResponseText
    smoother: Smoother
    state: StreamState = field(default_factory=StreamState)
    released_text: str = ""
    start: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)

    def add_time(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + seconds


def collect_result(events: Iterable[GuardEvent], timings: dict[str, float] | None = None) -> GenerationResult:
    """Fold a guard's event stream into a ``GenerationResult``."""
    timings = timings if timings is not None else {}
    result = GenerationResult(GenerationStatus.HELD, FinishReason.HELD, "", timings=timings)
    for event in events:
        if isinstance(event, TokenRisk):
            result.trace.append(event)
        elif isinstance(event, ClassifierVerdict):
            result.verdicts.append(event)
        elif isinstance(event, Escalation):
            result.escalations.append(event)
        elif isinstance(event, Finished):
            result.status, result.finish_reason, result.response = event.status, event.finish_reason, event.response
            result.prompt_tokens, result.completion_tokens = event.prompt_tokens, event.completion_tokens
            result.error = event.error
    return result


class Guard:
    """A target model guarded by a probe on every token and an optional second-stage classifier."""

    def __init__(
        self,
        lm: LoadedModel,
        probe: TokenProbe,
        constitution: Constitution | None = None,
        classifier: SafetyClassifier | None = None,
        input_classifier: SafetyClassifier | None = None,
        policy: PolicySettings | None = None,
        refusal: str | None = None,
    ):
        self.lm = lm
        self.probe = probe
        self.constitution = constitution or load_constitution()
        self.classifier = classifier
        self.input_classifier = input_classifier if input_classifier is not None else classifier
        self.policy = policy or PolicySettings()
        self.refusal = refusal or self.constitution.refusal
        self.thresholds = self.policy.thresholds(float(probe.config.escalation_threshold))

    @classmethod
    def from_pretrained(
        cls, bundle_dir: str | Path, device: str | torch.device | None = None, dtype: str | None = None
    ) -> Guard:
        """Load a guard bundle (``guard.yaml`` and the artifacts it names)."""
        from constitutional_guard.guard.bundle import load_bundle_parts

        return cls(**load_bundle_parts(bundle_dir, device=device, dtype=dtype))

    def check_input(self, messages: Messages) -> ClassifierScore | None:
        """The input classifier's score of a prompt, or None without one."""
        if self.input_classifier is None:
            return None
        return self.input_classifier.score(exchange_prompt(as_messages(messages)), None)

    def moderate(self, prompt: Messages, response: str | None = None) -> ClassifierScore:
        """Score a prompt, or a prompt and response, with the second-stage classifier."""
        classifier = self.classifier if response is not None else self.input_classifier
        if classifier is None:
            raise ValueError("this guard has no classifier to moderate with")
        return classifier.score(exchange_prompt(as_messages(prompt)), response)

    def stream(
        self, messages: Messages, config: GenerationConfig | None = None, timings: dict[str, float] | None = None
    ) -> Iterator[GuardEvent]:
        """Generate under guard, yielding events; the last one is always ``Finished``.

        ``timings``, when given, receives the seconds spent per stage (see ``GenerationResult.timings``).
        """
        yield from self._events(messages, config or GenerationConfig(), None, {} if timings is None else timings)

    def generate(self, messages: Messages, config: GenerationConfig | None = None) -> GenerationResult:
        """Generate under guard and return the status, the response the user got, the trace and timings."""
        return self._collect(messages, config or GenerationConfig(), None)

    def replay(self, messages: Messages, response: str, config: GenerationConfig | None = None) -> GenerationResult:
        """Run the guard over a given response as if the model produced it (teacher forcing), for evaluation."""
        forced = self.lm.tokenizer(response, add_special_tokens=False)["input_ids"]
        return self._collect(messages, config or GenerationConfig(max_new_tokens=max(1, len(forced))), forced)

    def _collect(self, messages: Messages, config: GenerationConfig, forced: list[int] | None) -> GenerationResult:
        timings: dict[str, float] = {}
        return collect_result(self._events(messages, config, forced, timings), timings)

    def _events(
        self, messages: Messages, config: GenerationConfig, forced: list[int] | None, timings: dict[str, float]
    ) -> Iterator[GuardEvent]:
        chat = as_messages(messages)
        prompt_ids = self.lm.encode_messages(chat)
        run = _Stream(
            prompt=exchange_prompt(chat),
            prompt_tokens=len(prompt_ids),
            text=ResponseText(self.lm.tokenizer, config.stop),
            smoother=self.probe.new_smoother(),
            timings=timings,
        )
        try:
            yield from self._guarded(run, prompt_ids, config, forced)
        except _Stop as stop:
            yield from stop.events
        except Exception as exc:  # fail closed: the stream still ends with Finished, nothing more released
            yield from self._held(run, f"generation failed: {exc!r}")
        finally:
            run.timings["total"] = time.perf_counter() - run.start

    def _guarded(
        self, run: _Stream, prompt_ids: list[int], config: GenerationConfig, forced: list[int] | None
    ) -> Iterator[GuardEvent]:
        if self.policy.input_check and self.input_classifier is not None:
            verdict = self._classify(run, self.input_classifier, "input", -1, None)
            yield verdict
            if verdict.verdict == Verdict.BLOCK:
                raise _Stop(self._blocked(run))
        reason = FinishReason.LENGTH
        loop = token_loop(self.lm.model, prompt_ids, config, self.lm.eos_token_ids, forced_ids=forced)
        try:
            while True:
                tick = time.perf_counter()
                step = next(loop, None)
                run.add_time("generation", time.perf_counter() - tick)
                if step is None:
                    break
                if step.eos:
                    reason = FinishReason.STOP
                    break
                run.text.append(step.token_id)
                yield from self._on_token(run, step.index, step.hidden_states)
                if run.text.stopped:
                    reason = FinishReason.STOP
                    break
        finally:
            loop.close()
        yield from self._finish(run, reason)

    def _on_token(self, run: _Stream, index: int, hidden_states: Any) -> Iterator[GuardEvent]:
        tick = time.perf_counter()
        try:
            score = float(self.probe.score_hidden_states(hidden_states)[0, -1])
            smoothed = float(run.smoother.update(score))
        except Exception as exc:  # fail closed: nothing more is released
            raise _Stop(self._held(run, f"probe failed: {exc!r}")) from exc
        risk = risk_state(smoothed, self.thresholds)
        observe(run.state, risk)
        run.add_time("probe", time.perf_counter() - tick)
        yield TokenRisk(index, run.text.token_text(index), score, smoothed, risk.value)
        if risk is RiskState.ESCALATE and self.classifier is None:
            yield Escalation(index, smoothed)
            raise _Stop(self._blocked(run))  # probe-only: an escalation blocks
        if self.classifier is not None and needs_classifier(run.state, risk, self.policy):
            if risk is RiskState.ESCALATE:
                yield Escalation(index, smoothed)
            verdict = self._classify(run, self.classifier, "stream", index, run.text.text_through(index + 1, True))
            yield verdict
            if verdict.verdict == Verdict.BLOCK:
                raise _Stop(self._blocked(run))
            apply_verdict(run.state, Verdict(verdict.verdict), self.policy)
        released = self._release(run, release_bound(run.state, self.policy), final=False)
        if released is not None:
            yield released

    def _finish(self, run: _Stream, reason: FinishReason) -> Iterator[GuardEvent]:
        state = run.state
        if self.classifier is not None and (self.policy.final_check or state.pinned_from is not None):
            response = run.text.text_through(state.scored, final=True)
            verdict = self._classify(run, self.classifier, "final", state.scored - 1, response)
            yield verdict
            if verdict.verdict == Verdict.BLOCK:
                raise _Stop(self._blocked(run))
            if verdict.verdict == Verdict.UNCERTAIN:
                raise _Stop(self._held(run, None))
        released = self._release(run, state.scored, final=True)
        if released is not None:
            yield released
        yield Finished(
            GenerationStatus.COMPLETED, reason, run.released_text, run.prompt_tokens, len(run.text.token_ids)
        )

    def _release(self, run: _Stream, bound: int, final: bool) -> TextReleased | None:
        state = run.state
        if bound <= state.released and not final:
            return None
        text = run.text.text_through(bound, final=final)
        if not text.startswith(run.released_text) or len(text) == len(run.released_text):
            state.released = max(state.released, bound)
            return None
        first, state.released = state.released, max(state.released, bound)
        chunk = text[len(run.released_text) :]
        run.released_text = text
        run.timings.setdefault("first_release", time.perf_counter() - run.start)
        return TextReleased(chunk, first, max(first, bound - 1))

    def _classify(
        self, run: _Stream, classifier: SafetyClassifier, stage: str, index: int, response: str | None
    ) -> ClassifierVerdict:
        tick = time.perf_counter()
        try:
            result = classifier.score(run.prompt, response)
        except Exception as exc:  # fail closed: nothing more is released
            raise _Stop(self._held(run, f"{stage} classifier failed: {exc!r}")) from exc
        elapsed = time.perf_counter() - tick
        run.add_time("input_check" if stage == "input" else "classifier", elapsed)
        categories = result.detail.get("categories", {})
        return ClassifierVerdict(
            stage=stage,
            index=index,
            score=float(result.score),
            verdict=Verdict(result.verdict).value,
            label=result.label,
            latency_ms=elapsed * 1000.0,
            categories=dict(categories) if isinstance(categories, dict) else {},
        )

    def _blocked(self, run: _Stream) -> list[GuardEvent]:
        chunk = (REFUSAL_SEPARATOR if run.released_text else "") + self.refusal
        run.released_text += chunk
        return [
            TextReleased(chunk, -1, -1, is_refusal=True),
            Finished(
                GenerationStatus.BLOCKED,
                FinishReason.CONTENT_FILTER,
                run.released_text,
                run.prompt_tokens,
                len(run.text.token_ids),
            ),
        ]

    def _held(self, run: _Stream, error: str | None) -> list[GuardEvent]:
        return [
            Finished(
                GenerationStatus.HELD,
                FinishReason.HELD,
                run.released_text,
                run.prompt_tokens,
                len(run.text.token_ids),
                error=error,
            )
        ]


class _Stop(Exception):
    """Ends a stream early with its closing events."""

    def __init__(self, events: list[GuardEvent]):
        super().__init__()
        self.events = events
