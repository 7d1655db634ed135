"""Write an evaluation as ``results.json``, ``report.md`` and PNG plots, systems side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from constitutional_guard.atomic import write_json_atomic, write_text_atomic
from constitutional_guard.classifiers.calibration import block_fpr_over_words
from constitutional_guard.evaluation import plots
from constitutional_guard.evaluation.harness import EvalRun
from constitutional_guard.markdown import markdown_table


def pct(value: float | None, ci: tuple[float, float] | list[float] | None = None) -> str:
    """A rate as a percentage, ``n/a`` when undefined, with its interval when given."""
    if value is None:
        return "n/a"
    text = f"{100 * value:.1f} %"
    return f"{text} [{100 * ci[0]:.1f}–{100 * ci[1]:.1f}]" if ci else text


def num(value: float | None, ci: tuple[float, float] | list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} [{ci[0]:.3f}–{ci[1]:.3f}]" if ci else f"{value:.3f}"


def _card_table(results: dict[str, Any], dataset: str) -> list[str]:
    rows = []
    for system in results["systems"]:
        entry = results["results"][system["name"]]["datasets"].get(dataset)
        if entry is None:
            continue
        m = entry["default"]
        ci = m.get("ci") or {}
        rows.append(
            [
                system["name"],
                str(m["n"]),
                num(m["threshold"]),
                pct(m["tpr"], ci.get("tpr")),
                pct(m["missed_unsafe_rate"]),
                pct(m["fpr"], ci.get("fpr")),
                num(m["f1"], ci.get("f1")),
                num(m["auroc"], ci.get("auroc")),
            ]
        )
    header = [
        "system",
        "N",
        "threshold",
        "unsafe recall (TPR)",
        "missed unsafe (ASR proxy)",
        "FPR (over-refusal)",
        "unsafe F1",
        "AUROC",
    ]
    return markdown_table(header, rows)


def _sweep_table(results: dict[str, Any], dataset: str) -> list[str]:
    rows = []
    for system in results["systems"]:
        entry = results["results"][system["name"]]["datasets"].get(dataset)
        if entry is None:
            continue
        oracle = {row["target_fpr"]: row["tpr"] for row in entry.get("oracle", [])}
        for row in entry["sweep"]:
            test = row["test"]
            ci = test.get("ci") or {}
            rows.append(
                [
                    system["name"],
                    pct(row["target_fpr"]),
                    num(row["threshold"]),
                    pct(test["tpr"], ci.get("tpr")),
                    pct(test["fpr"], ci.get("fpr")),
                    pct(oracle.get(row["target_fpr"])),
                ]
            )
    header = [
        "system",
        "target FPR",
        "threshold (calibration)",
        "TPR on test",
        "FPR on test",
        "oracle TPR (threshold chosen on test)",
    ]
    return markdown_table(header, rows) if rows else []


def render_markdown(results: dict[str, Any], plot_files: dict[str, dict[str, str]], title: str) -> str:
    prov = results.get("provenance", {})
    lines = [f"# {title}", ""]
    if prov:
        lines += [
            f"Made by `{prov.get('command')}` on {prov.get('created')} (revision `{prov.get('git_revision')}`, "
            f"seed {prov.get('seed')}).",
            "",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items()) + ".",
            "",
        ]
    lines += ["## Data", ""]
    cal = results.get("calibration")
    rows = [
        [
            d["name"],
            f"`{d['spec']}`",
            str(d["n"]),
            str(d["n_unsafe"]),
            str(d["n"] - d["n_unsafe"]),
            f"`{d['sha256'][:12]}`",
        ]
        for d in results["datasets"]
    ]
    if cal:
        rows.append(
            [
                f"{cal['name']} (calibration)",
                f"`{cal['spec']}`",
                str(cal["n"]),
                str(cal["n_unsafe"]),
                str(cal["n"] - cal["n_unsafe"]),
                f"`{cal['sha256'][:12]}`",
            ]
        )
    lines += [*markdown_table(["dataset", "spec", "N", "unsafe", "safe", "sha256"], rows), ""]
    lines += ["## Systems", ""]
    lines += markdown_table(
        ["system", "kind", "own threshold", "details"],
        [
            [
                s["name"],
                str(s["info"].get("kind", "")),
                num(s["threshold"]),
                ", ".join(f"{k}: {v}" for k, v in s["info"].items() if k != "kind"),
            ]
            for s in results["systems"]
        ],
    )
    lines += [
        "",
        "Rates on each dataset at the system's own thresholds (a classifier's prompt pair for prompts alone, "
        "so the threshold column reads n/a where they differ within a set); square brackets hold 95 % bootstrap "
        "intervals "
        f'(sets of at most {results["options"]["ci_max_n"]} items). "n/a": the set lacks the class the rate '
        "needs. The sweep's thresholds are chosen on the calibration data only and then applied to the test set; "
        "the oracle column chooses the threshold on the test set itself and is an upper bound, not a result.",
        "",
    ]
    for dataset in [d["name"] for d in results["datasets"]]:
        lines += [f"## {dataset}", "", *_card_table(results, dataset), ""]
        sweep = _sweep_table(results, dataset)
        if sweep:
            lines += ["Threshold sweep:", "", *sweep, ""]
        for kind, caption in (("roc", "ROC"), ("hist", "score histograms"), ("threshold", "threshold vs TPR/FPR")):
            file = plot_files.get(dataset, {}).get(kind)
            if file:
                lines.append(f"![{caption} · {dataset}]({file})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_report(run: EvalRun, out_dir: str | Path, title: str = "Evaluation report") -> dict[str, Path]:
    """Write results.json, report.md and plots/ under ``out_dir``; return the written paths."""
    out = Path(out_dir)
    plot_files: dict[str, dict[str, str]] = {}
    written: dict[str, Path] = {}
    calibrated = {
        name: [row["threshold"] for row in (entry["calibration"] or {}).get("rows", [])]
        for name, entry in run.results["results"].items()
    }
    for dataset in [d["name"] for d in run.results["datasets"]]:
        per_system = {
            name: (sets[dataset].dataset.labels, sets[dataset].scores)
            for name, sets in run.scores.items()
            if dataset in sets
        }
        if not per_system:
            continue
        stem = plots.slug(dataset)
        files = {
            "roc": plots.roc_plot(dataset, per_system, out / "plots" / f"roc_{stem}.png"),
            "hist": plots.histogram_plot(dataset, per_system, out / "plots" / f"hist_{stem}.png"),
            "threshold": plots.threshold_plot(dataset, per_system, calibrated, out / "plots" / f"threshold_{stem}.png"),
        }
        plot_files[dataset] = {k: str(v.relative_to(out)) for k, v in files.items() if v is not None}
        written.update({f"{k}:{dataset}": v for k, v in files.items() if v is not None})
    write_json_atomic(out / "results.json", run.results)
    write_text_atomic(out / "report.md", render_markdown(run.results, plot_files, title))
    written["results"] = out / "results.json"
    written["report"] = out / "report.md"
    return written


def classifier_markdown(reports: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """``report.md`` of ``cguard classifier eval``: one table per evaluated set plus per-subset rates.

    ``reports`` maps a set name to {system: ``CalibrationReport``}; ``meta`` holds the calibration targets."""
    lines = [
        "# Classifier evaluation",
        "",
        f"Thresholds chosen on {meta['calibration_records']} calibration records: block at "
        f"{meta['block_fpr']:.1%} false blocks on safe items"
        f"{block_fpr_over_words(meta.get('block_fpr_over', 'items'))}, allow "
        + (
            f"below the score {meta['allow_recall']:.0%} of unsafe items reach"
            if meta.get("hold_rate") is None
            else f"so that at most {meta['hold_rate']:.1%} of safe items are held"
        )
        + "; prompts alone and exchanges each get their own pair where the calibration "
        "split has both classes of each. Metrics at each item's block threshold.",
    ]
    for set_name, rows in reports.items():
        lines += ["", f"## {set_name} ({meta['sets'][set_name]} records)", ""]
        header = ["system", "AUROC", "block thr", "prompt block thr", "TPR", "FPR", "F1", "uncertain"]
        table = []
        for name, r in rows.items():
            t = r.test
            prompt_block = "shared" if r.prompt_thresholds is None else f"{r.prompt_thresholds.block:.4f}"
            rates = [num(t.tpr), num(t.fpr), num(t.f1), num(r.test_uncertain_rate)]
            table.append([name, num(t.auroc), f"{r.thresholds.block:.4f}", prompt_block, *rates])
        lines += markdown_table(header, table)
        subsets = [
            [name, s.name, f"{s.n} ({s.n_unsafe}/{s.n_safe})", num(s.auroc), num(s.tpr), num(s.fpr)]
            for name, r in rows.items()
            for s in r.subsets
        ]
        lines += ["", *markdown_table(["system", "subset", "n (unsafe/safe)", "AUROC", "TPR", "FPR"], subsets)]
    return "\n".join(lines) + "\n"
