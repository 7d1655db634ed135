"""Score systems on held-out datasets (resumably) and compute the model-card table and threshold sweep.

Thresholds for the sweep are chosen per system on the calibration data and applied to each test set;
an oracle row (threshold chosen on the test set itself) is reported only as such.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constitutional_guard.evaluation.datasets import EvalDataset
from constitutional_guard.evaluation.systems import System
from constitutional_guard.metrics import (
    DEFAULT_FPR_TARGETS,
    binary_metrics,
    bootstrap_cis,
    threshold_at_fpr,
    tpr_at_fpr,
)

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class EvalOptions:
    fpr_targets: tuple[float, ...] = DEFAULT_FPR_TARGETS
    ci_max_n: int = 5000
    """Bootstrap confidence intervals on sets of at most this many records (0 disables them)."""
    n_boot: int = 1000
    seed: int = 0
    oracle: bool = True
    """Also report the oracle TPR at each target FPR (threshold chosen on the test set, labelled so)."""
    chunk_size: int = 32
    """Records scored between two writes of the score cache (what a killed run loses at most)."""


@dataclass
class ScoredSet:
    """One system's scores on one dataset, aligned with its records."""

    dataset: EvalDataset
    scores: list[float] = field(default_factory=list)


def system_fingerprint(system: System) -> str:
    """Changes with the system's description and with any file of its artifact directory (name, size, mtime)."""
    digest = hashlib.sha256(json.dumps(system.info, sort_keys=True, default=str).encode())
    path = system.info.get("path")
    if path and Path(path).is_dir():
        for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def score_cache_path(out_dir: Path, system: System, dataset: EvalDataset) -> Path:
    """Cached scores of one system on one dataset: a retrained or edited artifact never reuses old scores."""
    folder = f"{system.name}-{system_fingerprint(system)}"
    return out_dir / "scores" / folder / f"{dataset.name.replace('/', '_')}-{dataset.sha256[:12]}.jsonl"


