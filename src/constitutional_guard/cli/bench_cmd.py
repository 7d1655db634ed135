"""``cguard bench``: speed benchmarks that compare side by side in one run."""

from __future__ import annotations

from pathlib import Path

import typer

from constitutional_guard.cli.upstream_options import (
    OVERLAP_INPUT_CHECK,
    UPSTREAM,
    UPSTREAM_API_KEY_ENV,
    UPSTREAM_MODEL,
    upstream_settings,
)

app = typer.Typer(
    help="Benchmarks: each compares variants side by side in one run and writes JSON.", no_args_is_help=True
)


@app.command("capture")
def capture(
    data: Path = typer.Option(..., "--data", help="Record file or corpus directory (its test split is used)."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="Target model."),
    layers: str = typer.Option("every:2", "--layers", help="Hidden-state indices to capture."),
    n: int = typer.Option(64, "--n", help="Records to time (a deterministic sample)."),
    batch_size: int = typer.Option(16, "--batch-size"),
    max_response_tokens: int = typer.Option(128, "--max-response-tokens"),
    out: Path = typer.Option(Path("bench_capture.json"), "--out", help="JSON report."),
) -> None:
    """Activation-capture throughput: batched, length-bucketed path vs unbatched loops (per layer, per example)."""
    from constitutional_guard.activations import CaptureSettings, resolve_layers
    from constitutional_guard.atomic import write_json_atomic
    from constitutional_guard.cli.common import console
    from constitutional_guard.data.io import read_records
    from constitutional_guard.evaluation.bench_capture import bench_capture
    from constitutional_guard.models.loading import load_causal_lm
    from constitutional_guard.probes.pipeline import sample_records, split_file

    records = read_records(data if data.is_file() else split_file(data, "test"))
    lm = load_causal_lm(model)
    settings = CaptureSettings(
        layers=tuple(resolve_layers(layers, lm.num_layers)), batch_size=batch_size,
        max_response_tokens=max_response_tokens,
    )
    report = bench_capture(lm, sample_records(records, n), settings)
    report["data"] = str(data)
    write_json_atomic(out, report)
    for row in report["results"]:
        console.print(f"{row['variant']:>14}: {row['records_per_s']:.2f} records/s, {row['tokens_per_s']:.0f} tokens/s")
    console.print(
        f"speed-up: {report['speedup']:.2f}× vs one at a time, {report['speedup_vs_reference_loop']:.2f}× vs the "
        f"per-layer reference loop ({report['records']} records, {report['tokens']} tokens)"
    )


@app.command("classifier")
def classifier(
    classifier_dir: Path = typer.Option(..., "--classifier", help="Classifier directory."),
    data: Path = typer.Option(..., "--data", help="Record file or corpus directory (its binary test split)."),
    n: int = typer.Option(200, "--n", help="Records to time (a deterministic sample)."),
    batch_sizes: str = typer.Option("1,8,32", "--batch-sizes", help="Comma-separated batch sizes."),
    out: Path = typer.Option(Path("bench_classifier.json"), "--out", help="JSON report."),
) -> None:
    """Classifier latency (one item at a time) and batched throughput, for prompts and exchanges."""
    from constitutional_guard.atomic import write_json_atomic
    from constitutional_guard.classifiers.base import load_classifier
    from constitutional_guard.cli.common import console
    from constitutional_guard.data.corpus import load_split
    from constitutional_guard.data.io import read_records
    from constitutional_guard.evaluation.bench_classifier import bench_classifier
    from constitutional_guard.sampling import sample_uniform

    records = sample_uniform(read_records(data) if data.is_file() else load_split(data, "test"), n, seed=0)
    report = bench_classifier(load_classifier(classifier_dir), records, [int(b) for b in batch_sizes.split(",")])
    report.update({"classifier": str(classifier_dir), "data": str(data)})
    write_json_atomic(out, report)
    for row in report["results"]:
        rates = ", ".join(f"batch {b}: {row[f'items_per_s_batch{b}']:.1f}/s" for b in report["batch_sizes"])
        p50, p95 = row["latency_ms_p50"], row["latency_ms_p95"]
        console.print(f"{row['input']:>9}: p50 {p50:.1f} ms, p95 {p95:.1f} ms; {rates}")


