"""Two leave-source-out runs of the input check side by side: pooled and per held-out family, cross-source thresholds.

Usage: python compare.py NAME=LSO_DIR NAME=LSO_DIR > compare.md

Each LSO_DIR is the output of `cguard classifier leave-source-out --inputs prompts`. Generated prompts belong to
the constitution's family, so two runs that differ in generated data hold out different prompts in that fold only.
When every run has its scores.jsonl, "same prompts" rows pool only the held-out prompts that all runs scored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _auroc(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def block_thresholds(report: dict) -> dict[str, float]:
    """Each held-out family's cross-source block threshold."""
    return {
        family: next(v for v in result["cross_source"]["thresholds"].values() if v)["block"]
        for family, result in report["families"].items()
    }


def _same_prompts(runs: dict[str, Path], reports: dict[str, dict]) -> list[str]:
    """Pooled rows over the held-out prompts every run scored (ids in all scores.jsonl)."""
    scored = {}
    for name, path in runs.items():
        held_out = set(reports[name]["held_out_families"])
        rows = [json.loads(line) for line in (path / "scores.jsonl").open(encoding="utf-8")]
        scored[name] = {r["id"]: r for r in rows if r["family"] in held_out and r["input"] == "prompt"}
    common = sorted(set.intersection(*(set(s) for s in scored.values())))
    lines = []
    for name, rows in scored.items():
        block = block_thresholds(reports[name])
        unsafe = np.array([rows[i]["label"] == "unsafe" for i in common])
        scores = np.array([rows[i]["score"] for i in common])
        blocked = np.array([rows[i]["score"] >= block[rows[i]["family"]] for i in common])
        lines.append(
            f"| {name}, same {len(common)} prompts | {_auroc(float(roc_auc_score(unsafe, scores)))} | "
            f"{_pct(blocked[unsafe].mean())} | {_pct(blocked[~unsafe].mean())} | – |"
        )
    return lines


def main(runs: dict[str, Path]) -> str:
    reports = {name: json.loads((path / "results.json").read_text(encoding="utf-8")) for name, path in runs.items()}
    lines = [
        "| run | leave-source-out AUROC | harmful blocked | benign blocked | benign held |",
        "|---|---|---|---|---|",
    ]
    for name, report in reports.items():
        pooled = report["leave_source_out"]
        out = pooled["outcomes_cross_source"]["prompts"]
        lines.append(
            f"| {name} | {_auroc(pooled['auroc']['prompts'])} | {_pct(out['unsafe_blocked'])} | "
            f"{_pct(out['safe_blocked'])} | {_pct(out['safe_held'])} |"
        )
    if all((path / "scores.jsonl").exists() for path in runs.values()):
        lines += _same_prompts(runs, reports)
    names = list(reports)
    lines += [
        "",
        "| held-out family | n | " + " | ".join(f"{n}: AUROC / harmful blocked / benign blocked" for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for family in reports[names[0]]["held_out_families"]:
        cells = []
        for name in names:
            result = reports[name]["families"].get(family)
            if result is None:
                cells.append("not held out")
                continue
            out = result["cross_source"]["prompts"]
            cells.append(f"{_auroc(out['auroc'])} / {_pct(out['unsafe_blocked'])} / {_pct(out['safe_blocked'])}")
        n = reports[names[0]]["families"][family]["cross_source"]["prompts"]["n"]
        lines.append(f"| {family} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main({arg.split("=", 1)[0]: Path(arg.split("=", 1)[1]) for arg in sys.argv[1:]}))
