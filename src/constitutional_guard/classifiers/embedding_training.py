"""Train an embedding classifier: encode once (cached on disk), fit weighted heads, tune them on validation.

Kind-specific settings (``TrainOptions.extra``): ``prefix_cuts``, ``max_validation``, ``exclude_sources`` and
``inputs`` as for the exchange classifier; ``head`` (``linear``, logistic regression; ``mlp``, one ReLU hidden
layer of ``hidden`` units, 256 by default; or ``linear+mlp``, the average of both, each member tuned on its own
default grid: see docs/results/guard_quality.md for how they compare on held-out sources); ``states_model`` and
``states_layers`` (a causal LM whose pooled hidden states at those layers go beside the encoder's features, e.g.
the guarded model at its probe's layer; ``states_max_length``, ``states_max_response_tokens`` and
``states_dtype`` as in ``StatesSettings``); ``C``
(comma-separated regularisation settings tried on the validation split: inverse strengths for a linear head,
default 0.03,0.1,0.3,1; L2 penalties for an MLP, default 0.01; not for ``linear+mlp``);
``source_balance`` (default true: within a label, a source's
weight grows with the square root of its size rather than linearly, so no large source's style decides the
label); ``constitution_share`` (default 0: within each label, the share of weight on the constitution's own
examples; see ``sample_weights``); ``window`` and ``max_windows`` (see ``EmbeddingConfig``).
``prompt_weight`` (the weight of the prompt alone's P(unsafe) in an exchange's, see ``EmbeddingConfig``; default
0.5 when the classifier trains on prompts and exchanges together, the only inputs that allow it).
``TrainOptions.max_length`` is not used. ``cross_source_scores`` refits a trained classifier's head without each
fold of source families, for thresholds that hold on new sources.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from constitutional_guard.atomic import atomic_path, write_json_atomic
from constitutional_guard.classifiers.base import TrainOptions
from constitutional_guard.classifiers.embedding import (
    HEAD_KINDS,
    AnyHead,
    AveragedHead,
    EmbeddingClassifier,
    EmbeddingConfig,
    Head,
    SentenceEncoder,
    classifier_features,
)
from constitutional_guard.classifiers.exchange_training import training_records
from constitutional_guard.classifiers.exchange_training import training_settings as exchange_settings
from constitutional_guard.classifiers.input_format import record_prompt
from constitutional_guard.classifiers.lm_states import StateReader, StatesSettings
from constitutional_guard.data.schema import CONSTITUTION_SOURCE, LABELS, Record, family_folds, family_of, stable_id
from constitutional_guard.errors import InputError
from constitutional_guard.metrics import auroc
from constitutional_guard.models.loading import resolve_model
from constitutional_guard.paths import cache_dir

DEFAULT_BASE_MODEL = "minilm-l6"
DEFAULT_GRIDS: dict[str, tuple[float, ...]] = {"linear": (0.03, 0.1, 0.3, 1.0), "mlp": (0.01,)}
AVERAGED = "linear+mlp"
DEFAULT_HEAD = "linear+mlp"
"""Chosen on leave-source-out AUROC (docs/results/guard_quality.md): above either member, for prompts and exchanges."""
DEFAULT_HIDDEN = 256
DEFAULT_CONSTITUTION_SHARE = 0.0
DEFAULT_PROMPT_WEIGHT = 0.5
"""For classifiers of prompts and exchanges: the geometric mean of the pair's and the prompt's P(unsafe), fixed
before measuring; leave-source-out on exchanges rises from 0.733 to 0.800 (docs/results/guard_quality.md)."""
SHARED_KEYS = ("prefix_cuts", "max_validation", "exclude_sources", "inputs")
STATES_KEYS = ("states_model", "states_layers", "states_max_length", "states_max_response_tokens", "states_dtype")
EXTRA_KEYS = {
    *SHARED_KEYS, *STATES_KEYS, "C", "head", "hidden", "source_balance", "constitution_share", "window", "max_windows",
    "prompt_weight",
}


class FeatureCache:
    """Feature rows of one encoder (or LM state) setting, kept in memory and in ``features.safetensors`` +
    ``keys.json``; an input is a text (an encoder's) or a (prompt, response) item (a ``StateReader``'s)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.rows: dict[str, np.ndarray] = self._stored()
        self._dirty = False

    def _stored(self) -> dict[str, np.ndarray]:
        """Rows on disk; an unreadable or mismatched store counts as empty (it is only a cache)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        keys_file, features_file = self.folder / "keys.json", self.folder / "features.safetensors"
        if not (keys_file.exists() and features_file.exists()):
            return {}
        try:
            keys = json.loads(keys_file.read_text(encoding="utf-8"))
            matrix = load_file(str(features_file))["features"]
        except (OSError, ValueError, KeyError, SafetensorError):
            return {}
        return dict(zip(keys, matrix, strict=True)) if len(keys) == len(matrix) else {}

    @classmethod
    def for_encoder(cls, base_model: str, encoder: SentenceEncoder) -> FeatureCache:
        """The cache of ``encoder``'s setting (model, window, windows kept, dtype)."""
        key = stable_id(
            resolve_model(base_model, prepare=False), str(encoder.window), str(encoder.max_windows), str(encoder.dtype)
        )
        return cls(cache_dir() / "features" / key)

    @classmethod
    def for_states(cls, reader: StateReader) -> FeatureCache:
        """The cache of ``reader``'s setting (model, dtype, chat template, layers, lengths)."""
        return cls(cache_dir() / "features" / f"states-{stable_id(*reader.cache_key())}")

    @staticmethod
    def key(value: str | tuple[str, str | None]) -> str:
        return stable_id(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), length=20)

    def encode(self, model: Any, inputs: Sequence[Any]) -> np.ndarray:
        """``model.encode`` rows of ``inputs`` (texts or items), computing only those not stored yet."""
        keys = [self.key(value) for value in inputs]
        todo = list({k: value for k, value in zip(keys, inputs, strict=True) if k not in self.rows}.items())
        for start in range(0, len(todo), 512):
            chunk = todo[start : start + 512]
            for (key, _), row in zip(chunk, model.encode([value for _, value in chunk]), strict=True):
                self.rows[key] = row.astype(np.float16)
            self._dirty = True
        return np.stack([self.rows[k].astype(np.float32) for k in keys]) if keys else np.zeros((0, model.dim))

    def save(self) -> None:
        if not self._dirty:
            return
        from safetensors.numpy import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows = {**self._stored(), **self.rows}  # keep rows another process stored meanwhile
        keys = list(self.rows)
        with atomic_path(self.folder / "features.safetensors") as tmp:
            save_file({"features": np.stack([self.rows[k] for k in keys])}, str(tmp))
        write_json_atomic(self.folder / "keys.json", keys)
        self._dirty = False


