"""PNG plots: the layer sweep and per-token smoothed risk over streamed responses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from constitutional_guard.atomic import atomic_path
from constitutional_guard.probes.sweep import SweepResult


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sweep(results: Sequence[SweepResult], path: str | Path, title: str = "Probe layer sweep") -> Path:
    """AUROC and TPR at 1 % FPR per layer (lines) and for the multi-layer probes (markers)."""
    plt = _figure()
    single = [r for r in results if len(r.layers) == 1]
    multi = [r for r in results if len(r.layers) > 1]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = [r.layers[0] for r in single]
    ax.plot(x, [r.test_auroc or np.nan for r in single], "o-", label="test AUROC (final token)")
    ax.plot(x, [r.test_tpr_at_1 or np.nan for r in single], "s-", label="test TPR at 1 % FPR (final token)")
    ax.plot(x, [r.prefix_auroc or np.nan for r in single], "^--", label="test AUROC (response prefixes)")
    for marker, result in zip(("*", "P"), multi, strict=False):
        ax.scatter([max(x) + 1.5], [result.test_auroc or np.nan], marker=marker, s=120,
                   label=f"{result.name}: AUROC {result.test_auroc:.3f}" if result.test_auroc else result.name)
        ax.scatter([max(x) + 1.5], [result.test_tpr_at_1 or np.nan], marker=marker, s=120, color="grey")
    ax.set_xlabel("hidden-state index (0 = embeddings)")
    ax.set_ylabel("metric on the test split")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_stream(
    traces: Sequence[tuple[str, Sequence[str], np.ndarray, np.ndarray]],
    threshold: float,
    path: str | Path,
    title: str = "Per-token probe risk while streaming",
) -> Path:
    """One panel per response: raw score and smoothed risk per generated token, and the escalation line.

    ``traces`` holds (label, tokens, raw scores, smoothed risk) per response.
    """
    plt = _figure()
    fig, axes = plt.subplots(len(traces), 1, figsize=(10, 3.2 * len(traces)), squeeze=False)
    for ax, (label, tokens, raw, smoothed) in zip(axes[:, 0], traces, strict=True):
        steps = np.arange(1, len(raw) + 1)
        ax.plot(steps, raw, color="tab:grey", alpha=0.6, lw=1, label="raw token score")
        ax.plot(steps, smoothed, color="tab:red", lw=2, label="smoothed risk")
        ax.axhline(threshold, color="black", ls="--", lw=1, label=f"escalation threshold {threshold:.3f}")
        hits = np.flatnonzero(smoothed >= threshold)
        if len(hits):
            ax.axvline(hits[0] + 1, color="tab:orange", lw=1, label=f"escalates at token {hits[0] + 1}")
        preview = "".join(tokens[:60]).replace("\n", " ")
        ax.set_title(f"{label}: {preview[:90]}…" if len(preview) > 90 else f"{label}: {preview}", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("generated token")
        ax.set_ylabel("P(unsafe)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return out
