"""Layer sweep: one probe per captured layer, then the best multi-layer combinations, all on held-out data.

Layers are ranked by validation AUROC (final token); the reported numbers come from the test split, with
thresholds for TPR at a target FPR chosen on the calibration split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from constitutional_guard.metrics import auroc
from constitutional_guard.probes.pipeline import Split, exchange_scores, final_token_metrics, fit_probe
from constitutional_guard.probes.smoothing import make_smoother, max_risk


@dataclass(frozen=True)
class SweepResult:
    name: str
    layers: list[int]
    combine: str
    val_auroc: float | None
    """Final-token AUROC on validation (used for ranking)."""
    test_auroc: float | None
    test_tpr_at_1: float | None
    test_tpr_at_5: float | None
    prefix_auroc: float | None
    """Test AUROC of each exchange's highest per-token score (k=2 consecutive smoothing)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_layers(
    splits: dict[str, Split], layers: Sequence[int], combine: str, position: str, **fit_options: Any
) -> SweepResult:
    probe = fit_probe(splits, layers, combine, position, **fit_options)
    val = final_token_metrics(probe, splits["calibration"], splits["validation"])
    test = final_token_metrics(probe, splits["calibration"], splits["test"])
    labels, sequences = exchange_scores(probe, splits["test"])
    prefix = auroc(labels, max_risk(sequences, make_smoother("k_consecutive", {"k": 2})))
    tpr = {row["target_fpr"]: row["tpr"] for row in test["at_fpr"]}
    name = f"L{layers[0]}" if len(layers) == 1 else f"{combine}({','.join(map(str, layers))})"
    return SweepResult(name, list(layers), combine, val["auroc"], test["auroc"], tpr.get(0.01), tpr.get(0.05), prefix)


def layer_sweep(
    splits: dict[str, Split],
    layers: Sequence[int] | None = None,
    position: str = "response_tokens",
    top_k: int = 3,
    progress=None,
    **fit_options: Any,
) -> list[SweepResult]:
    """Single-layer results in layer order, then concat and mean probes over the ``top_k`` best layers."""
    layers = list(layers if layers is not None else splits["train"].acts.layers)
    results = []
    for i, layer in enumerate(layers):
        results.append(evaluate_layers(splits, [layer], "concat", position, **fit_options))
        if progress:
            progress(i + 1, len(layers) + 2)
    if len(layers) > 1 and top_k > 1:
        best = sorted(results, key=lambda r: -(r.val_auroc or 0.0))[:top_k]
        chosen = sorted(layer for r in best for layer in r.layers)
        for combine in ("concat", "mean"):
            results.append(evaluate_layers(splits, chosen, combine, position, **fit_options))
            if progress:
                progress(len(results), len(layers) + 2)
    return results


def best_result(results: Sequence[SweepResult]) -> SweepResult:
    """The result with the highest validation AUROC (never chosen on test)."""
    return max(results, key=lambda r: r.val_auroc or 0.0)