def record_items(records: Sequence[Record]) -> list[tuple[str, str | None]]:
    return [(record_prompt(r), r.response) for r in records]


def sample_weights(
    records: Sequence[Record], source_balance: bool = True, constitution_share: float = 0.0
) -> np.ndarray:
    """Each label gets equal total weight; within a label a source's total grows with √size when balancing.

    ``constitution_share`` (0 to 1): within each label, the share of its weight that the constitution's own
    examples (source ``constitution``, augmented copies included) carry, the other sources sharing the rest as
    above. The policy's examples are few beside public sets; this keeps them from being drowned out.
    """
    if not 0.0 <= constitution_share < 1.0:
        raise ValueError(f"constitution_share must lie in [0, 1), got {constitution_share}")
    labels = np.array([r.binary_label for r in records])
    per_source = Counter((r.binary_label, r.source) for r in records)
    raw = np.array(
        [1.0 / np.sqrt(per_source[(r.binary_label, r.source)]) if source_balance else 1.0 for r in records]
    )
    policy = np.array([r.source == CONSTITUTION_SOURCE for r in records])
    out = np.zeros(len(records))
    target = len(records) / max(len(set(labels.tolist())), 1)
    for label in set(labels.tolist()):
        mask = labels == label
        groups = [(mask & policy, constitution_share), (mask & ~policy, 1.0 - constitution_share)]
        if constitution_share == 0.0 or not all(group.any() for group, _ in groups):
            groups = [(mask, 1.0)]
        for group, share in groups:
            out[group] = raw[group] * share * target / raw[group].sum()
    return out


def fit_head(
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    x_val: np.ndarray,
    y_val_unsafe: np.ndarray,
    unsafe_ids: Sequence[int],
    grid: Sequence[float] | None = None,
    seed: int = 0,
    kind: str = DEFAULT_HEAD,
    hidden: int = DEFAULT_HIDDEN,
) -> tuple[AnyHead, dict[str, Any]]:
    """A head for each regularisation setting in ``grid``; the one with the best validation AUROC of P(unsafe)
    is kept. ``kind``: ``linear`` (logistic regression, grid of C), ``mlp`` (grid of L2 penalties) or
    ``linear+mlp`` (both, each on its default grid, averaged)."""
    if kind == AVERAGED:
        if grid is not None:
            raise ValueError(f"C: a {AVERAGED} head tunes each member on its own default grid; leave C unset")
        fitted = [
            _fit_tuned(x, y, weights, x_val, y_val_unsafe, unsafe_ids, DEFAULT_GRIDS[member], seed, member, hidden)
            for member in ("linear", "mlp")
        ]
        head = AveragedHead(tuple(member for member, _ in fitted))
        value = _validation_auroc(head, x_val, y_val_unsafe, unsafe_ids)
        return head, {"head": kind, "members": [info for _, info in fitted], "validation_auroc": value}
    return _fit_tuned(x, y, weights, x_val, y_val_unsafe, unsafe_ids, grid or DEFAULT_GRIDS[kind], seed, kind, hidden)


