"""Adapters for public safety datasets on the Hugging Face hub, each with a documented label mapping.

Every adapter loads the dataset by hub id through ``datasets.load_dataset``; a local JSONL, CSV or
Parquet file with the same columns goes through the very same row converter. Prompt-only rows
become binary records (for input classifiers); rows with a response become three-class exchange
records (``safe_compliance`` / ``safe_refusal`` / ``unsafe_compliance``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constitutional_guard.data.refusal import is_refusal
from constitutional_guard.data.schema import Record, stable_id
from constitutional_guard.data.sources.categories import map_category
from constitutional_guard.errors import InputError, Problem

LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".parquet": "parquet"}


class RowError(ValueError):
    """A row that cannot be mapped; carries the offending column."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field


@dataclass(frozen=True)
class RowContext:
    """Where a row comes from: enough for provenance and for labels implied by a subset or split."""

    adapter: str
    origin: str
    package: str
    version: str
    config: str | None
    split: str | None
    row: int

    def meta(self, **extra: Any) -> dict[str, Any]:
        base = {"source_file": self.origin, "package": self.package, "version": self.version, "row": self.row}
        if self.config:
            base["subset"] = self.config
        if self.split:
            base["hub_split"] = self.split
        return {**base, **{k: v for k, v in extra.items() if v is not None}}


Converter = Callable[[dict[str, Any], RowContext], list[Record]]


@dataclass(frozen=True)
class HubAdapter:
    """How one hub dataset maps onto records."""

    name: str
    hub_id: str
    description: str
    licence: str
    label_mapping: str
    required: tuple[str, ...]
    convert: Converter
    config: str | None = None
    split: str = "train"
    configs: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()


def _text(row: dict[str, Any], *columns: str) -> str | None:
    for column in columns:
        value = row.get(column)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def _require(row: dict[str, Any], column: str) -> str:
    value = _text(row, column)
    if value is None:
        raise RowError(column, "empty or missing")
    return value


def _flag(row: dict[str, Any], column: str) -> bool:
    value = row.get(column)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return value.strip().lower() in ("1", "true")
    raise RowError(column, f"expected 0/1 or true/false, got {value!r}")


def _choice(row: dict[str, Any], column: str, allowed: dict[str, str]) -> str | None:
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    key = str(value).strip().lower()
    if key not in allowed:
        raise RowError(column, f"unknown value {value!r}; expected one of {', '.join(sorted(allowed))}")
    return allowed[key]


def _prompt_record(ctx: RowContext, prompt: str, unsafe: bool, category: str | None = None, **meta: Any) -> Record:
    return Record(
        id=f"{ctx.adapter}-{stable_id(prompt)}",
        prompt=prompt,
        label="unsafe" if unsafe else "safe",
        source=ctx.adapter,
        category=map_category(category, unsafe=unsafe) or map_category(prompt, unsafe=unsafe),
        meta=ctx.meta(source_category=category, **meta),
    )


def _exchange_record(
    ctx: RowContext,
    prompt: str,
    response: str,
    harmful: bool,
    refusal: bool | None,
    category: str | None = None,
    **meta: Any,
) -> Record:
    """``harmful`` response → unsafe_compliance; else a (labelled or detected) refusal → safe_refusal."""
    refused = is_refusal(response) if refusal is None else refusal
    label = "unsafe_compliance" if harmful else ("safe_refusal" if refused else "safe_compliance")
    return Record(
        id=f"{ctx.adapter}-{stable_id(prompt, response)}",
        prompt=prompt,
        response=response,
        label_scheme="three_class",
        label=label,
        source=ctx.adapter,
        category=map_category(category, unsafe=True) or map_category(prompt, unsafe=True),
        meta=ctx.meta(source_category=category, refusal_detected=refusal is None, **meta),
    )


SAFE_UNSAFE = {"safe": "safe", "unsafe": "unsafe"}
HARMFUL_UNHARMFUL = {"harmful": "unsafe", "unharmful": "safe"}
REFUSAL_COMPLIANCE = {"refusal": "refusal", "compliance": "compliance"}


