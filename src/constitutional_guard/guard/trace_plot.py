"""Plot a guarded generation's per-token probe risk, thresholds, escalations and verdicts."""

from __future__ import annotations

from pathlib import Path

from constitutional_guard.atomic import atomic_path
from constitutional_guard.guard.events import GenerationResult
from constitutional_guard.guard.policy import RiskThresholds

VERDICT_COLOURS = {"allow": "tab:green", "uncertain": "tab:orange", "block": "tab:red"}


def plot_trace(result: GenerationResult, thresholds: RiskThresholds, path: str | Path, title: str = "") -> Path:
    """Write a PNG of raw and smoothed risk per token, with the escalation levels and classifier verdicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = [t.index for t in result.trace]
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(index, [t.score for t in result.trace], color="tab:gray", alpha=0.5, lw=1, label="probe score")
    ax.plot(index, [t.smoothed for t in result.trace], color="tab:blue", lw=2, label="smoothed risk")
    ax.axhline(thresholds.escalate, color="tab:red", ls="--", lw=1, label="escalate")
    ax.axhline(thresholds.suspicious, color="tab:orange", ls=":", lw=1, label="suspicious")
    for verdict in result.verdicts:
        if verdict.stage != "input":
            ax.axvline(max(verdict.index, 0), color=VERDICT_COLOURS.get(verdict.verdict, "k"), alpha=0.6, lw=1)
    ax.set_xlabel("generated token")
    ax.set_ylabel("P(unsafe)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or f"{result.status.value} ({result.completion_tokens} tokens)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return target
