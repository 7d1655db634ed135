"""The embedding classifier: a frozen sentence encoder's features under a logistic-regression head.

A text's features are the encoder's mean-pooled, L2-normalised token states over windows of ``window`` tokens
(a long text gives several windows: the first and last ``max_windows / 2`` are kept), pooled by mean and by
max across windows, so a request buried at the end of a long jailbreak template stays in view. An item's
features are ``[prompt, response, has_response]`` (zeros for a prompt alone), then, when the config names a causal
LM under ``states``, that model's pooled hidden states of the item (``lm_states``). The head reads standardised
features: a logistic model, or one ReLU hidden layer under it (``mlp``), which can learn that the same
response is harmful after one prompt and harmless after another, or the average of both (``linear+mlp``):
the logistic head generalises best to unseen sources, the MLP catches requests whose words are harmless on
their own ("how do I make" + a nerve agent); docs/results/guard_quality.md compares them.

A classifier trained on prompts and exchanges together can weigh, in an exchange's P(unsafe), its own score of
the prompt alone (``prompt_weight`` w): P(exchange)^(1 − w) · P(prompt)^w. An exchange is harmful when a harmful
request meets an answer that serves it; the head reads the prompt alone far more reliably on sources it never
saw than it reads the pair (docs/results/guard_quality.md, "The exchange check weighs its prompt"). Only the head is
trained, so fitting takes seconds to a minute once features exist, which makes retraining per held-out source
(leave-source-out evaluation) affordable on a CPU.

Directory layout: ``classifier_config.json``, ``head.safetensors`` (``mean``, ``scale``, ``coef``,
``intercept``, and ``hidden_weight`` / ``hidden_bias`` for an MLP head; an averaged head stores each member's
tensors under ``m0.``, ``m1.``, …) and ``encoder/`` (the encoder and its tokenizer). The directory stands alone,
except for the causal LM whose states it reads, which is named and checked at load rather than copied.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from constitutional_guard.classifiers.base import (
    CONFIG_NAME,
    ClassifierScore,
    ConfigThresholds,
    LabelledConfig,
)
from constitutional_guard.classifiers.lm_states import AnswerStates, StateReader, StatesSettings, StatesWanted
from constitutional_guard.config_io import load_config, save_config
from constitutional_guard.errors import InputError
from constitutional_guard.models.loading import LoadedModel, default_device, encoder_dtype, parse_dtype

HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
HEAD_TENSORS = ("mean", "scale", "coef", "intercept")
HIDDEN_TENSORS = ("hidden_weight", "hidden_bias")
HEAD_KINDS = ("linear", "mlp", "linear+mlp")


@dataclass
class EmbeddingConfig(LabelledConfig):
    """What ``classifier_config.json`` of an embedding classifier holds."""

    kind: str = "embedding"
    window: int = 128
    """Tokens per encoder window."""
    max_windows: int = 8
    """Windows kept per text (its first and last halves); longer texts lose their middle."""
    head: str = "linear"
    """``linear`` (logistic), ``mlp`` (one ReLU hidden layer, then logistic) or ``linear+mlp`` (their average)."""
    base_model: str = ""
    states: dict[str, Any] = field(default_factory=dict)
    """A causal LM's hidden states read beside the encoder (``StatesSettings``); empty: the encoder alone."""
    prompt_weight: float = 0.0
    """Weight w of the prompt alone's P(unsafe) in an exchange's: P(exchange)^(1 − w) · P(prompt)^w (0: the pair
    alone). Needs a head trained on prompts alone too."""
    training: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.states:
            StatesSettings.from_mapping(self.states)
        if self.window < 8:
            raise ValueError(f"window: {self.window} is too small (need ≥ 8)")
        if self.max_windows < 1:
            raise ValueError(f"max_windows: must be at least 1, got {self.max_windows}")
        if self.head not in HEAD_KINDS:
            raise ValueError(f"head: unknown {self.head!r}; known: {', '.join(HEAD_KINDS)}")
        if not 0.0 <= self.prompt_weight < 1.0:
            raise ValueError(f"prompt_weight: {self.prompt_weight} is not in [0, 1)")