def _toxicchat(row: dict[str, Any], ctx: RowContext) -> list[Record]:
    prompt = _require(row, "user_input")
    return [_prompt_record(ctx, prompt, _flag(row, "toxicity"), jailbreaking=_flag(row, "jailbreaking"))]


def _aegis2(row: dict[str, Any], ctx: RowContext) -> list[Record]:
    prompt = _require(row, "prompt")
    if prompt.upper() == "REDACTED":
        return []
    category = _text(row, "violated_categories")
    prompt_label = _choice(row, "prompt_label", SAFE_UNSAFE)
    if prompt_label is None:
        raise RowError("prompt_label", "empty or missing")
    records = [_prompt_record(ctx, prompt, prompt_label == "unsafe", category)]
    response = _text(row, "response")
    response_label = _choice(row, "response_label", SAFE_UNSAFE)
    if response is not None and response_label is not None:
        records.append(_exchange_record(ctx, prompt, response, response_label == "unsafe", None, category))
    return records


def _beavertails_category(value: Any) -> str | None:
    if isinstance(value, dict):
        flagged = sorted(k for k, v in value.items() if v)
        return ",".join(flagged) or None
    return str(value) if value else None


def _beavertails(row: dict[str, Any], ctx: RowContext) -> list[Record]:
    prompt, response = _require(row, "prompt"), _require(row, "response")
    safe = _flag(row, "is_safe")
    return [_exchange_record(ctx, prompt, response, not safe, None, _beavertails_category(row.get("category")))]


def _wildguardmix(row: dict[str, Any], ctx: RowContext) -> list[Record]:
    prompt = _require(row, "prompt")
    category = _text(row, "subcategory")
    adversarial = row.get("adversarial")
    records = []
    prompt_label = _choice(row, "prompt_harm_label", HARMFUL_UNHARMFUL)
    if prompt_label is not None:
        records.append(_prompt_record(ctx, prompt, prompt_label == "unsafe", category, adversarial=adversarial))
    response = _text(row, "response")
    response_label = _choice(row, "response_harm_label", HARMFUL_UNHARMFUL)
    refusal = _choice(row, "response_refusal_label", REFUSAL_COMPLIANCE)
    if response is not None and response_label is not None:
        refused = None if refusal is None else refusal == "refusal"
        records.append(
            _exchange_record(
                ctx, prompt, response, response_label == "unsafe", refused, category, adversarial=adversarial
            )
        )
    return records


OR_BENCH_TOXIC = "or-bench-toxic"


def _or_bench(row: dict[str, Any], ctx: RowContext) -> list[Record]:
    prompt = _require(row, "prompt")
    return [_prompt_record(ctx, prompt, ctx.config == OR_BENCH_TOXIC, _text(row, "category"))]


def _xstest(row: dict[str, Any], ctx: RowContext) -> list[Record]:
    prompt = _require(row, "prompt")
    label = _choice(row, "label", SAFE_UNSAFE)
    if label is None:
        raise RowError("label", "empty or missing")
    kind = _text(row, "type")
    return [_prompt_record(ctx, prompt, label == "unsafe", _text(row, "focus", "type"), xstest_type=kind)]


def _jailbreakbench(row: dict[str, Any], ctx: RowContext) -> list[Record]:
    goal = _require(row, "Goal")
    if ctx.split not in ("harmful", "benign"):
        raise RowError("split", f"JailbreakBench rows need the split 'harmful' or 'benign', got {ctx.split!r}")
    return [_prompt_record(ctx, goal, ctx.split == "harmful", _text(row, "Category"), behavior=_text(row, "Behavior"))]


def _harmbench(row: dict[str, Any], ctx: RowContext) -> list[Record]:
    behavior = _text(row, "Behavior", "prompt")
    if behavior is None:
        raise RowError("Behavior", "empty or missing")
    context = _text(row, "ContextString", "context")
    prompt = f"{context}\n\n{behavior}" if context else behavior
    functional = _text(row, "FunctionalCategory")
    return [
        _prompt_record(ctx, prompt, True, _text(row, "SemanticCategory", "category"), functional_category=functional)
    ]


