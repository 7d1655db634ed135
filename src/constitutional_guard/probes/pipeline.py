"""End to end: corpus splits → cached activations → probe fit (train) → smoother (validation) →
escalation threshold (calibration) → held-out metrics (test)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from constitutional_guard.activations import ActivationSet, CaptureSettings, capture, template_hash
from constitutional_guard.data.corpus import split_path
from constitutional_guard.data.io import read_records
from constitutional_guard.data.schema import SPLITS, Record
from constitutional_guard.errors import InputError
from constitutional_guard.metrics import auroc, threshold_sweep, tpr_at_fpr
from constitutional_guard.models.loading import LoadedModel
from constitutional_guard.probes.calibration import choose_smoother, escalation_metrics
from constitutional_guard.probes.probe import LinearProbe, ProbeConfig, fit_logistic
from constitutional_guard.probes.training import build_examples, record_labels, token_scores
from constitutional_guard.sampling import sample_stratified

FPR_TARGETS = (0.01, 0.05)


@dataclass
class Split:
    """The records of one split and their captured activations."""

    records: list[Record]
    acts: ActivationSet

    @property
    def labels(self) -> np.ndarray:
        return record_labels(self.records)

    def exchanges(self) -> np.ndarray:
        """Indices of records with a (non-empty) captured response."""
        return np.flatnonzero(self.acts.response_lengths() > 0)


def split_file(data_dir: str | Path, split: str, scheme: str = "binary") -> Path:
    """``DIR/<scheme>/<split>.jsonl`` (a corpus from ``cguard data build``) or ``DIR/<split>.jsonl``."""
    root = Path(data_dir)
    for candidate in (split_path(root, split, scheme), root / f"{split}.jsonl"):
        if candidate.exists():
            return candidate
    raise InputError.one(root, f"no {split} split: expected {scheme}/{split}.jsonl or {split}.jsonl")


def sample_records(records: list[Record], limit: int | None, seed: int = 0) -> list[Record]:
    """At most ``limit`` records, stratified by label and by exchange / prompt-only, deterministically."""
    if limit is None or len(records) <= limit:
        return records
    chosen = sample_stratified(records, limit, seed, key=lambda r: (r.is_unsafe, bool(r.response)))
    return sorted(chosen, key=lambda r: r.id)


def load_splits(
    data_dir: str | Path,
    splits: Sequence[str] = SPLITS,
    max_records: dict[str, int | None] | None = None,
    max_prompts: int | None = None,
    seed: int = 0,
    exchange_sources: Sequence[str] | None = None,
) -> dict[str, list[Record]]:
    """Read the named splits of a corpus, capping each split's exchanges and prompt-only records.

    ``max_records`` caps the exchanges of each split, ``max_prompts`` its prompt-only records (0 drops them);
    ``exchange_sources`` keeps only exchanges of those sources (e.g. the target model's own generations).
    Response-prefix records (``meta.prefix_of``) are dropped: every prefix of a full exchange is already
    captured, token by token, from the exchange itself.
    """
    out = {}
    for split in splits:
        records = [r for r in read_records(split_file(data_dir, split)) if "prefix_of" not in r.meta]
        exchanges = [r for r in records if r.response and (exchange_sources is None or r.source in exchange_sources)]
        exchanges = sample_records(exchanges, (max_records or {}).get(split), seed)
        prompts = sample_records([r for r in records if not r.response], max_prompts, seed)
        out[split] = sorted(exchanges + prompts, key=lambda r: r.id)
    return out


def capture_splits(
    lm: LoadedModel, records: dict[str, list[Record]], settings: CaptureSettings, progress=None
) -> dict[str, Split]:
    """Capture (or read cached) activations for each split."""
    out = {}
    for name, recs in records.items():
        report = (lambda done, total, name=name: progress(name, done, total)) if progress else None
        out[name] = Split(recs, capture(lm, recs, settings, progress=report))
    return out


def fit_probe(
    splits: dict[str, Split],
    layers: Sequence[int],
    combine: str = "concat",
    position: str = "response_tokens",
    ramp_tokens: int = 8,
    **fit_options: Any,
) -> LinearProbe:
    """Fit a probe on the train split, early-stopped on validation (no smoother or threshold yet)."""
    train = splits["train"]
    config = ProbeConfig(
        model_id=train.acts.model_id,
        hidden_size=train.acts.hidden_size,
        layers=list(layers),
        combine=combine,
        token_position=position,
    )
    probe = LinearProbe(config)
    tr = build_examples(train.acts, train.records, layers, position, ramp_tokens)
    val = splits.get("validation")
    va = build_examples(val.acts, val.records, layers, position, ramp_tokens) if val else None
    fit_logistic(
        probe, tr.features, tr.labels, tr.weights,
        va.features if va else None, va.labels if va else None, va.weights if va else None, **fit_options,
    )
    probe.config.training.update(ramp_tokens=ramp_tokens, train_examples=len(tr), train_records=len(train.records))
    return probe


def exchange_scores(probe: LinearProbe, split: Split) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels and per-token score sequences of the split's exchanges."""
    keep = split.exchanges()
    scores = token_scores(probe, split.acts)
    return split.labels[keep], [scores[i] for i in keep]


def calibrate_probe(probe: LinearProbe, splits: dict[str, Split], target_rate: float) -> LinearProbe:
    """Choose the smoother on validation and the escalation threshold on calibration (in place)."""
    val_y, val_seq = exchange_scores(probe, splits["validation"])
    cal_y, cal_seq = exchange_scores(probe, splits["calibration"])
    choice = choose_smoother(val_y, val_seq, cal_y, cal_seq, target_rate)
    probe.config.smoother = choice.kind
    probe.config.smoother_params = dict(choice.params)
    probe.config.escalation_threshold = choice.threshold
    probe.config.target_escalation_rate = target_rate
    probe.config.calibration = {
        "split": "calibration",
        "metrics": choice.calibration.as_dict(),
        "validation_candidates": [
            {k: v for k, v in row.items() if k not in ("kind", "params")} for row in choice.validation
        ],
    }
    return probe


def train_probe(
    lm: LoadedModel,
    splits: dict[str, Split],
    layers: Sequence[int],
    combine: str = "concat",
    position: str = "response_tokens",
    target_rate: float = 0.1,
    ramp_tokens: int = 8,
    **fit_options: Any,
) -> LinearProbe:
    """Fit on train, early-stop on validation, choose smoother and escalation threshold, stamp the model."""
    probe = fit_probe(splits, layers, combine, position, ramp_tokens, **fit_options)
    probe.config.model_id = lm.name
    probe.config.template_hash = template_hash(lm)
    probe.config.training["split_sizes"] = {name: len(s.records) for name, s in splits.items()}
    return calibrate_probe(probe, splits, target_rate)


def final_token_metrics(probe: LinearProbe, calibration: Split, test: Split) -> dict[str, Any]:
    """AUROC and TPR at 1 % / 5 % FPR on the test exchanges' final tokens (thresholds from calibration)."""
    def scored(split: Split) -> tuple[np.ndarray, np.ndarray]:
        keep = split.exchanges() if len(split.exchanges()) else np.arange(len(split.records))
        return split.labels[keep], probe.predict_proba(split.acts.final_features(probe.layers)[keep])

    cal_y, cal_s = scored(calibration)
    test_y, test_s = scored(test)
    sweep = threshold_sweep(cal_y, cal_s, test_y, test_s, FPR_TARGETS)
    keep = test.exchanges() if len(test.exchanges()) else np.arange(len(test.records))
    sources = np.array([test.records[i].source for i in keep])
    return {
        "n": len(test_y),
        "n_unsafe": int(test_y.sum()),
        "auroc": auroc(test_y, test_s),
        "by_source": {
            name: {"n": int(m.sum()), "n_unsafe": int(test_y[m].sum()), "auroc": auroc(test_y[m], test_s[m])}
            for name in sorted(set(sources))
            if (m := sources == name).any()
        },
        "at_fpr": [
            {"target_fpr": row.target_fpr, "threshold": row.threshold, "tpr": row.test.tpr, "fpr": row.test.fpr,
             "oracle_tpr": tpr_at_fpr(test_y, test_s, row.target_fpr)}
            for row in sweep
        ],
    }


def evaluate_probe(probe: LinearProbe, splits: dict[str, Split], split: str = "test") -> dict[str, Any]:
    """Held-out metrics: final-token AUROC / TPR at FPR, and streaming escalation over response prefixes."""
    if split == "train":
        raise ValueError("metrics are only computed on held-out splits")
    labels, sequences = exchange_scores(probe, splits[split])
    config = probe.config

    def escalation(mask: np.ndarray) -> dict[str, Any]:
        chosen = [seq for seq, keep in zip(sequences, mask, strict=True) if keep]
        metrics = escalation_metrics(
            labels[mask], chosen, config.smoother, config.smoother_params, config.escalation_threshold
        )
        return metrics.as_dict()

    sources = np.array([splits[split].records[i].source for i in splits[split].exchanges()])
    by_source = {name: escalation(sources == name) for name in sorted(set(sources))}
    return {
        "split": split,
        "layers": probe.layers,
        "combine": config.combine,
        "final_token": final_token_metrics(probe, splits["calibration"], splits[split]),
        "prefix": {
            "smoother": config.smoother,
            "params": config.smoother_params,
            **escalation(np.ones(len(labels), dtype=bool)),
            "by_source": by_source,
        },
    }