def _fit_tuned(
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    x_val: np.ndarray,
    y_val_unsafe: np.ndarray,
    unsafe_ids: Sequence[int],
    grid: Sequence[float],
    seed: int,
    kind: str,
    hidden: int,
) -> tuple[Head, dict[str, Any]]:
    """One ``linear`` or ``mlp`` head per setting in ``grid``; the best on validation is kept."""
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), 1e-6)
    xs = (x - mean) / scale
    tried: dict[str, float | None] = {}
    best: tuple[float, Head] | None = None
    for c in grid:
        head = _fit_one(xs, y, weights, mean, scale, kind, c, hidden, seed)
        value = _validation_auroc(head, x_val, y_val_unsafe, unsafe_ids)
        tried[str(c)] = value
        if best is None or (value is not None and value > best[0]):
            best = (value if value is not None else -1.0, head)
    assert best is not None
    return best[1], {"head": kind, "C_tried": tried, "C": max(tried, key=lambda k: tried[k] or -1.0)}


def _validation_auroc(
    head: AnyHead, x_val: np.ndarray, y_val_unsafe: np.ndarray, unsafe_ids: Sequence[int]
) -> float | None:
    if not len(x_val):
        return None
    return auroc(y_val_unsafe, head.probabilities(x_val)[:, list(unsafe_ids)].sum(axis=1))


def _fit_one(
    xs: np.ndarray, y: np.ndarray, weights: np.ndarray, mean: np.ndarray, scale: np.ndarray, kind: str, c: float,
    hidden: int, seed: int,
) -> Head:
    """One head on standardised features ``xs``."""
    if kind == "linear":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(xs, y, sample_weight=weights)
        return Head(mean, scale, model.coef_.astype(np.float64), model.intercept_.astype(np.float64))
    if kind != "mlp":
        raise ValueError(f"head: unknown {kind!r}; known: {', '.join(DEFAULT_GRIDS)}")
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(
        hidden_layer_sizes=(hidden,), alpha=c, early_stopping=True, max_iter=100, random_state=seed
    ).fit(xs, y, sample_weight=weights)
    first, output = model.coefs_
    return Head(
        mean,
        scale,
        output.T.astype(np.float64),
        model.intercepts_[1].astype(np.float64),
        first.T.astype(np.float64),
        model.intercepts_[0].astype(np.float64),
    )


def _settings(extra: dict[str, Any]) -> dict[str, Any]:
    """The shared data settings parsed as for the exchange classifier, plus this kind's own."""
    unknown = set(extra) - EXTRA_KEYS
    if unknown:
        raise ValueError(f"unknown embedding training settings {sorted(unknown)}; known: {sorted(EXTRA_KEYS)}")
    shared = exchange_settings({k: v for k, v in extra.items() if k in SHARED_KEYS})
    head = str(extra.get("head", DEFAULT_HEAD))
    if head not in HEAD_KINDS:
        raise ValueError(f"head: {head!r} is not one of {', '.join(HEAD_KINDS)}")
    if head == AVERAGED and "C" in extra:
        raise ValueError(f"C: a {AVERAGED} head tunes each member on its own default grid; leave C unset")
    grid = extra.get("C", DEFAULT_GRIDS.get(head))
    share = float(extra.get("constitution_share", DEFAULT_CONSTITUTION_SHARE))
    if not 0.0 <= share < 1.0:
        raise ValueError(f"constitution_share: {share} is not in [0, 1)")
    balance = extra.get("source_balance", True)
    if not isinstance(balance, bool):  # bool("false") would be True
        raise ValueError(f"source_balance: expected true or false, got {balance!r}")
    return {
        "prompt_weight": prompt_weight(shared["inputs"], extra.get("prompt_weight")),
        **{k: shared[k] for k in SHARED_KEYS},
        "states": _states_settings(extra),
        "head": head,
        "hidden": int(extra.get("hidden", DEFAULT_HIDDEN)),
        "C": None if grid is None else tuple(
            float(c) for c in (str(grid).split(",") if isinstance(grid, str | float | int) else grid)
        ),
        "source_balance": balance,
        "constitution_share": share,
        "window": int(extra.get("window", 128)),
        "max_windows": int(extra.get("max_windows", 8)),
    }


