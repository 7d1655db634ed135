"""A causal LM's hidden states as classifier features: how a chat model itself reads a prompt or an exchange.

An item is read as the model reads it while generating: the prompt as one user turn with the generation prompt,
then the answer teacher-forced (``encode_exchange``), through the blocks up to the deepest layer read only. Per
layer two blocks are kept (``pooled_states``): the last token's state (the assistant header for a prompt, the last
answer token for an exchange) and the mean over the answer's tokens (over every token for a prompt alone). They
carry what a sentence encoder lacks, such as whether an answer helps or refuses; beside the encoder they generalise
better to unseen sources (docs/results/guard_quality.md, "The target model's own hidden states").

A guarded stream has those states already: the guarded model computed them for the prompt and every answer token
while it generated, and the stream monitor while it read the prompt and an engine's answer. ``AnswerStates`` carries
them from the token source to the input and exchange checks, which then read nothing again when they are what they
would read themselves (same model, dtype, template and layers, the whole prompt, the same answer text).

The settings live in the embedding classifier's config under ``states``. The model is named, not copied: at load
its hidden size, depth and chat template are checked against what the head was trained on.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

from constitutional_guard.activations import (
    CaptureSettings,
    encode_exchange,
    pooled_states,
    resolve_layers,
    template_hash,
)
from constitutional_guard.models.loading import LoadedModel, default_device, encoder_dtype, load_causal_lm

_SHARED: weakref.WeakValueDictionary[tuple[str, str], LoadedModel] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


@dataclass(frozen=True)
class StatesSettings:
    """Which model's states, at which layers, over how many tokens; saved as the config's ``states``."""

    model: str
    """Causal LM alias, local path or hub id."""
    layers: tuple[int, ...]
    """Hidden-state indices (0 = embeddings, l = output of block l)."""
    max_length: int = 256
    """Tokens per item; the prompt is cut from the left so the answer stays in view."""
    max_response_tokens: int = 128
    """Answer tokens read (its start: a refusal or a compliance shows early)."""
    dtype: str = "auto"
    """Weights dtype; ``auto``: bfloat16 where the hardware multiplies it natively, else float32 (emulated bfloat16
    is about 6× slower on a CPU without AMX or AVX512-BF16, and the features agree to a cosine of 0.9999)."""
    hidden_size: int = 0
    """The model's hidden size when the head was trained (0: not yet recorded); checked at load."""
    template_hash: str = ""
    """Fingerprint of the chat template when the head was trained ("": not yet recorded); checked at load."""

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("states.model: name a causal LM")
        if not self.layers or any(int(layer) < 0 for layer in self.layers):
            raise ValueError(f"states.layers: expected non-negative layer indices, got {list(self.layers)}")
        if self.max_response_tokens < 1 or self.max_length <= self.max_response_tokens:
            raise ValueError(
                f"states.max_length ({self.max_length}) must exceed states.max_response_tokens "
                f"({self.max_response_tokens}), which must be at least 1"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> StatesSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"states: unknown keys {unknown}; known: {sorted(known)}")
        values = dict(data)
        layers = values.get("layers", ())
        if isinstance(layers, str):
            layers = [part for part in layers.split(",") if part.strip()]
        elif isinstance(layers, int):
            layers = [layers]
        try:
            values["layers"] = tuple(int(layer) for layer in layers)
        except (TypeError, ValueError):
            raise ValueError(f"states.layers: expected integers, got {layers!r}") from None
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        return {**asdict(self), "layers": list(self.layers)}


@dataclass(frozen=True)
class StatesWanted:
    """The answer states a check would use: these layers, of at most the first ``tokens`` answer tokens."""

    layers: tuple[int, ...]
    tokens: int


def model_identity(lm: LoadedModel) -> tuple[str, str, str]:
    """What a model's states depend on besides its input: its path, its dtype and its chat template's fingerprint."""
    return lm.path, str(lm.model.dtype), template_hash(lm)


