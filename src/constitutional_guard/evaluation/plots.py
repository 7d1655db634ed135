"""PNG plots of an evaluation: ROC curves per dataset, score histograms per label, threshold vs TPR / FPR."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from constitutional_guard.atomic import atomic_path

Scores = tuple[Sequence[int], Sequence[float]]
"""(labels, scores) of one system on one dataset."""


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "dataset"


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _grid(n: int) -> tuple[plt.Figure, np.ndarray]:
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def roc_plot(dataset: str, systems: Mapping[str, Scores], path: Path) -> Path | None:
    """All systems' ROC curves on one dataset (None when the set has a single class)."""
    drawable = {name: (y, s) for name, (y, s) in systems.items() if len(set(y)) == 2}
    if not drawable:
        return None
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, (y, s) in drawable.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="false-positive rate (safe flagged)",
        ylabel="true-positive rate (unsafe recall)",
        title=f"ROC · {dataset}",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def histogram_plot(dataset: str, systems: Mapping[str, Scores], path: Path) -> Path:
    """Per system, the score distribution of safe and unsafe items."""
    fig, axes = _grid(len(systems))
    bins = np.linspace(0, 1, 26)
    for ax, (name, (y, s)) in zip(axes.flat, systems.items(), strict=False):
        y_arr, s_arr = np.asarray(y), np.clip(np.asarray(s, dtype=float), 0, 1)
        for label, color, text in ((0, "tab:blue", "safe"), (1, "tab:red", "unsafe")):
            values = s_arr[y_arr == label]
            if len(values):
                ax.hist(values, bins=bins, alpha=0.6, color=color, label=f"{text} ({len(values)})")
        ax.set(title=name, xlabel="P(unsafe)", ylabel="items")
        ax.legend(fontsize=7)
    fig.suptitle(f"Score histograms · {dataset}")
    return _save(fig, path)


def threshold_plot(
    dataset: str, systems: Mapping[str, Scores], calibrated: Mapping[str, Sequence[float]], path: Path
) -> Path:
    """Per system, TPR and FPR on this dataset as the threshold moves; dashed lines at calibrated thresholds."""
    fig, axes = _grid(len(systems))
    grid = np.linspace(0, 1, 201)
    for ax, (name, (y, s)) in zip(axes.flat, systems.items(), strict=False):
        y_arr, s_arr = np.asarray(y), np.asarray(s, dtype=float)
        for label, color, text in ((1, "tab:red", "TPR (unsafe flagged)"), (0, "tab:blue", "FPR (safe flagged)")):
            values = s_arr[y_arr == label]
            if len(values):
                ax.plot(grid, [(values >= t).mean() for t in grid], color=color, label=text)
        for threshold in calibrated.get(name, []):
            ax.axvline(min(max(threshold, 0.0), 1.0), color="grey", linestyle="--", linewidth=0.8)
        ax.set(title=name, xlabel="threshold", ylabel="rate", ylim=(-0.02, 1.02))
        ax.legend(fontsize=7)
    fig.suptitle(f"Threshold vs TPR / FPR · {dataset} (dashed: thresholds chosen on calibration)")
    return _save(fig, path)


def family_outcomes_plot(families: Mapping[str, Mapping[str, Mapping]], path: Path) -> Path:
    """Per held-out family (leave-source-out), stacked blocked / held / allowed shares of its prompts and
    exchanges: unsafe families should be mostly blocked, safe ones mostly allowed."""
    rows = [
        (f"{family} · {kind}", o)
        for family, result in families.items()
        for kind in ("prompts", "exchanges")
        if (o := result[kind])["n"]
    ]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.2), layout="constrained")
    for y, (_, o) in enumerate(rows):
        unsafe = o["n_unsafe"] >= o["n_safe"]
        parts = ("unsafe_blocked", "unsafe_held", "unsafe_allowed") if unsafe else ("safe_blocked", "safe_held")
        left = 0.0
        for part, colour in zip(parts, ("#c0392b", "#f39c12", "#27ae60"), strict=False):
            share = o[part] or 0.0
            ax.barh(y, share, left=left, color=colour, edgecolor="white")
            left += share
        if not unsafe:
            ax.barh(y, 1.0 - left, left=left, color="#27ae60", edgecolor="white")
    ax.set_yticks(range(len(rows)), [f"{name} ({'unsafe' if o['n_unsafe'] >= o['n_safe'] else 'safe'})"
                                     for name, o in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the family's records: blocked (red), held (orange), allowed (green)")
    ax.set_title("Leave-source-out: what the guard does to each unseen family")
    return _save(fig, path)