LETTERS = "ABCDEFGHIJ"


def _mmlu(row: dict[str, Any], ctx: RowContext) -> list[Record]:
    question = _require(row, "question")
    choices = row.get("choices")
    if not isinstance(choices, list | tuple) or not choices:
        raise RowError("choices", f"expected a non-empty list, got {choices!r}")
    lines = [question, *(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))]
    subject = _text(row, "subject") or ctx.config or "chemistry"
    return [_prompt_record(ctx, "\n".join(lines), False, "chemistry", subject=subject, answer=row.get("answer"))]


HUB_ADAPTERS: dict[str, HubAdapter] = {
    a.name: a
    for a in (
        HubAdapter(
            name="toxicchat",
            hub_id="lmsys/toxic-chat",
            config="toxicchat0124",
            split="train",
            configs=("toxicchat0124", "toxicchat1123"),
            splits=("train", "test"),
            description="Real user prompts to Vicuna, human-labelled for toxicity and jailbreaking.",
            licence="CC-BY-NC-4.0",
            required=("user_input", "toxicity", "jailbreaking"),
            convert=_toxicchat,
            label_mapping="toxicity 1 → unsafe, 0 → safe (prompt-only); jailbreaking kept in meta.",
        ),
        HubAdapter(
            name="aegis2",
            hub_id="nvidia/Aegis-AI-Content-Safety-Dataset-2.0",
            split="train",
            splits=("train", "validation", "test"),
            description="Prompts and responses labelled safe/unsafe against a 12-category taxonomy.",
            licence="CC-BY-4.0",
            required=("prompt", "prompt_label"),
            convert=_aegis2,
            label_mapping="prompt_label → binary prompt record; with a response: response_label unsafe → "
            "unsafe_compliance, safe → safe_refusal if the refusal detector fires else safe_compliance. "
            "REDACTED prompts are skipped.",
        ),
        HubAdapter(
            name="beavertails",
            hub_id="PKU-Alignment/BeaverTails",
            split="30k_train",
            splits=("330k_train", "330k_test", "30k_train", "30k_test"),
            description="Question-answer pairs with a human is_safe judgement and 14 harm categories.",
            licence="CC-BY-NC-4.0",
            required=("prompt", "response", "is_safe"),
            convert=_beavertails,
            label_mapping="is_safe false → unsafe_compliance; true → safe_refusal if the refusal detector fires "
            "else safe_compliance.",
        ),
        HubAdapter(
            name="wildguardmix",
            hub_id="allenai/wildguardmix",
            config="wildguardtrain",
            split="train",
            configs=("wildguardtrain", "wildguardtest"),
            splits=("train", "test"),
            description="Vanilla and adversarial prompts with responses; harm and refusal labels.",
            licence="ODC-BY",
            required=("prompt",),
            convert=_wildguardmix,
            label_mapping="prompt_harm_label harmful → unsafe, unharmful → safe (prompt-only); with a response: "
            "response_harm_label harmful → unsafe_compliance, else response_refusal_label refusal → "
            "safe_refusal, compliance → safe_compliance.",
        ),
        HubAdapter(
            name="or_bench",
            hub_id="bench-llm/or-bench",
            config="or-bench-hard-1k",
            split="train",
            configs=("or-bench-80k", "or-bench-hard-1k", OR_BENCH_TOXIC),
            splits=("train",),
            description="Over-refusal benchmark: seemingly toxic but benign prompts, and truly toxic ones.",
            licence="CC-BY-4.0",
            required=("prompt",),
            convert=_or_bench,
            label_mapping="subset or-bench-toxic → unsafe; or-bench-80k and or-bench-hard-1k → safe (hard benign).",
        ),
        HubAdapter(
            name="xstest",
            hub_id="walledai/XSTest",
            split="test",
            splits=("test",),
            description="250 safe prompts that resemble unsafe ones and 200 contrasting unsafe prompts.",
            licence="CC-BY-4.0",
            required=("prompt", "label"),
            convert=_xstest,
            label_mapping="label safe → safe, unsafe → unsafe; type kept in meta.",
        ),
        HubAdapter(
            name="jailbreakbench",
            hub_id="JailbreakBench/JBB-Behaviors",
            config="behaviors",
            split="harmful",
            configs=("behaviors",),
            splits=("harmful", "benign"),
            description="100 harmful behaviours and 100 topic-matched benign behaviours.",
            licence="MIT",
            required=("Goal",),
            convert=_jailbreakbench,
            label_mapping="split harmful → unsafe, benign → safe (the Goal is the prompt).",
        ),
        HubAdapter(
            name="harmbench",
            hub_id="walledai/HarmBench",
            config="standard",
            split="train",
            configs=("standard", "contextual", "copyright"),
            splits=("train",),
            description="HarmBench behaviours (Behavior / FunctionalCategory / SemanticCategory layout).",
            licence="MIT",
            required=(),
            convert=_harmbench,
            label_mapping="every behaviour → unsafe; a ContextString is prepended to contextual behaviours.",
        ),
        HubAdapter(
            name="mmlu_chemistry",
            hub_id="cais/mmlu",
            config="college_chemistry",
            split="test",
            configs=("college_chemistry", "high_school_chemistry"),
            splits=("test", "validation", "dev"),
            description="MMLU chemistry questions: benign technical prompts near the CBRN line.",
            licence="MIT",
            required=("question", "choices"),
            convert=_mmlu,
            label_mapping="every question (with its lettered choices) → safe, category chemistry education.",
        ),
    )
}