@dataclass
class AnswerStates:
    """An answer's tokens and, for the first ``limit`` of them, their hidden states at ``layers``, as the model that
    produced or read it computed them after ``prompt_ids`` (one row of ``len(layers) × hidden`` per token); and,
    once the source has read the prompt, the prompt's pooled states."""

    model: tuple[str, str, str]
    """``model_identity`` of the model."""
    layers: tuple[int, ...]
    limit: int
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    prompt_pooled: np.ndarray | None = None
    """The prompt's last-token and mean states per layer (``[len(layers), 2, hidden]``, as ``pooled_states`` pools a
    prompt alone), set by ``keep_prompt``."""
    pending: Callable[[], None] | None = None
    """Completes the source's read of the prompt while it is under way (``prompt_states`` waits for it)."""

    def prompt_states(self) -> np.ndarray | None:
        """``prompt_pooled``, once a read of the prompt under way completes (its error raised here); None if the
        source has not read the prompt."""
        if self.pending is not None:
            self.pending()
        return self.prompt_pooled

    def keep_prompt(self, states: np.ndarray) -> None:
        """The prompt's states ``[len(prompt_ids), len(layers), hidden]``, as the source's forward over it computed
        them."""
        states = np.asarray(states, dtype=np.float32)
        if states.shape[:2] != (len(self.prompt_ids), len(self.layers)):
            raise ValueError(f"prompt states of shape {states.shape} for {len(self.prompt_ids)} tokens")
        self.prompt_pooled = _last_and_mean(states)

    @classmethod
    def start(cls, lm: LoadedModel, wanted: StatesWanted, prompt_ids: Sequence[int]) -> AnswerStates:
        return cls(model_identity(lm), wanted.layers, wanted.tokens, list(prompt_ids))

    @property
    def full(self) -> bool:
        """Whether later tokens' states would go unused."""
        return len(self.rows) >= self.limit

    def append(self, token_id: int, states: np.ndarray | None) -> None:
        """One answer token and its states ``[len(layers), hidden]`` (None once ``full``)."""
        self.token_ids.append(int(token_id))
        if not self.full:
            if states is None:
                raise ValueError("answer states missing before the limit")
            self.rows.append(np.asarray(states, dtype=np.float32))


@runtime_checkable
class ReadsAnswerStates(Protocol):
    """A classifier that reads a causal LM's states and takes an answer's from its token source when they fit."""

    def wanted_states(self, lm: LoadedModel) -> StatesWanted | None:
        """The answer states a token source running ``lm`` should keep (None: they would not be used)."""
        ...

    def score(self, prompt: str, response: str | None = None, answer_states: AnswerStates | None = None) -> Any: ...


class StateReader:
    """Pooled hidden states of (prompt, answer) items from a loaded causal LM."""

    def __init__(self, lm: LoadedModel, settings: StatesSettings, batch_size: int = 32, max_batch_tokens: int = 4096):
        try:
            resolve_layers(list(settings.layers), lm.num_layers)
        except ValueError as exc:
            raise ValueError(f"states.layers: {exc}") from None
        if settings.hidden_size and settings.hidden_size != lm.hidden_size:
            raise ValueError(
                f"states.model: {settings.model} has hidden size {lm.hidden_size}, the head was trained on "
                f"{settings.hidden_size}"
            )
        if settings.template_hash and settings.template_hash != template_hash(lm):
            raise ValueError(f"states.model: {settings.model}'s chat template differs from the one trained on")
        self.lm = lm
        self.settings = settings
        self.identity = model_identity(lm)
        self.capture = CaptureSettings(
            layers=tuple(settings.layers),
            max_length=settings.max_length,
            max_response_tokens=settings.max_response_tokens,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
        )

    @classmethod
    def load(cls, settings: StatesSettings) -> StateReader:
        """Load the named model (on the default device, in ``settings.dtype``) and check it against ``settings``.
        Readers of one model in one dtype share it while any holds it (the input check and the exchange classifier
        of a bundle): reads only, and each read's hooks act in its own thread."""
        dtype = encoder_dtype(default_device()) if settings.dtype == "auto" else settings.dtype
        key = (settings.model, str(dtype))
        with _SHARED_LOCK:
            lm = _SHARED.get(key)
            if lm is None:
                lm = _SHARED[key] = load_causal_lm(settings.model, dtype=dtype)
        return cls(lm, settings)

    def recorded(self) -> StatesSettings:
        """The settings with this model's hidden size and template fingerprint, as a trained head records them."""
        return StatesSettings.from_mapping(
            {**self.settings.to_mapping(), "hidden_size": self.lm.hidden_size, "template_hash": template_hash(self.lm)}
        )

    def cache_key(self) -> list[str]:
        """What the features depend on, for a feature cache: the model, its dtype and template, layers, lengths."""
        s = self.settings
        return [*self.identity, ",".join(map(str, s.layers)), str(s.max_length), str(s.max_response_tokens)]

    @property
    def dim(self) -> int:
        return 2 * len(self.settings.layers) * self.lm.hidden_size

    def wanted_states(self, lm: LoadedModel) -> StatesWanted | None:
        """The answer states a source running ``lm`` should keep for this reader: its layers, of as many tokens as it
        reads (and the slack of another segmentation), when ``lm`` is this reader's model in its dtype with its
        template (else None: states of another model or dtype are not these)."""
        if model_identity(lm) != self.identity:
            return None
        return StatesWanted(tuple(self.settings.layers), self.settings.max_response_tokens + SEGMENTATION_SLACK)

    def encode(
        self, items: Sequence[tuple[str, str | None]], answers: Sequence[AnswerStates | None] | None = None
    ) -> np.ndarray:
        """One float32 row per item (``pooled_states`` of the prompt as a user turn and its answer); the rows of
        prompts alone read recently by any reader of the same setting are reused (``RECENT_PROMPTS``), and so are the
        states a token source kept (``answers``, per item: the prompt's for a prompt alone, the answer's for an
        exchange) when they are the ones this reader would compute."""
        rows = np.zeros((len(items), self.dim), dtype=np.float32)
        setting = tuple(self.cache_key())
        todo, encoded = [], []
        for i, (prompt, response) in enumerate(items):
            row = _RECENT.get((setting, prompt)) if response is None else None
            if row is not None:
                rows[i] = row
                continue
            ids = encode_exchange(
                self.lm, [{"role": "user", "content": prompt}], response,
                self.settings.max_length, self.settings.max_response_tokens,
            )
            answer = answers[i] if answers is not None else None
            row = self._from_source(ids, answer) if answer is not None else None
            if row is None:
                todo.append(i)
                encoded.append(ids)
                continue
            rows[i] = row
            if response is None:
                _RECENT.put((setting, prompt), row.copy())
        if not todo:
            return rows
        rows[todo] = pooled_states(self.lm, encoded, self.capture)
        for i in todo:
            if items[i][1] is None:
                _RECENT.put((setting, items[i][0]), rows[i].copy())
        return rows

    def _from_source(self, encoded: tuple[list[int], int], answer: AnswerStates) -> np.ndarray | None:
        """``pooled_states``' row from states kept while the prompt was read and the answer produced, or None unless
        they are what this reader reads: its model, dtype, template and layers, the whole prompt (not cut) and, for
        an exchange, the same answer text.

        The text may come in other tokens: a model writes "\\n\\n" as one token where tokenising the text gives two.
        The answer's own tokens are kept then (the states the model had), covering the same text."""
        ids, prompt_length = encoded
        tokens = ids[prompt_length:]
        if (
            answer.model != self.identity
            or not set(self.settings.layers) <= set(answer.layers)
            or ids[:prompt_length] != answer.prompt_ids
        ):
            return None
        picked = [answer.layers.index(layer) for layer in self.settings.layers]
        if not tokens:
            pooled = answer.prompt_states()
            return None if pooled is None else pooled[picked].reshape(-1)
        count = _covering(self.lm.tokenizer, tokens, answer.token_ids)
        if count is None or count > len(answer.rows):
            return None
        return _last_and_mean(np.stack(answer.rows[:count])[:, picked]).reshape(-1)


