"""``cguard probe``: train, sweep, evaluate and trace streaming activation probes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from constitutional_guard.atomic import write_json_atomic
from constitutional_guard.cli.common import console, progress_bar

app = typer.Typer(help="Activation probes: the per-token first stage of the cascade.", no_args_is_help=True)

DataOpt = typer.Option(..., "--data", help="Corpus directory (<scheme>/<split>.jsonl or <split>.jsonl).")
ModelOpt = typer.Option("smollm2-135m-instruct", "--model", help="Target model: embedded alias, folder or hub id.")
MaxTrainOpt = typer.Option(None, "--max-train", help="Cap on train exchanges (stratified sample).")
MaxEvalOpt = typer.Option(None, "--max-eval", help="Cap on exchanges of each held-out split.")
MaxPromptsOpt = typer.Option(None, "--max-prompts", help="Cap on prompt-only records per split (0: none).")
SourceOpt = typer.Option(
    [], "--exchange-source", help="Use only exchanges of this source (repeatable), e.g. "
    "generated/smollm2-135m-instruct for the target model's own answers."
)
MaxRespOpt = typer.Option(128, "--max-response-tokens", help="Response tokens captured per exchange.")
MaxLenOpt = typer.Option(512, "--max-length", help="Tokens per sequence (prompts cut from the left).")
BatchOpt = typer.Option(16, "--batch-size", help="Sequences per forward pass during capture.")
DeviceOpt = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu).")
PositionOpt = typer.Option("response_tokens", "--position", help="Train on: response_tokens, final or both.")
L2Opt = typer.Option(1e-2, "--l2", help="L2 penalty on the standardised weights.")
LrOpt = typer.Option(1e-3, "--lr", help="Adam learning rate.")


def _load(model: str, device: str | None):
    from constitutional_guard.models.loading import load_causal_lm

    with console.status(f"loading {model}"):
        return load_causal_lm(model, device=device)


def _splits(lm, data: Path, layers: str, caps: dict[str, int | None], max_prompts, sources, max_response_tokens,
            max_length, batch_size):
    """Read the splits named in ``caps`` (exchanges capped at its value) and capture their activations."""
    from constitutional_guard.activations import CaptureSettings, resolve_layers
    from constitutional_guard.probes.pipeline import capture_splits, load_splits

    records = load_splits(data, list(caps), caps, max_prompts, exchange_sources=tuple(sources) or None)
    settings = CaptureSettings(
        layers=tuple(resolve_layers(layers, lm.num_layers)),
        max_length=max_length,
        max_response_tokens=max_response_tokens,
        batch_size=batch_size,
    )
    with progress_bar() as bar:
        tasks: dict[str, Any] = {}

        def report(split: str, done: int, total: int) -> None:
            if split not in tasks:
                tasks[split] = bar.add_task(f"capture {split}", total=total)
            bar.update(tasks[split], completed=done)

        return capture_splits(lm, records, settings, progress=report)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print_eval(report: dict) -> None:
    final, prefix = report["final_token"], report["prefix"]
    table = Table("metric", "value", title=f"probe {report['combine']}{report['layers']} on {report['split']}")
    table.add_row("final-token AUROC", _fmt(final["auroc"]))
    for row in final["at_fpr"]:
        pct = f"{row['target_fpr']:.0%}"
        table.add_row(f"final-token TPR at {pct} FPR (calibrated)", f"{_fmt(row['tpr'])} (FPR {_fmt(row['fpr'])})")
    table.add_row("smoother", f"{prefix['smoother']} {prefix['params']}")
    table.add_row("escalation threshold", _fmt(prefix["threshold"]))
    table.add_row("safe exchanges escalated", _fmt(prefix["escalation_rate_safe"]))
    table.add_row("unsafe exchanges escalated before the end", _fmt(prefix["recall_unsafe"]))
    table.add_row("median share of response seen at escalation", _fmt(prefix["median_escalation_fraction"]))
    table.add_row("prefix AUROC (max smoothed risk)", _fmt(prefix["auroc"]))
    console.print(table)
    sources = Table("source", "exchanges (unsafe)", "final-token AUROC", "safe escalated", "unsafe escalated",
                    title="per source")
    sources.columns[0].no_wrap = True
    for name, row in prefix["by_source"].items():
        final_row = final["by_source"].get(name, {})
        sources.add_row(name, f"{row['n_safe'] + row['n_unsafe']} ({row['n_unsafe']})", _fmt(final_row.get("auroc")),
                        _fmt(row["escalation_rate_safe"]), _fmt(row["recall_unsafe"]))
    console.print(sources)


@app.command("train")
def train(
    data: Path = DataOpt,
    out: Path = typer.Option(..., "--out", help="Directory for probe.safetensors + probe_config.json."),
    model: str = ModelOpt,
    layers: str = typer.Option("-10", "--layers", help="Hidden-state indices: '12', '10,14,18', '8-12', 'all'."),
    combine: str = typer.Option("concat", "--combine", help="concat (one logit) or mean (per-layer probes)."),
    position: str = PositionOpt,
    target_rate: float = typer.Option(0.1, "--target-escalation", help="False-escalation rate on safe calibration."),
    ramp_tokens: int = typer.Option(8, "--ramp-tokens", help="Unsafe token weights ramp up over this many tokens."),
    l2: float = L2Opt,
    lr: float = LrOpt,
    max_train: int | None = MaxTrainOpt,
    max_eval: int | None = MaxEvalOpt,
    max_prompts: int | None = MaxPromptsOpt,
    exchange_source: list[str] = SourceOpt,
    max_response_tokens: int = MaxRespOpt,
    max_length: int = MaxLenOpt,
    batch_size: int = BatchOpt,
    device: str | None = DeviceOpt,
) -> None:
    """Capture activations (cached), fit on train, pick smoother on validation, threshold on calibration."""
    from constitutional_guard.activations import resolve_layers
    from constitutional_guard.probes.pipeline import evaluate_probe, train_probe

    lm = _load(model, device)
    probe_layers = resolve_layers(layers, lm.num_layers)
    caps = {"train": max_train, "validation": max_eval, "calibration": max_eval, "test": max_eval}
    spec = ",".join(map(str, probe_layers))
    splits = _splits(lm, data, spec, caps, max_prompts, exchange_source, max_response_tokens, max_length, batch_size)
    probe = train_probe(lm, splits, probe_layers, combine, position, target_rate, ramp_tokens, l2=l2, lr=lr)
    probe.save_pretrained(out)
    report = evaluate_probe(probe, splits, "test")
    write_json_atomic(out / "eval_test.json", report)
    _print_eval(report)
    console.print(f"saved probe to {out}")


@app.command("eval")
def evaluate(
    probe_dir: Path = typer.Option(..., "--probe", help="Probe directory."),
    data: Path = DataOpt,
    split: str = typer.Option("test", "--split", help="Held-out split to score (validation, calibration, test)."),
    max_eval: int | None = MaxEvalOpt,
    max_prompts: int | None = MaxPromptsOpt,
    exchange_source: list[str] = SourceOpt,
    max_response_tokens: int = MaxRespOpt,
    max_length: int = MaxLenOpt,
    batch_size: int = BatchOpt,
    device: str | None = DeviceOpt,
    out_json: Path | None = typer.Option(None, "--json", help="Write the metrics as JSON."),
) -> None:
    """Held-out metrics of a saved probe: final-token AUROC / TPR at FPR and streaming escalation."""
    from constitutional_guard.probes import LinearProbe
    from constitutional_guard.probes.pipeline import evaluate_probe

    probe = LinearProbe.from_pretrained(probe_dir)
    lm = _load(probe.config.model_id, device)
    probe.check_compatible(lm.name, lm.hidden_size)
    layers = ",".join(map(str, probe.layers))
    caps = {"calibration": max_eval, split: max_eval}
    splits = _splits(lm, data, layers, caps, max_prompts, exchange_source, max_response_tokens, max_length, batch_size)
    report = evaluate_probe(probe, splits, split)
    if out_json:
        write_json_atomic(out_json, report)
    _print_eval(report)


@app.command("sweep")
def sweep(
    data: Path = DataOpt,
    model: str = ModelOpt,
    layers: str = typer.Option("every:2", "--layers", help="Layers to sweep: 'all', 'every:N', '4-20', '3,7'."),
    position: str = PositionOpt,
    top_k: int = typer.Option(3, "--top-k", help="Best single layers (by validation AUROC) to combine."),
    l2: float = L2Opt,
    lr: float = LrOpt,
    max_train: int | None = MaxTrainOpt,
    max_eval: int | None = MaxEvalOpt,
    max_prompts: int | None = MaxPromptsOpt,
    exchange_source: list[str] = SourceOpt,
    max_response_tokens: int = MaxRespOpt,
    max_length: int = MaxLenOpt,
    batch_size: int = BatchOpt,
    device: str | None = DeviceOpt,
    plot: Path = typer.Option(Path("probe_sweep.png"), "--plot", help="PNG of the metrics per layer."),
    out_json: Path | None = typer.Option(None, "--json", help="Write the sweep rows as JSON."),
) -> None:
    """Per-layer (and best multi-layer) probe AUROC and TPR at 1 % FPR on the test split."""
    from constitutional_guard.probes.plots import plot_sweep
    from constitutional_guard.probes.sweep import best_result, layer_sweep

    lm = _load(model, device)
    caps = {"train": max_train, "validation": max_eval, "calibration": max_eval, "test": max_eval}
    splits = _splits(lm, data, layers, caps, max_prompts, exchange_source, max_response_tokens, max_length, batch_size)
    with progress_bar() as bar:
        task = bar.add_task("fit probes", total=None)
        results = layer_sweep(
            splits, position=position, top_k=top_k, l2=l2, lr=lr,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    table = Table("probe", "val AUROC", "test AUROC", "TPR@1%FPR", "TPR@5%FPR", "prefix AUROC",
                  title=f"layer sweep on {model} (test split; thresholds from calibration)")
    best = best_result(results)
    for r in results:
        name = f"[bold]{r.name}[/]" if r is best else r.name
        table.add_row(name, _fmt(r.val_auroc), _fmt(r.test_auroc), _fmt(r.test_tpr_at_1), _fmt(r.test_tpr_at_5),
                      _fmt(r.prefix_auroc))
    console.print(table)
    plot_sweep(results, plot, title=f"Probe layer sweep: {model}")
    console.print(f"plot: {plot}")
    if out_json:
        sizes = {name: len(s.records) for name, s in splits.items()}
        write_json_atomic(out_json, {"model": model, "split_sizes": sizes, "best": best.name,
                                     "results": [r.as_dict() for r in results]})


@app.command("trace")
def trace(
    probe_dir: Path = typer.Option(..., "--probe", help="Probe directory."),
    prompts: list[str] = typer.Option(..., "--prompt", help="LABEL=PROMPT, repeatable (e.g. unsafe=..., benign=...)."),
    plot: Path = typer.Option(Path("probe_trace.png"), "--plot", help="PNG of the per-token risk."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    device: str | None = DeviceOpt,
    out_json: Path | None = typer.Option(None, "--json", help="Write tokens and scores as JSON."),
) -> None:
    """Generate a response per prompt and plot the probe's raw and smoothed risk at every token."""
    from constitutional_guard.probes import LinearProbe
    from constitutional_guard.probes.plots import plot_stream
    from constitutional_guard.probes.trace import trace_response

    probe = LinearProbe.from_pretrained(probe_dir)
    lm = _load(probe.config.model_id, device)
    traces, rows = [], []
    for item in prompts:
        label, sep, prompt = item.partition("=")
        if not sep:
            label, prompt = f"prompt {len(traces) + 1}", item
        result = trace_response(lm, probe, prompt, max_new_tokens)
        traces.append((label, result.tokens, result.raw, result.smoothed))
        rows.append({"label": label, "prompt": prompt, "response": "".join(result.tokens),
                     "escalates_at": result.escalates_at, "raw": result.raw.tolist(),
                     "smoothed": result.smoothed.tolist()})
        console.print(f"[bold]{label}[/]: escalates at token {result.escalates_at} of {len(result.tokens)}; "
                      f"max smoothed risk {result.smoothed.max() if len(result.smoothed) else 0:.3f}")
    plot_stream(traces, probe.config.escalation_threshold, plot)
    console.print(f"plot: {plot}")
    if out_json:
        write_json_atomic(out_json, {"threshold": probe.config.escalation_threshold, "traces": rows})