def _local_rows(path: Path) -> tuple[Any, int]:
    """Rows of a local file via ``datasets`` and the file line of row 0 (CSV has a header line)."""
    from datasets import load_dataset

    builder = LOCAL_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise InputError.one(path, f"unsupported file type {path.suffix!r}; use one of {', '.join(LOCAL_BUILDERS)}")
    if not path.exists():
        raise InputError.one(path, "file not found")
    try:
        rows = load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # datasets raises many parser-specific types
        raise InputError.one(path, f"cannot parse as {builder}: {exc}") from exc
    return rows, 2 if builder == "csv" else 1


def load_hub_dataset(
    name: str,
    path: str | Path | None = None,
    config: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    revision: str | None = None,
) -> list[Record]:
    """Records from a public dataset: from the hub by id, or from a local file of the same layout.

    ``config`` and ``split`` default to the adapter's; for local files they still matter where they
    carry the label (OR-Bench subset, JailbreakBench split).
    """
    if name not in HUB_ADAPTERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(HUB_ADAPTERS)}")
    adapter = HUB_ADAPTERS[name]
    config = config or adapter.config
    split = split or adapter.split
    if path is not None:
        file = Path(path)
        rows, first_line = _local_rows(file)
        origin, package, version = str(file), "local-file", "n/a"
    else:
        from datasets import load_dataset

        rows = load_dataset(adapter.hub_id, config, split=split, revision=revision)
        first_line, origin, package, version = 1, f"hf://datasets/{adapter.hub_id}", adapter.hub_id, revision or "main"
    columns = set(rows.column_names)
    missing = [c for c in adapter.required if c not in columns]
    if missing:
        raise InputError.one(origin, f"missing column(s) for {name}: {', '.join(missing)}", line=1, field=missing[0])
    records: list[Record] = []
    problems: list[Problem] = []
    for index, row in enumerate(rows):
        if limit is not None and index >= limit:
            break
        ctx = RowContext(name, origin, package, version, config, split, index)
        try:
            records += adapter.convert(row, ctx)
        except RowError as exc:
            problems.append(Problem(origin, first_line + index, exc.field, str(exc)))
    if problems:
        raise InputError(problems)
    return records