def prompt_weight(inputs: str, given: Any = None) -> float:
    """``prompt_weight`` of a classifier trained on ``inputs``: ``given``, else the default for those inputs."""
    if given is None:
        return DEFAULT_PROMPT_WEIGHT if inputs == "all" else 0.0
    try:
        weight = float(given)
    except (TypeError, ValueError):
        raise ValueError(f"prompt_weight: expected a number in [0, 1), got {given!r}") from None
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"prompt_weight: {weight} is not in [0, 1)")
    if weight and inputs != "all":
        raise ValueError(f"prompt_weight: {weight} needs a head that also learns prompts alone (inputs=all, "
                         f"not {inputs})")
    return weight


def _states_settings(extra: dict[str, Any]) -> StatesSettings | None:
    """``states_*`` settings as ``StatesSettings`` (None without ``states_model``)."""
    given = {key.removeprefix("states_"): extra[key] for key in STATES_KEYS if key in extra}
    if not given:
        return None
    if "model" not in given or "layers" not in given:
        raise ValueError("states_model and states_layers come together: the causal LM and the layers to read, "
                         "e.g. states_model=smollm2-135m-instruct states_layers=18")
    for key in ("max_length", "max_response_tokens"):
        if key in given:
            given[key] = int(given[key])
    return StatesSettings.from_mapping(given)


def feature_caches(base_model: str, encoder: SentenceEncoder, states: StateReader | None) -> tuple[Any, Any]:
    """The ``FeatureCache``s of an encoder setting and, when read, of a state setting."""
    return FeatureCache.for_encoder(base_model, encoder), FeatureCache.for_states(states) if states else None


def save_caches(caches: tuple[Any, Any]) -> None:
    for cache in caches:
        if cache is not None:
            cache.save()


def train(options: TrainOptions) -> Path:
    """Fit the head on the corpus's train split and save a standalone classifier directory to ``out_dir``."""
    settings = _settings(options.extra)
    labels = list(LABELS[options.label_scheme])
    train_records, val_records = training_records(options, settings)
    config = EmbeddingConfig(
        label_scheme=options.label_scheme,
        labels=labels,
        unsafe_labels=[labels[-1]],
        window=settings["window"],
        max_windows=settings["max_windows"],
        head=settings["head"],
        base_model=options.base_model,
        prompt_weight=settings["prompt_weight"],
    )
    base = resolve_model(options.base_model)
    encoder = SentenceEncoder.from_pretrained(base, config.window, config.max_windows)
    states = StateReader.load(settings["states"]) if settings["states"] else None
    if states is not None:
        config.states = states.recorded().to_mapping()
    caches = feature_caches(options.base_model, encoder, states)
    x = classifier_features(encoder, states, record_items(train_records), caches)
    x_val = classifier_features(encoder, states, record_items(val_records), caches)
    save_caches(caches)
    y = np.array([r.label_id for r in train_records])
    if len(set(y.tolist())) < 2:
        raise InputError.one(options.data_dir, "the train split needs at least two labels")
    unsafe_ids = [labels.index(config.unsafe_labels[0])]
    head, chosen = fit_head(
        x,
        y,
        sample_weights(train_records, settings["source_balance"], settings["constitution_share"]),
        x_val,
        np.array([int(r.is_unsafe) for r in val_records]),
        unsafe_ids,
        settings["C"],
        options.seed,
        settings["head"],
        settings["hidden"],
    )
    config.training = {
        "data_dir": str(options.data_dir),
        "train_examples": len(train_records),
        "train_labels": dict(Counter(r.label for r in train_records)),
        "validation_examples": len(val_records),
        "encoder_dtype": str(encoder.dtype).removeprefix("torch."),
        "excluded_sources": settings["exclude_sources"],
        "inputs": settings["inputs"],
        "source_balance": settings["source_balance"],
        "constitution_share": settings["constitution_share"],
        "max_train": options.max_train,
        "max_validation": settings["max_validation"],
        "prefix_cuts": list(settings["prefix_cuts"]),
        "hidden": settings["hidden"],
        "seed": options.seed,
        **chosen,
    }
    classifier = EmbeddingClassifier(encoder, head, config, states)
    classifier.save_pretrained(options.out_dir, encoder_source=base)
    return Path(options.out_dir)