@app.command("jailbreak")
def jailbreak(
    guard: Path = typer.Option(..., "--guard", help="Guard bundle directory (its target model also runs raw)."),
    judge: str = typer.Option(
        ..., "--judge", help="endpoint:MODEL (OpenAI-compatible), or a classifier that is not the guard's: "
        "classifier dir, baseline:NAME, zero-shot:MODEL."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (items.jsonl, summary.json, report.md)."),
    judge_url: str | None = typer.Option(None, help="Endpoint base URL (default $OPENAI_BASE_URL)."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the endpoint key."),
    n_harmful: int = typer.Option(20, help="Harmful prompts."),
    n_jailbreak: int = typer.Option(20, help="Harmful prompts wrapped in jailbreak templates."),
    n_benign: int = typer.Option(20, help="Benign prompts (about half safety-adjacent)."),
    harmful: str | None = typer.Option(None, help="Harmful prompts instead of the shipped ones (dataset spec)."),
    benign: str | None = typer.Option(None, help="Benign prompts instead of the shipped ones (dataset spec)."),
    max_new_tokens: int = typer.Option(64, help="New tokens per generation (raw and guarded)."),
    batch_size: int = typer.Option(4, help="Raw generations batched together."),
    seed: int = typer.Option(0, help="Seed for item sampling and generation."),
) -> None:
    """Raw vs guarded generation on harmful, jailbreak-wrapped and benign prompts, judged by a separate judge."""
    from constitutional_guard.cli.common import console, progress_bar
    from constitutional_guard.evaluation.datasets import load_records
    from constitutional_guard.evaluation.jailbreak import JailbreakOptions, build_items, run_benchmark
    from constitutional_guard.evaluation.judges import load_judge
    from constitutional_guard.evaluation.provenance import provenance
    from constitutional_guard.guard.bundle import read_bundle
    from constitutional_guard.guard.guard import Guard

    bundle = read_bundle(guard)
    own = [guard / p for p in (bundle.classifier, bundle.input_classifier) if p]
    the_judge = load_judge(judge, judge_url, api_key_env, not_like=own)
    items = build_items(
        n_harmful, n_jailbreak, n_benign, seed,
        harmful=load_records(harmful, default_split=None) if harmful else None,
        benign=load_records(benign, default_split=None) if benign else None,
    )
    guarded = Guard.from_pretrained(guard)
    info = {"target_model": bundle.target_model, "guard": str(guard),
            "provenance": provenance(seed=seed, models={"target": bundle.target_model, "judge": the_judge.name})}
    options = JailbreakOptions(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    with progress_bar() as bar:
        task = bar.add_task("jailbreak benchmark", total=len(items))
        summary = run_benchmark(guarded, the_judge, items, out, options, info, lambda n: bar.advance(task, n))
    for name, row in summary.items():
        rates = ", ".join(f"{key} {row[key]['rate']:.0%}" for key in ("raw_unsafe", "guarded_unsafe", "block_rate"))
        console.print(f"{name:>24}: {rates} (n={row['n']})")
    console.print(f"wrote {out / 'report.md'}")



@app.command("latency")
def latency(
    guard: Path = typer.Option(..., "--guard", help="Guard bundle directory."),
    json_out: Path = typer.Option(Path("bench_latency.json"), "--json", help="JSON report."),
    new_tokens: int = typer.Option(256, "--new-tokens", min=1, help="New tokens per prompt in every mode."),
    num_prompts: int = typer.Option(4, "--num-prompts", min=1, help="Benign prompts to time."),
    prompts: Path | None = typer.Option(None, "--prompts", help="Text file, one benign prompt per line."),
    data: Path | None = typer.Option(
        None, "--data", help="Corpus directory: its test split's unsafe exchanges measure detection latency."
    ),
    num_unsafe: int = typer.Option(8, "--num-unsafe", min=0, help="Unsafe exchanges for detection latency."),
    device: str | None = typer.Option(None, "--device", help="torch device (default: best available)."),
) -> None:
    """Plain generate vs guarded probe-only vs full cascade vs the full-recompute reference loop."""
    from constitutional_guard.atomic import write_json_atomic
    from constitutional_guard.cli.common import console, err_console
    from constitutional_guard.evaluation.bench_latency import BENIGN_PROMPTS, run_latency_benchmark, unsafe_exchanges
    from constitutional_guard.guard.guard import Guard

    texts = [t for t in prompts.read_text(encoding="utf-8").splitlines() if t.strip()] if prompts else BENIGN_PROMPTS
    unsafe = unsafe_exchanges(data, num_unsafe) if data is not None and num_unsafe else []
    the_guard = Guard.from_pretrained(guard, device=device)
    report = run_latency_benchmark(
        the_guard, list(texts)[:num_prompts], new_tokens, unsafe, progress=lambda m: err_console.log(m)
    )
    report.update({"guard": str(guard), "data": str(data) if data else None})
    write_json_atomic(json_out, report)
    for mode, row in report["modes"].items():
        calls = row.get("classifier_calls_per_prompt")
        calls = f", {calls} classifier calls/prompt" if calls is not None else ""
        console.print(
            f"{mode:>9}: {row['tok_s']:.2f} tok/s ({row['cpu_tok_s']:.2f} per CPU-second), "
            f"{row['ms_per_token']} ms/token, first release {row['first_release_ms']} ms{calls}"
        )
    console.print(
        f"probe-only {report['probe_vs_baseline']:.3f}× plain, cascade {report['cascade_vs_baseline']:.3f}× plain, "
        f"probe-only {report['probe_vs_reference']:.1f}× reference (CPU time: {report['cpu_probe_vs_baseline']:.3f}×, "
        f"{report['cpu_cascade_vs_baseline']:.3f}×, {report['cpu_probe_vs_reference']:.1f}×); wrote {json_out}"
    )


@app.command("prefix-cache")
def prefix_cache(
    data: Path = typer.Option(..., "--data", help="Record file or corpus directory (its binary test split)."),
    classifier_dir: Path | None = typer.Option(
        None, "--classifier", help="Constitutional classifier directory (default: the zero-shot judge of --model)."
    ),
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="Base model when no --classifier is given."),
    constitution: Path | None = typer.Option(None, "--constitution", help="Constitution (default: the shipped one)."),
    policy_examples: int = typer.Option(0, "--policy-examples", help="Examples per category in the rendered policy."),
    n: int = typer.Option(32, "--n", help="Records to time (a deterministic sample)."),
    batch_size: int = typer.Option(8, "--batch-size"),
    out: Path = typer.Option(Path("bench_prefix_cache.json"), "--out", help="JSON report."),
) -> None:
    """Constitutional classifier throughput: cached policy prefix vs recomputing it for every item."""
    from constitutional_guard.atomic import write_json_atomic
    from constitutional_guard.classifiers.constitutional import ConstitutionalClassifier
    from constitutional_guard.cli.common import console, err_console, exit_on_input_error
    from constitutional_guard.data.corpus import load_split
    from constitutional_guard.data.io import read_records
    from constitutional_guard.evaluation.bench_prefix_cache import bench_prefix_cache
    from constitutional_guard.sampling import sample_uniform

    with exit_on_input_error():
        records = sample_uniform(read_records(data) if data.is_file() else load_split(data, "test"), n, seed=0)
        if classifier_dir is not None:
            classifier = ConstitutionalClassifier.from_pretrained(classifier_dir, constitution=constitution)
        else:
            classifier = ConstitutionalClassifier.zero_shot(model, constitution, policy_examples=policy_examples)
    classifier.config.batch_size = classifier.scorer.batch_size = batch_size
    report = bench_prefix_cache(classifier, records, progress=err_console.log)
    report["data"] = str(data)
    write_json_atomic(out, report)
    for name, row in report["results"].items():
        console.print(f"{name:>16}: {row['items_per_s']:.2f} items/s ({row['seconds']:.1f} s)")
    console.print(
        f"speed-up {report['speedup']:.2f}× ({report['items']} items, prefix {report['prefix_tokens']} tokens, "
        f"max score difference {report['max_score_difference']:.1e}); wrote {out}"
    )


@app.command("upstream")
def upstream(
    guard: Path = typer.Option(..., "--guard", exists=True, file_okay=False, help="Guard bundle directory."),
    upstream_url: str | None = UPSTREAM,
    upstream_model: str | None = UPSTREAM_MODEL,
    upstream_api_key_env: str | None = UPSTREAM_API_KEY_ENV,
    monitor: bool | None = typer.Option(
        None, "--monitor/--no-monitor", help="Score the upstream text with the stream monitor (default: the "
        "bundle's setting, else on); off: the classifier reads the response every N tokens."
    ),
    monitor_chunk_tokens: int | None = typer.Option(None, "--monitor-chunk-tokens", min=1,
                                                    help="Monitor tokens per forward (default: the bundle's, else 8)."),
    monitor_batch_size: int | None = typer.Option(
        None, "--monitor-batch-size", min=1, help="Most streams per monitor forward (default: the bundle's, else 16; "
        "1: one forward per stream)."
    ),
    monitor_first_chunk_tokens: int | None = typer.Option(
        None, "--monitor-first-chunk-tokens", min=1,
        help="Monitor tokens of a response's first forward (default: the bundle's, else release_lag + 1)."
    ),
    overlap_input_check: bool | None = OVERLAP_INPUT_CHECK,
    concurrency: str = typer.Option("1,4,16", "--concurrency", help="Comma-separated numbers of concurrent streams."),
    max_tokens: int = typer.Option(64, "--max-tokens", min=1, help="Completion tokens per request (greedy)."),
    requests_per_stream: int = typer.Option(1, "--requests-per-stream", min=1, help="Sequential requests per stream."),
    rounds: int = typer.Option(1, "--rounds", min=1, help="Waves per concurrency and path (order alternates)."),
    prompts: Path | None = typer.Option(None, "--prompts", help="Text file, one benign prompt per line."),
    unique_prompts: bool = typer.Option(
        True, "--unique-prompts/--repeat-prompts",
        help="Number each request's prompt so that every one is new to the guard, as in real traffic.",
    ),
    harmful_prompts: Path | None = typer.Option(
        None, "--harmful-prompts", help="Text file, one harmful prompt per line, for detection latency."
    ),
    num_harmful: int = typer.Option(4, "--num-harmful", min=0, help="Harmful prompts replayed (0: no detection)."),
    harmful_marker: str | None = typer.Option(
        None, "--harmful-marker", help="Text where the harmful part of an answer starts (default: its first token)."
    ),
    timeout: float = typer.Option(600.0, "--timeout", min=1.0, help="Per-request limit, seconds."),
    device: str | None = typer.Option(None, "--device", help="Torch device for the stream monitor."),
    dtype: str | None = typer.Option(
        None, "--dtype", help="Stream monitor dtype, e.g. bfloat16 (default: bfloat16 on CUDA, else float32)."
    ),
    out: Path = typer.Option(Path("bench_upstream.json"), "--out", help="JSON report."),
) -> None:
    """Raw upstream vs the guard in front of it: tokens/s, time to first token, checks per stream, detection."""
    from constitutional_guard.atomic import write_json_atomic
    from constitutional_guard.cli.common import console, err_console
    from constitutional_guard.evaluation.bench_latency import BENIGN_PROMPTS
    from constitutional_guard.evaluation.bench_upstream import (
        HARMFUL_PROMPTS,
        UpstreamBenchOptions,
        bench_upstream,
    )
    from constitutional_guard.guard.guard import Guard

    def lines(path: Path | None, default: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()) if path else default

    remote = upstream_settings(guard, upstream_url, upstream_model, upstream_api_key_env, required=True,
                               monitor=monitor, monitor_chunk_tokens=monitor_chunk_tokens,
                               monitor_batch_size=monitor_batch_size,
                               monitor_first_chunk_tokens=monitor_first_chunk_tokens,
                               overlap_input_check=overlap_input_check)
    try:
        options = UpstreamBenchOptions(
            concurrencies=tuple(int(c) for c in concurrency.split(",")), max_tokens=max_tokens,
            requests_per_stream=requests_per_stream, rounds=rounds, prompts=lines(prompts, BENIGN_PROMPTS),
            unique_prompts=unique_prompts, harmful_prompts=lines(harmful_prompts, HARMFUL_PROMPTS)[:num_harmful],
            harmful_marker=harmful_marker, timeout_s=timeout,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    the_guard = Guard.from_pretrained(guard, device=device, dtype=dtype, upstream=remote)
    report = bench_upstream(the_guard, options, progress=err_console.log)
    report["guard"]["bundle"] = str(guard)
    report["guard"]["monitor_dtype"] = str(the_guard.lm.dtype).removeprefix("torch.") if the_guard.lm else None
    write_json_atomic(out, report)
    for row in report["results"]:
        raw, guarded = row["raw"], row["guarded"]
        console.print(
            f"{row['concurrency']:>3} streams: raw {raw['tokens_per_s']:.1f} tok/s, TTFT p50 {raw['ttft_ms_p50']} ms | "
            f"guarded {guarded['tokens_per_s']:.1f} tok/s ({row['throughput_ratio']}×), TTFT p50 "
            f"{guarded['ttft_ms_p50']} ms, {guarded.get('classifier_calls_per_stream')} classifier calls and "
            f"{guarded.get('monitor_forwards_per_stream')} monitor forwards per stream"
        )
    detection = report["detection"]
    if detection:
        console.print(f"detection: {detection['statuses']}, {detection['detection_tokens_mean']} tokens from the "
                      f"harmful token to the block (mean)")
    console.print(f"wrote {out}")