def score_dataset(
    system: System,
    dataset: EvalDataset,
    cache: Path | None,
    chunk_size: int = 32,
    advance: ProgressFn | None = None,
) -> list[float]:
    """Scores of every record; with a cache file, scores already there are reused and new ones appended."""
    done: dict[str, float] = {}
    if cache is not None and cache.exists():
        with cache.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                    done[row["id"]] = float(row["score"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line cut short by a killed run is scored again
    if advance:
        advance(sum(r.id in done for r in dataset.records))
    todo = [r for r in dataset.records if r.id not in done]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        scores = system.score_records(chunk)
        if len(scores) != len(chunk):
            raise RuntimeError(f"system {system.name} returned {len(scores)} scores for {len(chunk)} records")
        done.update(zip((r.id for r in chunk), scores, strict=True))
        if cache is not None:
            with cache.open("a", encoding="utf-8") as fh:
                fh.writelines(json.dumps({"id": r.id, "score": s}) + "\n" for r, s in zip(chunk, scores, strict=True))
        if advance:
            advance(len(chunk))
    return [done[r.id] for r in dataset.records]


def views(dataset: EvalDataset) -> list[EvalDataset]:
    """The dataset, plus its prompt-only and exchange parts when it mixes both."""
    prompts = [r for r in dataset.records if r.response is None]
    exchanges = [r for r in dataset.records if r.response is not None]
    if not prompts or not exchanges:
        return [dataset]
    return [
        dataset,
        EvalDataset(f"{dataset.name}/prompts", dataset.spec, prompts),
        EvalDataset(f"{dataset.name}/exchanges", dataset.spec, exchanges),
    ]


def calibrate(labels: Sequence[int], scores: Sequence[float], targets: Sequence[float]) -> dict[str, Any]:
    """Thresholds at each target FPR on calibration data, with the rates they give there."""
    rows = []
    for target in targets:
        threshold = threshold_at_fpr(labels, scores, target)
        rows.append(
            {
                "target_fpr": target,
                "threshold": threshold,
                "calibration": binary_metrics(labels, scores, threshold, with_auroc=False).as_dict(),
            }
        )
    return {"n": len(labels), "n_unsafe": int(sum(labels)), "rows": rows}


def evaluate_set(
    labels: Sequence[int],
    scores: Sequence[float],
    default_threshold: float | Sequence[float],
    calibrated: dict[str, Any] | None,
    options: EvalOptions,
) -> dict[str, Any]:
    """The table at the system's own threshold(s) (one, or one per item), the calibrated sweep, the oracle rows
    and bootstrap CIs."""
    default = binary_metrics(labels, scores, default_threshold).as_dict()
    sweep = [
        {
            "target_fpr": row["target_fpr"],
            "threshold": row["threshold"],
            "test": binary_metrics(labels, scores, row["threshold"], with_auroc=False).as_dict(),
        }
        for row in (calibrated or {}).get("rows", [])
    ]
    result: dict[str, Any] = {"default": default, "sweep": sweep}
    if options.oracle:
        result["oracle"] = [{"target_fpr": t, "tpr": tpr_at_fpr(labels, scores, t)} for t in options.fpr_targets]
    if 0 < len(labels) <= options.ci_max_n and options.n_boot > 0:
        thresholds = [default_threshold] + [row["threshold"] for row in sweep]
        cis = bootstrap_cis(labels, scores, thresholds, n_boot=options.n_boot, seed=options.seed)
        result["default"]["ci"] = cis[0]
        for row, ci in zip(sweep, cis[1:], strict=True):
            row["test"]["ci"] = {k: v for k, v in ci.items() if k != "auroc"}
    return result


@dataclass
class EvalRun:
    """Everything one evaluation produced: the results document and the raw scores behind it."""

    results: dict[str, Any]
    scores: dict[str, dict[str, ScoredSet]]
    """system name → view name → scores (for plots)."""
    calibration_scores: dict[str, list[float]] = field(default_factory=dict)


def run_evaluation(
    systems: Sequence[System],
    datasets: Sequence[EvalDataset],
    calibration: EvalDataset | None,
    out_dir: Path | None,
    options: EvalOptions = EvalOptions(),
    provenance: dict[str, Any] | None = None,
    progress: Callable[[str, int], ProgressFn] | None = None,
) -> EvalRun:
    """Score every system on calibration and test data, and compute every table of the report.

    ``progress(description, total)`` returns an ``advance(n)`` callback; scores are cached under
    ``out_dir/scores`` so that a rerun resumes where a killed one stopped.
    """
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must be unique, got {names}")
    results: dict[str, Any] = {
        "provenance": provenance or {},
        "options": {
            "fpr_targets": list(options.fpr_targets),
            "ci_max_n": options.ci_max_n,
            "n_boot": options.n_boot,
            "seed": options.seed,
        },
        "calibration": None,
        "datasets": [],
        "systems": [],
        "results": {},
    }
    all_views = [view for dataset in datasets for view in views(dataset)]
    for view in all_views:
        results["datasets"].append(
            {
                "name": view.name,
                "spec": view.spec,
                "n": len(view.records),
                "n_unsafe": sum(view.labels),
                "sha256": view.sha256,
            }
        )
    if calibration is not None:
        results["calibration"] = {
            "name": calibration.name,
            "spec": calibration.spec,
            "n": len(calibration.records),
            "n_unsafe": sum(calibration.labels),
            "sha256": calibration.sha256,
        }
    run = EvalRun(results, {})

    def scored(system: System, dataset: EvalDataset) -> list[float]:
        cache = score_cache_path(out_dir, system, dataset) if out_dir is not None else None
        advance = progress(f"{system.name} · {dataset.name}", len(dataset.records)) if progress else None
        return score_dataset(system, dataset, cache, options.chunk_size, advance)

    for system in systems:
        results["systems"].append({"name": system.name, "threshold": system.threshold, "info": system.info})
        per_system: dict[str, Any] = {"calibration": None, "datasets": {}}
        calibrated = None
        if calibration is not None:
            cal_scores = scored(system, calibration)
            run.calibration_scores[system.name] = cal_scores
            calibrated = calibrate(calibration.labels, cal_scores, options.fpr_targets)
            per_system["calibration"] = calibrated
        run.scores[system.name] = {}
        for dataset in datasets:
            full = scored(system, dataset)
            by_id = dict(zip((r.id for r in dataset.records), full, strict=True))
            for view in views(dataset):
                scores = [by_id[r.id] for r in view.records]
                run.scores[system.name][view.name] = ScoredSet(view, scores)
                per_system["datasets"][view.name] = evaluate_set(
                    view.labels, scores, system.block_thresholds(view.records), calibrated, options
                )
        results["results"][system.name] = per_system
    return run