def _last_and_mean(states: np.ndarray) -> np.ndarray:
    """``[tokens, layers, hidden]`` states pooled as ``pooled_states`` pools them: ``[layers, 2, hidden]``, the last
    token's state, then the mean."""
    return np.stack([states[-1], states.mean(0)], axis=1)


SEGMENTATION_SLACK = 16
"""Tokens by which an answer's own tokens may outnumber or fall short of its text's tokenisation."""


def _covering(tokenizer: Any, tokens: list[int], produced: list[int]) -> int | None:
    """How many of the ``produced`` tokens spell the text of ``tokens`` (the same ids first; else the same decoded
    text within ``SEGMENTATION_SLACK`` tokens), or None."""
    if produced[: len(tokens)] == tokens:
        return len(tokens)
    text = tokenizer.decode(tokens)
    low, high = max(1, len(tokens) - SEGMENTATION_SLACK), min(len(produced), len(tokens) + SEGMENTATION_SLACK)
    for count in range(low, high + 1):
        decoded = tokenizer.decode(produced[:count])
        if decoded == text:
            return count
        if len(decoded) > len(text):
            return None
    return None


class _RecentRows:
    """A bounded, thread-safe map of the most recently used rows."""

    def __init__(self, size: int):
        self.size = size
        self._rows: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> np.ndarray | None:
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                self._rows.move_to_end(key)
            return row

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def put(self, key: Any, row: np.ndarray) -> None:
        with self._lock:
            self._rows[key] = row
            self._rows.move_to_end(key)
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)


def forget_recent_prompts() -> None:
    """Drop the remembered rows of prompts alone (``RECENT_PROMPTS``), e.g. to time reads of prompts seen before."""
    _RECENT.clear()


RECENT_PROMPTS = 256
"""Prompts alone whose rows a process keeps, per reader setting: a guarded stream's exchange checks weigh the same
prompt alone at every check, and the input check, reading the same states, read it first."""
_RECENT = _RecentRows(RECENT_PROMPTS)