def _refit(training: dict[str, Any], x: np.ndarray, y: np.ndarray, weights: np.ndarray, seed: int) -> AnyHead:
    """The head kind and regularisation a trained classifier chose, fitted again on other rows (no tuning)."""
    members = training.get("members") or [training]
    hidden = int(training.get("hidden", DEFAULT_HIDDEN))
    empty = np.zeros((0, x.shape[1]), dtype=x.dtype)
    fitted = [
        _fit_tuned(x, y, weights, empty, np.zeros(0), [1], (float(m["C"]),), seed, m["head"], hidden)[0]
        for m in members
    ]
    return AveragedHead(tuple(fitted)) if len(fitted) > 1 else fitted[0]


def cross_source_scores(
    classifier: EmbeddingClassifier, records: Sequence[Record], folds: int = 5
) -> np.ndarray:
    """P(unsafe) of each record as if its source had never been seen: the classifier's head is refitted ``folds``
    times on its own training data, each time without one fold of source families (families dealt to folds by
    size), and each record is scored by the refit that left its family out. Records of a family the classifier
    never trained on keep the classifier's own score.

    Thresholds chosen on these scores hold their false-block target on traffic from new sources; chosen on the
    classifier's own scores, they hold it only on the sources it was trained on (docs/results/guard_quality.md).
    """
    training = classifier.config.training or {}
    if not training.get("data_dir"):
        raise ValueError("cross-source scores need the classifier's training record (train it with this version)")
    extra = {
        key: training[key]
        for key in ("max_validation", "prefix_cuts", "source_balance", "constitution_share")
        if training.get(key) is not None
    }
    if training.get("excluded_sources"):
        extra["exclude_sources"] = ",".join(training["excluded_sources"])
    extra["inputs"] = training.get("inputs", "all")
    options = TrainOptions(
        data_dir=training["data_dir"],
        out_dir="",
        base_model=classifier.config.base_model,
        max_train=training.get("max_train"),
        seed=int(training.get("seed", 0)),
        label_scheme=classifier.config.label_scheme,
    )
    settings = _settings(extra)
    train_records, _ = training_records(options, settings)
    families = np.array([family_of(r) for r in train_records])
    fold_of = family_folds(families.tolist(), folds)
    config = classifier.config
    caches = feature_caches(config.base_model, classifier.encoder, classifier.states)
    x = classifier.features(record_items(train_records), caches)
    x_items = classifier.features(record_items(records), caches)
    save_caches(caches)
    y = np.array([r.label_id for r in train_records])
    item_families = [family_of(r) for r in records]
    unsafe_ids = [classifier.config.labels.index(name) for name in classifier.config.unsafe_labels]
    scores = classifier.head.probabilities(x_items)[:, unsafe_ids].sum(axis=1)
    for fold in range(folds):
        left_out = {family for family, k in fold_of.items() if k == fold}
        rows = [i for i, family in enumerate(item_families) if family in left_out]
        if not rows:
            continue
        keep = ~np.isin(families, list(left_out))
        kept = [r for r, k in zip(train_records, keep, strict=True) if k]
        weights = sample_weights(kept, settings["source_balance"], settings["constitution_share"])
        head = _refit(training, x[keep], y[keep], weights, options.seed)
        scores[rows] = head.probabilities(x_items[rows])[:, unsafe_ids].sum(axis=1)
    return scores


def cached_scores(classifier: EmbeddingClassifier, records: Sequence[Record]) -> list[float]:
    """``score_records`` through the feature caches of the classifier's setting: what its training (or an earlier
    scoring) encoded is not encoded again."""
    if not records:
        return []
    caches = feature_caches(classifier.config.base_model, classifier.encoder, classifier.states)
    scores = [float(score.score) for score in classifier.score_batch(record_items(records), caches=caches)]
    save_caches(caches)
    return scores


def cross_source_calibration_scores(
    classifier: EmbeddingClassifier, records: Sequence[Record], folds: int = 5
) -> tuple[list[float], str]:
    """Calibration scores whose prompts come from ``cross_source_scores`` (exchanges keep the classifier's own),
    and a line saying so for the classifier's calibration record."""
    prompts = [i for i, r in enumerate(records) if r.response is None]
    exchanges = [i for i, r in enumerate(records) if r.response is not None]
    scores = [0.0] * len(records)
    for i, value in zip(prompts, cross_source_scores(classifier, [records[i] for i in prompts], folds), strict=True):
        scores[i] = float(value)
    for i, value in zip(exchanges, cached_scores(classifier, [records[i] for i in exchanges]), strict=True):
        scores[i] = value
    return scores, f"prompts: cross-source, {folds} folds of sources; exchanges: the classifier"
