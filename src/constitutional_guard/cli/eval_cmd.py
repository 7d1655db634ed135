"""``cguard eval``: score systems on held-out datasets and write report.md, results.json and plots."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from constitutional_guard.cli.common import console, progress_bar


def evaluate(
    system: list[str] = typer.Option(
        ...,
        "--system",
        "-s",
        help="[NAME=]SPEC: classifier / probe / guard dir, probe@GUARD_DIR, baseline:NAME, "
        "zero-shot:MODEL. Repeat to compare side by side.",
    ),
    dataset: list[str] = typer.Option(
        ...,
        "--dataset",
        "-d",
        help="[NAME=]SPEC: record file[@split], corpus dir[@split] (default test), source:NAME. Repeat for several.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (report.md, results.json, plots/, scores/)."),
    calibration: str | None = typer.Option(
        None,
        help="Calibration data for the threshold sweep (same spec forms); default: the calibration split "
        "of the first corpus directory among the datasets.",
    ),
    limit: int | None = typer.Option(None, help="Score at most this many records per dataset (stratified sample)."),
    calibration_limit: int | None = typer.Option(None, help="At most this many calibration records."),
    fpr: str = typer.Option("0.005,0.01,0.05", help="Target false-positive rates for the sweep, comma-separated."),
    scheme: str = typer.Option("binary", help="Corpus label scheme to read from corpus directories."),
    target_model: str | None = typer.Option(None, help="Target model for probes (default: the probe's own)."),
    constitution: str | None = typer.Option(None, help="Constitution for zero-shot judges (default: shipped)."),
    seed: int = typer.Option(0, help="Seed for sampling and bootstrap."),
    ci_max_n: int = typer.Option(5000, help="Bootstrap intervals on sets of at most this many items (0: none)."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples."),
    resume: bool = typer.Option(True, help="Reuse scores cached under OUT/scores by an earlier (killed) run."),
    title: str = typer.Option("Evaluation report", help="Title of report.md."),
) -> None:
    """Per dataset: N, unsafe recall, missed-unsafe rate, FPR, F1, AUROC and the calibrated threshold sweep."""
    from constitutional_guard.evaluation.datasets import load_dataset
    from constitutional_guard.evaluation.harness import EvalOptions, run_evaluation
    from constitutional_guard.evaluation.provenance import provenance
    from constitutional_guard.evaluation.report import write_report
    from constitutional_guard.evaluation.systems import load_system

    targets = tuple(float(x) for x in fpr.split(",") if x.strip())
    datasets = [load_dataset(arg, scheme, limit, seed) for arg in dataset]
    cal_spec = calibration or _default_calibration(d.spec for d in datasets)
    cal = load_dataset(f"calibration={cal_spec}", scheme, calibration_limit, seed, "calibration") if cal_spec else None
    if cal is None:
        console.print("[yellow]no calibration data: the threshold sweep is skipped[/]")
    if not resume and (out / "scores").exists():
        shutil.rmtree(out / "scores")
    systems = [load_system(arg, target_model, constitution) for arg in system]
    options = EvalOptions(fpr_targets=targets, ci_max_n=ci_max_n, n_boot=n_boot, seed=seed)
    data_hashes = {d.name: d.sha256 for d in datasets} | ({f"{cal.name}": cal.sha256} if cal else {})
    prov = provenance(
        seed=seed, models={s.name: str(s.info) for s in systems}, data=data_hashes, extra={"datasets": dataset}
    )
    with progress_bar() as bar:

        def track(description: str, total: int):
            task = bar.add_task(description, total=total)
            return lambda n: bar.advance(task, n)

        run = run_evaluation(systems, datasets, cal, out, options, prov, track)
    written = write_report(run, out, title)
    console.print(f"wrote {written['report']} and {written['results']}")


def _default_calibration(specs) -> str | None:
    for spec in specs:
        base = spec.rsplit("@", 1)[0]
        if Path(base).is_dir():
            return f"{base}@calibration"
    return None