def special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a single text (e.g. ``[CLS]`` and ``[SEP]``)."""
    core = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello")["input_ids"]
    start = next((i for i in range(len(full)) if full[i : i + len(core)] == core), 0)
    return list(full[:start]), list(full[start + len(core) :])


class SentenceEncoder:
    """Windowed, pooled text features from a frozen encoder (``AutoModel`` + its tokenizer)."""

    def __init__(self, model: Any, tokenizer: Any, window: int = 128, max_windows: int = 8, batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.window = window
        self.max_windows = max_windows
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self._prefix, self._suffix = special_tokens_around(tokenizer)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, window: int = 128, max_windows: int = 8, dtype: str | torch.dtype | None = None
    ) -> SentenceEncoder:
        """``dtype`` None: bf16 where the hardware runs it natively, else float32 (``encoder_dtype``)."""
        from transformers import AutoModel, AutoTokenizer

        device = default_device()
        resolved = encoder_dtype(device) if dtype is None else parse_dtype(dtype, device)
        model = AutoModel.from_pretrained(path, dtype=resolved).to(device)
        return cls(model, AutoTokenizer.from_pretrained(path), window, max_windows)

    @property
    def dim(self) -> int:
        return 2 * int(self.model.config.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def windows(self, text: str) -> list[list[int]]:
        """Token windows of one text, with the tokenizer's special tokens around each."""
        ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]
        ids = ids or [self.tokenizer.unk_token_id or 0]
        size = self.window - len(self._prefix) - len(self._suffix)
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
        if len(chunks) > self.max_windows:
            half = self.max_windows // 2
            chunks = chunks[: self.max_windows - half] + chunks[-half:] if half else chunks[: self.max_windows]
        return [self._prefix + c + self._suffix for c in chunks]

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        """``[mean, max]`` of the normalised window embeddings, one float32 row per text."""
        owners: list[int] = []
        windows: list[list[int]] = []
        for index, text in enumerate(texts):
            for window in self.windows(text):
                owners.append(index)
                windows.append(window)
        vectors = torch.empty(len(windows), self.dim // 2)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [windows[i] for i in chunk]}, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            states = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            vectors[chunk] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        owner = torch.tensor(owners)
        for index in range(len(texts)):
            rows = vectors[owner == index]
            out[index] = torch.cat([rows.mean(0), rows.max(0).values]).numpy()
        return out


def item_features(encoder: SentenceEncoder, items: list[tuple[str, str | None]], cache: Any = None) -> np.ndarray:
    """``[prompt, response, has_response]`` rows; ``cache`` (a ``FeatureCache``) skips texts seen before."""
    texts = [p for p, _ in items] + [r for _, r in items if r is not None]
    encoded = cache.encode(encoder, texts) if cache is not None else encoder.encode(texts)
    half = encoder.dim
    out = np.zeros((len(items), 2 * half + 1), dtype=np.float32)
    out[:, :half] = encoded[: len(items)]
    cursor = len(items)
    for index, (_, response) in enumerate(items):
        if response is not None:
            out[index, half : 2 * half] = encoded[cursor]
            out[index, -1] = 1.0
            cursor += 1
    return out


def classifier_features(
    encoder: SentenceEncoder,
    states: StateReader | None,
    items: list[tuple[str, str | None]],
    caches: tuple[Any, Any] | None = None,
    answers: Sequence[AnswerStates | None] | None = None,
) -> np.ndarray:
    """The rows a head reads: ``item_features``, then the LM's pooled states when the classifier reads them.
    ``caches``: (encoder cache, states cache), ``FeatureCache``s that skip inputs seen before; ``answers``: per item,
    the answer's states kept by the token source (``StateReader.encode``)."""
    rows = item_features(encoder, items, caches[0] if caches else None)
    if states is None:
        return rows
    values = caches[1].encode(states, items) if caches else states.encode(items, answers)
    return np.hstack([rows, values])


def prompt_alone_rows(
    encoder: SentenceEncoder,
    states: StateReader | None,
    items: list[tuple[str, str | None]],
    x: np.ndarray,
    cache: Any = None,
    answers: Sequence[AnswerStates | None] | None = None,
) -> np.ndarray:
    """The rows of the items' prompts alone, from the items' rows ``x`` (``classifier_features``): the encoder reads
    the prompt apart from the response, so only the response block is cleared; the LM's states, which read both,
    are read again (through ``cache``, a states ``FeatureCache``, when given; else from the prompt's states a token
    source kept, in ``answers``, when they fit)."""
    rows = x.copy()
    rows[:, encoder.dim : 2 * encoder.dim + 1] = 0.0
    if states is not None:
        prompts = [(prompt, None) for prompt, _ in items]
        read = cache.encode(states, prompts) if cache is not None else states.encode(prompts, answers)
        rows[:, 2 * encoder.dim + 1 :] = read
    return rows


def weigh_prompt(rows: np.ndarray, prompt_rows: np.ndarray, weight: float, unsafe_ids: list[int]) -> np.ndarray:
    """Per-label probabilities of exchanges whose P(unsafe) becomes P(exchange)^(1 − w) · P(prompt)^w; the unsafe
    labels share it and the other labels share the rest as they shared theirs (equally where they had nothing)."""
    safe_ids = [i for i in range(rows.shape[1]) if i not in unsafe_ids]
    weighed = rows[:, unsafe_ids].sum(axis=1) ** (1.0 - weight) * prompt_rows[:, unsafe_ids].sum(axis=1) ** weight
    out = np.empty_like(rows)
    out[:, unsafe_ids] = _shares(rows[:, unsafe_ids]) * weighed[:, None]
    out[:, safe_ids] = _shares(rows[:, safe_ids]) * (1.0 - weighed)[:, None]
    return out


def _shares(block: np.ndarray) -> np.ndarray:
    total = block.sum(axis=1, keepdims=True)
    return np.where(total > 0, block / np.where(total > 0, total, 1.0), 1.0 / block.shape[1])


@dataclass(frozen=True)
class Head:
    """Standardise, optionally a ReLU hidden layer, then a (multinomial) logistic output.

    ``coef`` is (1, inputs) for two labels, else (labels, inputs); its inputs are the standardised features, or
    the hidden units when ``hidden_weight`` (units, features) and ``hidden_bias`` (units) are given.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    hidden_weight: np.ndarray | None = None
    hidden_bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        d = self.mean.shape[0]
        if (self.hidden_weight is None) != (self.hidden_bias is None):
            raise ValueError("hidden_weight and hidden_bias come together")
        width = d
        if self.hidden_weight is not None and self.hidden_bias is not None:
            if self.hidden_weight.ndim != 2 or self.hidden_weight.shape[1] != d:
                raise ValueError(f"hidden_weight shape {self.hidden_weight.shape} does not match {d} features")
            if self.hidden_bias.shape != (self.hidden_weight.shape[0],):
                raise ValueError(f"hidden_bias shape {self.hidden_bias.shape} does not match hidden_weight")
            width = self.hidden_weight.shape[0]
        if self.scale.shape != (d,) or self.coef.ndim != 2 or self.coef.shape[1] != width:
            raise ValueError(f"head shapes disagree: mean {self.mean.shape}, scale {self.scale.shape}, "
                             f"coef {self.coef.shape}")
        if self.intercept.shape != (self.coef.shape[0],):
            raise ValueError(f"intercept shape {self.intercept.shape} does not match coef {self.coef.shape}")
        for name in (*HEAD_TENSORS, *HIDDEN_TENSORS):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value).all():
                raise ValueError(f"{name} holds non-finite values")
        if (self.scale <= 0).any():
            raise ValueError("scale must be positive")

    @property
    def kind(self) -> str:
        return "linear" if self.hidden_weight is None else "mlp"

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.coef.shape[0])

    def tensors(self) -> dict[str, np.ndarray]:
        names = HEAD_TENSORS if self.hidden_weight is None else (*HEAD_TENSORS, *HIDDEN_TENSORS)
        return {name: np.ascontiguousarray(getattr(self, name), dtype=np.float32) for name in names}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> Head:
        missing = [name for name in HEAD_TENSORS if name not in tensors]
        if missing:
            raise ValueError(f"missing tensors {missing}")
        present = [name for name in (*HEAD_TENSORS, *HIDDEN_TENSORS) if name in tensors]
        return cls(**{name: tensors[name].astype(np.float64) for name in present})

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) / self.scale
        if self.hidden_weight is not None:
            z = np.maximum(z @ self.hidden_weight.T + self.hidden_bias, 0.0)
        logits = z @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:
            p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class AveragedHead:
    """The mean of its member heads' probabilities (``linear+mlp``: a logistic and an MLP head)."""

    members: tuple[Head, ...]

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ValueError("an averaged head needs at least two members")
        first = self.members[0]
        for member in self.members[1:]:
            if (member.n_features, member.n_outputs) != (first.n_features, first.n_outputs):
                raise ValueError("the members of an averaged head disagree on features or outputs")

    @property
    def kind(self) -> str:
        return "+".join(member.kind for member in self.members)

    @property
    def n_features(self) -> int:
        return self.members[0].n_features

    @property
    def n_outputs(self) -> int:
        return self.members[0].n_outputs

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return np.mean([member.probabilities(features) for member in self.members], axis=0)

    def tensors(self) -> dict[str, np.ndarray]:
        return {f"m{i}.{name}": t for i, member in enumerate(self.members) for name, t in member.tensors().items()}


AnyHead = Head | AveragedHead


def save_head(head: AnyHead, file: Path) -> None:
    from safetensors.numpy import save_file

    from constitutional_guard.atomic import atomic_path

    with atomic_path(file) as tmp:
        save_file(head.tensors(), str(tmp))


def load_head(file: Path) -> AnyHead:
    """A head from ``head.safetensors``, validated (shapes, finite values); errors name the file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not file.exists():
        raise InputError.one(file, "head weights not found")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError.one(file, f"not a readable safetensors file: {exc}") from exc
    try:
        if "m0.mean" not in tensors:
            return Head.from_tensors(tensors)
        count = 1 + max(int(name.split(".", 1)[0][1:]) for name in tensors)
        members = [{k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"m{i}.")} for i in range(count)]
        return AveragedHead(tuple(Head.from_tensors(member) for member in members))
    except ValueError as exc:
        raise InputError.one(file, str(exc)) from exc


class EmbeddingClassifier(ConfigThresholds):
    """Scores prompts and exchanges with a frozen encoder and a trained head."""

    kind = "embedding"

    def __init__(
        self, encoder: SentenceEncoder, head: AnyHead, config: EmbeddingConfig, states: StateReader | None = None
    ):
        if bool(config.states) != (states is not None):
            raise ValueError("the config's states and the state reader come together")
        expected = 2 * encoder.dim + 1 + (states.dim if states is not None else 0)
        if head.n_features != expected:
            source = "the encoder and the LM's states give" if states is not None else "the encoder gives"
            raise ValueError(f"head expects {head.n_features} features, {source} {expected}")
        if head.n_outputs not in (1, len(config.labels)) or (head.n_outputs == 1) != (len(config.labels) == 2):
            raise ValueError(f"head has {head.n_outputs} outputs for {len(config.labels)} labels")
        if head.kind != config.head:
            raise ValueError(f"the config names a {config.head} head but the weights hold a {head.kind} one")
        self.encoder = encoder
        self.states = states
        self.head = head
        self.config = config
        self._unsafe_ids = [config.labels.index(name) for name in config.unsafe_labels]

    @classmethod
    def from_pretrained(cls, path: str | Path, **_: Any) -> EmbeddingClassifier:
        folder = Path(path)
        config = load_config(EmbeddingConfig, folder / CONFIG_NAME)
        head = load_head(folder / HEAD_FILE)
        if not (folder / ENCODER_DIR).is_dir():
            raise InputError.one(folder / ENCODER_DIR, "encoder folder not found")
        encoder = SentenceEncoder.from_pretrained(folder / ENCODER_DIR, config.window, config.max_windows)
        states = None
        if config.states:
            try:
                states = StateReader.load(StatesSettings.from_mapping(config.states))
            except ValueError as exc:
                raise InputError.one(folder / CONFIG_NAME, str(exc)) from exc
        try:
            return cls(encoder, head, config, states)
        except ValueError as exc:
            raise InputError.one(folder / HEAD_FILE, str(exc)) from exc

    def save_pretrained(self, path: str | Path, encoder_source: str | Path | None = None) -> None:
        """Write config, head and encoder; ``encoder_source`` copies a saved encoder folder instead of re-saving."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / ENCODER_DIR
        if encoder_source is not None and Path(encoder_source).resolve() != target.resolve():
            shutil.copytree(encoder_source, target, dirs_exist_ok=True)
        elif encoder_source is None:
            if self.encoder.dtype != torch.float32:
                raise ValueError(f"the encoder runs in {self.encoder.dtype}: save from its source folder instead")
            self.encoder.model.save_pretrained(target)
            self.encoder.tokenizer.save_pretrained(target)
        save_head(self.head, folder / HEAD_FILE)
        self.save_config(folder)

    def save_config(self, path: str | Path) -> None:
        save_config(self.config, Path(path) / CONFIG_NAME)

    def score(
        self, prompt: str, response: str | None = None, answer_states: AnswerStates | None = None
    ) -> ClassifierScore:
        """``answer_states``: the answer's states as its token source kept them (read again unless they are these)."""
        return self.score_batch([(prompt, response)], [answer_states])[0]

    def wanted_states(self, lm: LoadedModel) -> StatesWanted | None:
        """The answer states a token source running ``lm`` should keep for this classifier (None: it reads no states,
        or another model's)."""
        return self.states.wanted_states(lm) if self.states is not None else None

    def features(
        self, items: list[tuple[str, str | None]], caches: tuple[Any, Any] | None = None,
        answers: Sequence[AnswerStates | None] | None = None,
    ) -> np.ndarray:
        """``classifier_features`` of this classifier's encoder and states."""
        return classifier_features(self.encoder, self.states, items, caches, answers)

    def probabilities(
        self, items: list[tuple[str, str | None]], answers: Sequence[AnswerStates | None] | None = None,
        caches: tuple[Any, Any] | None = None,
    ) -> np.ndarray:
        """Per-label probabilities; ``answers`` and ``caches`` as for ``features``."""
        x = self.features(items, caches, answers)
        rows = self.head.probabilities(x)
        exchanges = [i for i, (_, response) in enumerate(items) if response is not None]
        if not self.config.prompt_weight or not exchanges:
            return rows
        alone_rows = self.prompt_alone(
            [items[i] for i in exchanges], x[exchanges], caches[1] if caches else None,
            [answers[i] for i in exchanges] if answers is not None else None,
        )
        alone = self.head.probabilities(alone_rows)
        rows[exchanges] = weigh_prompt(rows[exchanges], alone, self.config.prompt_weight, self._unsafe_ids)
        return rows

    def prompt_alone(
        self, items: list[tuple[str, str | None]], x: np.ndarray, cache: Any = None,
        answers: Sequence[AnswerStates | None] | None = None,
    ) -> np.ndarray:
        """``prompt_alone_rows`` of this classifier's encoder and states (``cache``: a states ``FeatureCache``)."""
        return prompt_alone_rows(self.encoder, self.states, items, x, cache, answers)

    def score_batch(
        self, items: list[tuple[str, str | None]], answers: Sequence[AnswerStates | None] | None = None,
        caches: tuple[Any, Any] | None = None,
    ) -> list[ClassifierScore]:
        if not items:
            return []
        probabilities = self.probabilities(items, answers, caches).tolist()
        return self.scores_from_probabilities(items, probabilities, self._unsafe_ids)
