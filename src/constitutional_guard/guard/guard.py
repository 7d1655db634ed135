"""``Guard``: guarded streaming generation — input check, a token source (the local KV-cached loop or a remote
engine), the probe cascade, no leaks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from constitutional_guard.classifiers.base import ClassifierScore, SafetyClassifier
from constitutional_guard.classifiers.input_format import chat_prompt
from constitutional_guard.classifiers.lm_states import ReadsAnswerStates, StatesWanted
from constitutional_guard.constitution import Constitution, load_constitution
from constitutional_guard.guard.cascade import REFUSAL_SEPARATOR, Cascade
from constitutional_guard.guard.events import (
    ClassifierVerdict,
    Escalation,
    Finished,
    FinishReason,
    GenerationConfig,
    GenerationResult,
    GenerationStatus,
    GuardEvent,
    TokenRisk,
)
from constitutional_guard.guard.policy import PolicySettings
from constitutional_guard.guard.protocols import TokenProbe
from constitutional_guard.guard.sources import LocalSource, TokenSource
from constitutional_guard.models.loading import LoadedModel, Message

if TYPE_CHECKING:
    from constitutional_guard.guard.upstream import UpstreamSettings

__all__ = ["REFUSAL_SEPARATOR", "Guard", "as_messages", "collect_result"]

Messages = str | list[Message]


def as_messages(messages: Messages) -> list[Message]:
    """A bare string is one user message."""
    return [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)


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
            result.error, result.error_code = event.error, event.error_code
    return result


class Guard:
    """A model guarded by a probe on every token and an optional second-stage classifier.

    The tokens come from ``source``: by default the local model ``lm`` (the probe reads its own hidden
    states); a ``RemoteSource`` reads an OpenAI-compatible engine instead, with ``lm`` as its stream
    monitor (or none: then the classifier reads the response every ``classifier_every`` tokens).
    """

    def __init__(
        self,
        lm: LoadedModel | None,
        probe: TokenProbe | None,
        constitution: Constitution | None = None,
        classifier: SafetyClassifier | None = None,
        input_classifier: SafetyClassifier | None = None,
        policy: PolicySettings | None = None,
        refusal: str | None = None,
        source: TokenSource | None = None,
        classifier_every: int = 16,
    ):
        if source is None:
            if lm is None or probe is None:
                raise ValueError("a guard without a token source needs a local model and a probe")
            source = LocalSource(lm, probe)
        self.lm = lm
        self.probe = probe
        self.source = source
        self.scored = getattr(source, "scored", True)
        """Whether the source's steps carry probe scores."""
        if not self.scored and classifier is None:
            raise ValueError("a source without probe scores needs a classifier")
        self.constitution = constitution or load_constitution()
        self.classifier = classifier
        self.input_classifier = input_classifier if input_classifier is not None else classifier
        self.policy = policy or PolicySettings()
        self.refusal = refusal or self.constitution.refusal
        probe_threshold = float(probe.config.escalation_threshold) if probe is not None else 1.0
        self.thresholds = self.policy.thresholds(probe_threshold)
        self.shares_answer_states, self.shares_prompt_states = self._share_states()
        """Whether the source keeps the answer states the exchange check reads, and the prompt's states the input
        check reads, so that the checks do not read them again."""
        self.cascade = Cascade(self.thresholds, self.policy, self.refusal, classifier, self.input_classifier,
                               classifier_every, prompt_states=self.shares_prompt_states)

    def _share_states(self) -> tuple[bool, bool]:
        """Ask the source to keep the states the checks read of the answer (exchange check) and of the prompt (input
        check), when its model is theirs: both, else the answer's, else the prompt's (a source keeps no layer its
        forward does not compute); which of the two it keeps."""
        answer = self._wanted(self.classifier)
        prompt = self._wanted(self.input_classifier) if self.policy.input_check else None
        keep = getattr(self.source, "keep_answer_states", None)
        if keep is None:
            return False, False
        for kept_answer, kept_prompt in ((answer, prompt), (answer, None), (None, prompt)):
            if kept_answer is None and kept_prompt is None:
                continue
            layers = {*(kept_answer.layers if kept_answer else ()), *(kept_prompt.layers if kept_prompt else ())}
            if keep(StatesWanted(tuple(sorted(layers)), kept_answer.tokens if kept_answer else 0)):
                return kept_answer is not None, kept_prompt is not None
        return False, False

    def _wanted(self, classifier: SafetyClassifier | None) -> StatesWanted | None:
        if self.lm is None or not isinstance(classifier, ReadsAnswerStates):
            return None
        return classifier.wanted_states(self.lm)

    @property
    def model_id(self) -> str:
        """The name of the model that answers (the local model, or the upstream's)."""
        return self.source.model_id

    def list_models(self) -> list[dict[str, Any]] | None:
        """The upstream's model list (OpenAI ``/models`` entries), or None for a local model."""
        lister = getattr(self.source, "list_models", None)
        return lister() if lister is not None else None

    @classmethod
    def from_pretrained(
        cls, bundle_dir: str | Path, device: str | torch.device | None = None, dtype: str | None = None,
        upstream: UpstreamSettings | None = None,
    ) -> Guard:
        """Load a guard bundle (``guard.yaml`` and the artifacts it names).

        ``upstream`` (else the bundle's ``upstream:`` section) guards a remote OpenAI-compatible engine.
        """
        from constitutional_guard.guard.bundle import load_bundle_parts

        return cls(**load_bundle_parts(bundle_dir, device=device, dtype=dtype, upstream=upstream))

    def moderate(self, prompt: Messages, response: str | None = None) -> ClassifierScore:
        """Score a prompt, or a prompt and response, with the second-stage classifier."""
        classifier = self.classifier if response is not None else self.input_classifier
        if classifier is None:
            raise ValueError("this guard has no classifier to moderate with")
        return classifier.score(chat_prompt(as_messages(prompt)), response)

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
        forced = self._local_source().lm.tokenizer(response, add_special_tokens=False)["input_ids"]
        return self._collect(messages, config or GenerationConfig(max_new_tokens=max(1, len(forced))), forced)

    def _collect(self, messages: Messages, config: GenerationConfig, forced: list[int] | None) -> GenerationResult:
        timings: dict[str, float] = {}
        return collect_result(self._events(messages, config, forced, timings), timings)

    def _events(
        self, messages: Messages, config: GenerationConfig, forced: list[int] | None, timings: dict[str, float]
    ) -> Iterator[GuardEvent]:
        chat = as_messages(messages)
        if forced is not None:
            stream = self._local_source().open(chat, config, timings, forced)
        else:
            stream = self.source.open(chat, config, timings)
        scored = forced is not None or self.scored
        smoother = self.probe.new_smoother() if self.probe is not None and scored else None
        yield from self.cascade.run(chat_prompt(chat), stream, smoother, timings)

    def _local_source(self) -> LocalSource:
        """The local model read by the probe (for a remote source: its stream monitor's model)."""
        if isinstance(self.source, LocalSource):
            return self.source
        if self.lm is None or self.probe is None:
            raise ValueError("replay needs a local model and a probe")
        return LocalSource(self.lm, self.probe)
