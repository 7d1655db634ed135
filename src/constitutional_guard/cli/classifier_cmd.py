"""``cguard classifier`` (train, calibrate, eval) and ``cguard classify`` (score a file of prompts / exchanges)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.table import Table

from constitutional_guard.atomic import atomic_path, write_json_atomic, write_text_atomic
from constitutional_guard.classifiers.base import TrainOptions
from constitutional_guard.classifiers.registry import CLASSIFIER_KINDS, classifier_kind, load_classifier
from constitutional_guard.cli.common import console, err_console, print_json, progress_bar
from constitutional_guard.cli.settings_options import build_settings, settings_options
from constitutional_guard.data.io import iter_rows
from constitutional_guard.data.schema import Record
from constitutional_guard.errors import InputError, Problem
from constitutional_guard.sampling import sample_uniform

app = typer.Typer(help="Second-stage classifiers: train, calibrate and evaluate.", no_args_is_help=True)


@app.command("kinds")
def kinds(
    json_out: bool = typer.Option(False, "--json", help="Print the list as JSON instead of a table."),
) -> None:
    """List the classifier kinds, their default base models and what each can do."""
    rows = [kind.as_dict() for kind in CLASSIFIER_KINDS.values()]
    if json_out:
        print_json(rows)
        return
    table = Table("kind", "default base model", "label schemes", "scores", "reads constitution", "description")
    for row in rows:
        scores = [name for name in ("prompts", "exchanges") if row[f"scores_{name}"]]
        table.add_row(
            row["name"],
            row["default_base_model"],
            ", ".join(row["label_schemes"]),
            ", ".join(scores),
            "yes" if row["reads_constitution"] else "no",
            row["description"],
        )
    console.print(table)


@app.command("train")
@settings_options(TrainOptions, exclude=("data_dir", "out_dir"), rest_field="extra")
def train(
    data: Path = typer.Option(..., "--data", help="Corpus directory (<scheme>/<split>.jsonl)."),
    out: Path = typer.Option(..., "--out", help="Output classifier directory (checkpoints go inside)."),
    kind: str = typer.Option("exchange", "--kind", help=f"{' | '.join(CLASSIFIER_KINDS)} (see `classifier kinds`)."),
    settings_given: dict[str, Any] | None = None,
) -> None:
    """Train a classifier of the given kind on a corpus (default base model: the kind's own)."""
    try:
        spec = classifier_kind(kind)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--kind") from None
    values = {"base_model": spec.default_base_model, **(settings_given or {})}
    options = build_settings(TrainOptions, {**values, "data_dir": str(data), "out_dir": str(out)})
    path = spec.train_function()(options)
    console.print(f"saved {kind} classifier to [bold]{path}[/]")


def _splits(data: Path | None, calibration: Path | None, test: Path | None, scheme: str) -> tuple[list, list]:
    from constitutional_guard.data.corpus import load_split
    from constitutional_guard.data.io import read_records

    if data is not None:
        return load_split(data, "calibration", scheme), load_split(data, "test", scheme)
    if calibration is None or test is None:
        raise typer.BadParameter("give --data DIR, or both --calibration FILE and --test FILE")
    return read_records(calibration), read_records(test)


def _allow_targets(allow_recall: float | None, hold_rate: float) -> tuple[float, float | None]:
    """(allow recall, hold rate) for calibration: an explicit ``--allow-recall`` replaces the hold target."""
    from constitutional_guard.classifiers.calibration import DEFAULT_ALLOW_RECALL

    return (allow_recall, None) if allow_recall is not None else (DEFAULT_ALLOW_RECALL, hold_rate)


_BLOCK_FPR_OVER_HELP = (
    "Count the false-block target over safe calibration items pooled (items), or per source: the mean of the "
    "sources' rates, what a new source can expect (sources), or no source above it (every-source)."
)


def _block_fpr_over(value: str) -> str:
    from constitutional_guard.classifiers.calibration import BLOCK_FPR_OVER

    if value not in BLOCK_FPR_OVER:
        raise typer.BadParameter(f"expected one of {', '.join(BLOCK_FPR_OVER)}", param_hint="--block-fpr-over")
    return value


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _prompt_block(report: Any) -> str:
    """The prompt block threshold, or "shared" when the exchange pair serves prompts too."""
    return "shared" if report.prompt_thresholds is None else f"{report.prompt_thresholds.block:.4f}"


def _thresholds_line(name: str, thresholds: Any) -> str:
    return f"{name} thresholds: allow < {thresholds.allow:.4f} ≤ uncertain < {thresholds.block:.4f} ≤ block"


def _report_table(title: str, rows: dict[str, Any]) -> Table:
    columns = ("system", "AUROC", "block thr", "prompt block thr", "TPR", "FPR", "F1", "uncertain", "safe held")
    table = Table(*columns, title=title, show_edge=False)
    for name, report in rows.items():
        t = report.test
        table.add_row(
            name,
            _fmt(t.auroc),
            f"{report.thresholds.block:.4f}",
            _prompt_block(report),
            _fmt(t.tpr),
            _fmt(t.fpr),
            _fmt(t.f1),
            _fmt(report.test_uncertain_rate),
            _fmt(report.test_safe_held_rate),
        )
    return table


@app.command("calibrate")
def calibrate(
    classifier: Path = typer.Option(..., "--classifier", help="Classifier directory; its thresholds are rewritten."),
    data: Path | None = typer.Option(None, "--data", help="Corpus directory (uses its calibration and test splits)."),
    calibration: Path | None = typer.Option(None, help="Calibration record file (instead of --data)."),
    test: Path | None = typer.Option(None, help="Test record file (instead of --data)."),
    label_scheme: str = typer.Option("binary"),
    block_fpr: float = typer.Option(
        0.01, min=0.0, max=0.999, help="Target false-block rate on safe calibration items."
    ),
    hold_rate: float = typer.Option(
        0.01, min=0.0, max=0.999, help="Target share of safe calibration items held (between allow and block)."
    ),
    allow_recall: float | None = typer.Option(
        None, min=0.001, max=1.0, help="Instead of --hold-rate: share of unsafe calibration items kept out of 'allow'."
    ),
    prompt_block_fpr: float | None = typer.Option(
        None, min=0.0, max=0.999,
        help="The prompts' own false-block target where prompts and exchanges get a pair each (default: --block-fpr).",
    ),
    block_fpr_over: str = typer.Option("items", help=_BLOCK_FPR_OVER_HELP),
    report: Path | None = typer.Option(None, help="Write the calibration report here as JSON."),
    shared_thresholds: bool = typer.Option(
        False, "--shared-thresholds", help="One threshold pair for prompts and exchanges (default: one each)."
    ),
    cross_source_prompts: int = typer.Option(
        0, min=0, help="Embedding classifiers: score calibration prompts by K head refits, each without a fold of "
        "source families, so the prompt thresholds hold on new sources (0: off).",
    ),
) -> None:
    """Choose allow / block thresholds on the calibration split, save them, report test metrics."""
    from constitutional_guard.classifiers.calibration import calibrate_and_save, calibration_details
    from constitutional_guard.classifiers.exchange_training import select_inputs

    if cross_source_prompts == 1:
        raise typer.BadParameter("at least 2 folds (0: off)", param_hint="--cross-source-prompts")
    _block_fpr_over(block_fpr_over)
    model = load_classifier(classifier)
    calib_records, test_records = _splits(data, calibration, test, label_scheme)
    inputs = (getattr(getattr(model, "config", None), "training", None) or {}).get("inputs", "all")
    if inputs != "all":  # a classifier trained on prompts alone (or exchanges) is calibrated on what it scores
        calib_records, test_records = select_inputs(calib_records, inputs), select_inputs(test_records, inputs)
        console.print(f"calibrating on {inputs} only (what this classifier was trained on)")
    recall, hold = _allow_targets(allow_recall, hold_rate)
    scores, scores_from = None, "the classifier"
    if cross_source_prompts:
        from constitutional_guard.classifiers.embedding import EmbeddingClassifier
        from constitutional_guard.classifiers.embedding_training import cross_source_calibration_scores

        if not isinstance(model, EmbeddingClassifier):
            raise typer.BadParameter("needs an embedding classifier", param_hint="--cross-source-prompts")
        with progress_bar(transient=True) as bar:
            bar.add_task(f"cross-source scores ({cross_source_prompts} folds)", total=None)
            scores, scores_from = cross_source_calibration_scores(model, calib_records, cross_source_prompts)
    result = calibrate_and_save(
        model, classifier, calib_records, test_records, block_fpr, recall, not shared_thresholds, hold, scores,
        scores_from, prompt_block_fpr, block_fpr_over,
    )
    console.print(
        _report_table(f"test split at thresholds chosen on calibration ({classifier})", {"classifier": result})
    )
    console.print(_thresholds_line("exchange", result.thresholds))
    if result.prompt_thresholds is None:
        console.print("prompt thresholds: shared with exchanges")
    else:
        console.print(_thresholds_line("prompt", result.prompt_thresholds))
    if report is not None:
        write_json_atomic(report, calibration_details(result, calib_records, test_records))


@app.command("policy-shift")
def policy_shift(
    classifier: Path = typer.Option(..., "--classifier", help="Constitutional classifier directory."),
    data: Path = typer.Option(..., "--data", help="Corpus directory (items come from --split)."),
    split: str = typer.Option("test", help="Held-out split to draw the items from."),
    category: list[str] = typer.Option(
        [], "--category", help="Harmful category to edit (repeatable; default: every one with --n-target items)."
    ),
    n_target: int = typer.Option(24, help="Unsafe items of the edited category per category."),
    n_control: int = typer.Option(24, help="Unsafe items of other harmful categories per category."),
    label_scheme: str = typer.Option("binary"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(..., "--out", help="Write per-category results and the summary here as JSON."),
) -> None:
    """How far allowing or narrowing a category moves its scores, against items of other categories."""
    from constitutional_guard.data.corpus import load_split
    from constitutional_guard.evaluation import policy_shift as ps

    model = load_classifier(classifier)
    if not classifier_kind(model.kind).reads_constitution:
        readers = [k.name for k in CLASSIFIER_KINDS.values() if k.reads_constitution]
        raise typer.BadParameter(
            f"{classifier} is a {model.kind} classifier; policy shifts need one that reads the constitution "
            f"({', '.join(readers)})"
        )
    records = load_split(data, split, label_scheme)
    names = category or ps.eligible_categories(model.constitution, records, n_target)
    unknown = [n for n in names if not model.constitution.is_harmful(n)]
    if unknown or not names:
        raise typer.BadParameter(f"no harmful categories to edit (unknown: {unknown}); see the constitution")
    with progress_bar() as bar:
        task = bar.add_task("scoring", total=len(names) * (n_target + n_control) * (1 + len(ps.EDITS)))
        shifts = ps.measure_shift(
            model, records, names, n_target, n_control, seed=seed, progress=lambda n: bar.advance(task, n)
        )
    table = Table(
        "category",
        "edit",
        "n",
        "target Δlogit",
        "control Δlogit",
        "read: target / control",
        "flagged before → after",
        show_edge=False,
    )
    for s in shifts:
        table.add_row(
            s.category,
            s.edit,
            f"{s.target.n}/{s.control.n}",
            f"{s.target.mean_logit_change:+.3f}",
            f"{s.control.mean_logit_change:+.3f}",
            f"{s.read_target_logit_change:+.3f} / {s.read_control_logit_change:+.3f}",
            f"{s.target.flagged_before:.2f} → {s.target.flagged_after:.2f}",
        )
    console.print(table)
    for edit, row in ps.summary(shifts).items():
        console.print(
            f"{edit}: target {row['target_mean_logit_change']:+.3f} vs control {row['control_mean_logit_change']:+.3f}"
            f" log-odds; lowered more than control in {row['categories_lowered_more_than_control']:.0%} of categories;"
            f" specificity {row['specificity']:+.3f}, from reading the policy alone {row['read_specificity']:+.3f}"
            + ("" if row["named"] is None else f"; the edited category named for {row['named']:.0%} of its items")
        )
    write_json_atomic(out, {"classifier": str(classifier), "split": split, "seed": seed, **ps.as_dict(shifts)})


@app.command("eval")
def evaluate(
    classifier: list[Path] = typer.Option([], "--classifier", help="Classifier directory (repeatable)."),
    baseline: list[str] = typer.Option(
        [], "--baseline", help="guardify | nanoguard | profanity | zero-shot[:MODEL] (repeatable)."
    ),
    data: Path | None = typer.Option(None, "--data", help="Corpus directory (calibration + test splits)."),
    calibration: Path | None = typer.Option(None, help="Calibration record file (instead of --data)."),
    test: Path | None = typer.Option(None, help="Test record file (instead of --data)."),
    extra_test: list[Path] = typer.Option(
        [], "--extra-test", help="More held-out record files (e.g. sources not trained on), repeatable."
    ),
    label_scheme: str = typer.Option("binary"),
    block_fpr: float = typer.Option(0.01, min=0.0, max=0.999),
    block_fpr_over: str = typer.Option("items", help=_BLOCK_FPR_OVER_HELP),
    hold_rate: float = typer.Option(0.01, min=0.0, max=0.999, help="Target share of safe calibration items held."),
    allow_recall: float | None = typer.Option(None, min=0.001, max=1.0, help="Instead of --hold-rate."),
    max_records: int | None = typer.Option(None, help="Cap per split (deterministic sample), for slow systems."),
    seed: int = typer.Option(0),
    output: Path = typer.Option(..., "--output", help="Write results.json and report.md into this directory."),
) -> None:
    """Compare classifiers and baselines with thresholds chosen on calibration, judged on test.

    Scores are cached under ``OUTPUT/scores`` (keyed by system, artifact files and data), so a killed run
    resumes and a rerun at another ``--block-fpr`` scores nothing again.
    """
    from constitutional_guard.classifiers.calibration import evaluate_scores
    from constitutional_guard.data.io import read_records
    from constitutional_guard.evaluation.datasets import EvalDataset
    from constitutional_guard.evaluation.harness import score_cache_path, score_dataset
    from constitutional_guard.evaluation.report import classifier_markdown
    from constitutional_guard.evaluation.systems import load_system

    recall, hold = _allow_targets(allow_recall, hold_rate)
    _block_fpr_over(block_fpr_over)
    calib_records, test_records = _splits(data, calibration, test, label_scheme)
    calib_records = sample_uniform(calib_records, max_records, seed)
    sets = {"test": sample_uniform(test_records, max_records, seed)}
    for file in extra_test:
        sets[file.stem] = sample_uniform(read_records(file), max_records, seed)
    systems: dict[str, Any] = {str(path): lambda p=path: load_system(str(p)) for path in classifier}
    systems.update({f"baseline:{name}": lambda n=name: load_system(f"baseline:{n}") for name in baseline})
    if not systems:
        raise typer.BadParameter("give at least one --classifier or --baseline")
    results: dict[str, dict[str, Any]] = {}
    reports: dict[str, dict[str, Any]] = {name: {} for name in sets}
    with progress_bar() as progress:
        for name, loader in systems.items():
            task = progress.add_task(name, total=len(calib_records) + sum(len(r) for r in sets.values()))
            system = loader()

            def scored(set_name: str, records: list[Record], system: Any = system, task: Any = task) -> list[float]:
                dataset = EvalDataset(set_name, set_name, records)
                cache = score_cache_path(output, system, dataset)
                return score_dataset(system, dataset, cache, advance=lambda n: progress.advance(task, n))

            calib_scores = scored("calibration", calib_records)
            results[name] = {}
            for set_name, records in sets.items():
                scores = scored(set_name, records)
                report = evaluate_scores(
                    calib_records, calib_scores, records, scores, block_fpr, recall, True, hold, None, block_fpr_over
                )
                reports[set_name][name] = report
                results[name][set_name] = report.as_dict()
    for set_name, rows in reports.items():
        console.print(_report_table(f"{set_name} (thresholds chosen on calibration)", rows))
    output.mkdir(parents=True, exist_ok=True)
    meta = {
        "calibration_records": len(calib_records),
        "sets": {name: len(records) for name, records in sets.items()},
        "block_fpr": block_fpr,
        "block_fpr_over": block_fpr_over,
        "allow_recall": recall,
        "hold_rate": hold,
    }
    write_json_atomic(output / "results.json", {"meta": meta, "systems": results})
    write_text_atomic(output / "report.md", classifier_markdown(reports, meta))
    console.print(f"wrote {output / 'results.json'} and {output / 'report.md'}")


def _row_item(row: dict[str, Any]) -> tuple[str, str | None]:
    """(prompt, response) of an input row: ``prompt`` or ``messages``, optional ``response``."""
    from constitutional_guard.classifiers.input_format import record_prompt

    response = row.get("response")
    if response is not None and not isinstance(response, str):
        raise ValueError("response: must be a string or null")
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return prompt, response
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError("prompt: must be a string")
    if row.get("messages"):
        try:
            record = Record(id="row", messages=row["messages"], label="safe")
        except ValidationError as exc:
            raise ValueError(f"messages: {exc.errors()[0]['msg']}") from exc
        return record_prompt(record), response
    raise ValueError("prompt: missing or blank (give 'prompt' or 'messages')")


def classify(
    classifier: Path = typer.Option(..., "--classifier", help="Classifier directory (any kind)."),
    input: Path = typer.Option(..., "--input", help="JSONL, CSV or Parquet rows with prompt (or messages), response."),
    output: Path = typer.Option(..., "--output", help="JSONL: each input row plus score, verdict, label_scores."),
    batch_size: int = typer.Option(32),
) -> None:
    """Score every row; rows that cannot be scored get an ``error`` field and are listed, never dropped."""
    if output.suffix.lower() not in (".jsonl", ".ndjson"):
        raise InputError.one(output, "output must be a .jsonl file")
    model = load_classifier(classifier)
    rows: list[dict[str, Any]] = []
    items: list[tuple[int, tuple[str, str | None]]] = []
    problems: list[Problem] = []
    for line, row in iter_rows(input):
        if isinstance(row, Problem):
            problems.append(row)
            rows.append({"line": line, "error": row.reason})
            continue
        try:
            items.append((len(rows), _row_item(row)))
        except ValueError as exc:
            field, _, reason = str(exc).partition(": ")
            problems.append(Problem(str(input), line, field, reason))
            row = {**row, "error": str(exc)}
        rows.append(row)
    with progress_bar(transient=True) as progress:
        task = progress.add_task("classify", total=len(items))
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            for (index, _), result in zip(chunk, model.score_batch([item for _, item in chunk]), strict=True):
                rows[index] = {
                    **rows[index],
                    "score": result.score,
                    "verdict": str(result.verdict),
                    "label_scores": result.probabilities,
                }
            progress.advance(task, len(chunk))
    with atomic_path(output) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    console.print(f"scored {len(items)} of {len(rows)} rows → {output}")
    if problems:
        err_console.print(f"[yellow]{len(problems)} rows could not be scored (kept with an 'error' field):[/]")
        for problem in problems[:20]:
            err_console.print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command("leave-source-out")
def leave_source_out(
    data: Path = typer.Option(..., "--data", help="Corpus directory (all four splits are read)."),
    output: Path = typer.Option(
        ..., "--output", help="Write results.json, report.md, scores.jsonl and families.png here."
    ),
    base_model: str = typer.Option("minilm-l6", help="Encoder of the embedding classifier refitted per family."),
    head: str = typer.Option("linear+mlp", help="Head refitted per family: linear, mlp or linear+mlp (their average)."),
    by: str = typer.Option("source", help="Family of a record: source (pyrit/advbench) or package (pyrit)."),
    min_records: int = typer.Option(50, min=1, help="Hold out every family with at least this many records."),
    block_fpr: float = typer.Option(0.05, min=0.0, max=0.999, help="Target false-block rate on safe items."),
    block_fpr_over: str = typer.Option("items", help=_BLOCK_FPR_OVER_HELP),
    hold_rate: float = typer.Option(0.01, min=0.0, max=0.999, help="Target share of safe items held."),
    max_per_split: int | None = typer.Option(None, min=10, help="Cap per split (seeded sample), for quick runs."),
    constitution_share: float | None = typer.Option(
        None, min=0.0, max=0.99, help="Share of each label's weight on the constitution's examples (training default)."
    ),
    inputs: str = typer.Option(
        "all", help="Train and test on all records, or on prompts / exchanges alone (prompts: an input check)."
    ),
    source_balance: bool = typer.Option(
        True, help="Within a label, a source's total weight grows with the square root of its size (training's "
        "default); off: with its size."
    ),
    states_model: str | None = typer.Option(
        None, help="A causal LM whose hidden states go beside the encoder's features (e.g. the guarded model)."
    ),
    states_layers: str = typer.Option("18", help="Layers of --states-model to read, e.g. 18 or 12,18."),
    prompt_weight: float | None = typer.Option(
        None, help="Weight of the prompt alone's score in an exchange's (training's default: 0.5 for --inputs all, "
        "else 0)."
    ),
    seed: int = typer.Option(0),
) -> None:
    """Train without each source family, calibrate without it, test on it; report beside the in-distribution split.

    Uses the embedding classifier (frozen encoder, --head as in training): features are cached, so each fold is a
    refit of the head. Families under --min-records stay in every training set.
    """
    from constitutional_guard.data.schema import FAMILY_KINDS
    from constitutional_guard.evaluation import leave_source_out as lso
    from constitutional_guard.evaluation.plots import family_outcomes_plot

    if by not in FAMILY_KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(FAMILY_KINDS)}", param_hint="--by")
    from constitutional_guard.classifiers.embedding import HEAD_KINDS

    if head not in HEAD_KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(HEAD_KINDS)}", param_hint="--head")
    from constitutional_guard.classifiers.exchange_training import INPUTS

    if inputs not in INPUTS:
        raise typer.BadParameter(f"expected one of {', '.join(INPUTS)}", param_hint="--inputs")
    _block_fpr_over(block_fpr_over)
    states = None
    if states_model:
        from constitutional_guard.classifiers.lm_states import StatesSettings

        try:
            states = StatesSettings.from_mapping({"model": states_model, "layers": states_layers})
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--states-layers") from None
    from constitutional_guard.classifiers.embedding_training import prompt_weight as weight_for

    try:
        weight = weight_for(inputs, prompt_weight)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--prompt-weight") from None
    with progress_bar(transient=True) as bar:
        task = bar.add_task("leave-source-out", total=None)
        result = lso.embedding_leave_source_out(
            str(data),
            base_model,
            by,
            min_records,
            block_fpr,
            hold_rate,
            head=head,
            max_per_split=max_per_split,
            seed=seed,
            progress=lambda step: bar.update(task, description=step),
            constitution_share=constitution_share,
            inputs=inputs,
            source_balance=source_balance,
            states=states,
            prompt_weight=weight,
            block_fpr_over=block_fpr_over,
        )
    report = result.report
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / "results.json", report)
    write_text_atomic(output / "report.md", lso.markdown(report))
    write_text_atomic(output / "scores.jsonl", "".join(json.dumps(i.as_dict()) + "\n" for i in result.scored))
    family_outcomes_plot(report["families"], output / "families.png")
    columns = ("evaluation", "AUROC prompts", "AUROC exchanges", "benign prompts blocked", "benign prompts held")
    table = Table(*columns, "unsafe prompts blocked", title=f"Leave-source-out by {by} ({data})", show_edge=False)
    rows = (
        ("in-distribution", "in_distribution", "outcomes"),
        ("leave-source-out", "leave_source_out", "outcomes"),
        ("  cross-source thresholds", "leave_source_out", "outcomes_cross_source"),
    )
    for label, name, key in rows:
        block, p = report[name], report[name][key]["prompts"]
        auroc = block["auroc"]
        cells = (p["safe_blocked"], p["safe_held"], p["unsafe_blocked"])
        table.add_row(label, _fmt(auroc["prompts"]), _fmt(auroc["exchanges"]), *map(_fmt, cells))
    console.print(table)
    console.print(f"wrote results.json, report.md, scores.jsonl and families.png to {output}")
