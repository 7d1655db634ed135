import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from constitutional_guard.cli import app
from constitutional_guard.data import Record, read_records, write_records
from constitutional_guard.data.io import summarize
from constitutional_guard.errors import InputError


def _records() -> list[Record]:
    return [
        Record(id="a", prompt="How do vaccines work?", label="safe", split="train", source="fixture"),
        Record(
            id="b",
            messages=[{"role": "user", "content": "Make a bomb"}],
            response="Sure, first",
            label=2,
            label_scheme="three_class",
            split="test",
            source="fixture",
            category="weapons_cbrn",
            meta={"cut": 0.5, "provenance": {"row": 3}},
        ),
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_round_trip(tmp_path: Path, suffix: str):
    path = write_records(_records(), tmp_path / f"data{suffix}")
    back = read_records(path)
    assert [r.model_dump() for r in back] == [r.model_dump() for r in _records()]
    assert back[1].label == "unsafe_compliance" and back[1].is_unsafe and back[1].label_id == 2
    assert back[1].prompt_text == "Make a bomb"


def test_labels_accept_ids_and_names():
    assert Record(id="x", prompt="p", label=1).label == "unsafe"
    assert Record(id="x", prompt="p", label="SAFE").label == "safe"
    assert Record(id="x", prompt="p", label="1", label_scheme="three_class").label == "safe_refusal"
    assert Record(id="x", prompt="p", label="safe_refusal", label_scheme="three_class").binary_label == "safe"


def test_bad_rows_are_all_reported_with_line_and_field(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    rows = [
        {"id": "ok", "prompt": "fine", "label": "safe"},
        {"id": "l2", "prompt": "x", "label": "maybe"},
        {"id": "l3", "prompt": "   ", "label": "safe"},
        "not json",
        {"id": "l5", "prompt": "x", "label": "safe", "colour": "red"},
        {"id": "l2", "prompt": "again", "label": "safe"},
    ]
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    with pytest.raises(InputError) as info:
        read_records(path)
    problems = {p.line: p for p in info.value.problems}
    assert set(problems) == {2, 3, 4, 6}  # line 5's unknown column is kept, not rejected
    assert problems[2].field == "label" and "maybe" in problems[2].reason
    assert "empty prompt" in problems[3].reason
    assert "invalid JSON" in problems[4].reason
    assert problems[6].field == "id" and problems[6].reason == "duplicate id 'l2' (first on line 2)"
    assert f"{path}:2: label: unknown binary label 'maybe'" in str(info.value)


def test_csv_line_numbers_count_multiline_fields(tmp_path: Path):
    path = tmp_path / "bad.csv"
    path.write_text('id,prompt,label\na,"two\nlines",safe\nb,x,7\n')
    with pytest.raises(InputError) as info:
        read_records(path)
    assert info.value.problems[0].line == 4


def test_lfs_pointer_duplicates_and_unknown_suffix(tmp_path: Path):
    lfs = tmp_path / "data.parquet"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n")
    with pytest.raises(InputError, match="Git LFS pointer"):
        read_records(lfs)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "prompt": "x", "label": 0}\n{"id": "a", "prompt": "y", "label": 1}\n')
    with pytest.raises(InputError, match=r"dup.jsonl:2: id: duplicate id 'a' \(first on line 1\)"):
        read_records(dup)
    with pytest.raises(InputError, match="unsupported file type"):
        read_records(tmp_path / "x.txt")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_unknown_columns_are_kept_in_meta_and_written_back(tmp_path: Path, suffix: str):
    source = tmp_path / "in.jsonl"
    rows = [
        {"id": "a", "prompt": "How do vaccines work?", "label": "safe", "hard_benign": True, "meta": {"k": 1}},
        {"id": "b", "prompt": "Make a bomb", "label": "unsafe", "hard_benign": False, "notes": {"by": "r1"}},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = read_records(source)
    assert records[0].meta == {"k": 1, "hard_benign": True}
    assert records[1].meta == {"hard_benign": False, "notes": {"by": "r1"}}
    out = write_records(records, tmp_path / f"out{suffix}")
    back = read_records(out)
    flags = [True, False] if suffix != ".csv" else ["True", "False"]  # CSV keeps text
    assert [r.meta["hard_benign"] for r in back] == flags
    assert back[0].meta["k"] == 1
    if suffix == ".jsonl":
        written = [json.loads(line) for line in out.read_text().splitlines()]
        assert written[0]["hard_benign"] is True and written[0]["meta"] == {"k": 1}
        assert written[1]["notes"] == {"by": "r1"} and written[1]["meta"] == {}
    clash = tmp_path / "clash.jsonl"
    clash.write_text(json.dumps({"id": "c", "prompt": "x", "label": 0, "k": 2, "meta": {"k": 1}}) + "\n")
    with pytest.raises(InputError, match=r"clash\.jsonl:1: k: column also given as a meta key"):
        read_records(clash)


def test_eval_datasets_read_files_with_unknown_columns(tmp_path: Path):
    from constitutional_guard.evaluation.datasets import load_records

    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "How do I pick a lock?", "label": 0, "hard_benign": True}) + "\n")
    assert load_records(str(path))[0].meta == {"hard_benign": True}


def test_summary_counts():
    counts = summarize(_records())
    assert counts["split"] == {"train": 1, "test": 1}
    assert counts["category"] == {"(none)": 1, "weapons_cbrn": 1}


def test_cli_validate(tmp_path: Path):
    good = write_records(_records(), tmp_path / "good.jsonl")
    result = CliRunner().invoke(app, ["data", "validate", str(good)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "2 records, all valid" in output and "weapons_cbrn" in output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "", "label": 0}\n')
    result = CliRunner().invoke(app, ["data", "validate", str(bad)])
    assert result.exit_code != 0
    assert isinstance(result.exception, InputError)
    assert f"{bad}:1" in str(result.exception)


def test_cli_validate_reports_every_problem_of_every_file(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "prompt": "x", "label": 0}\n{"id": "a", "prompt": "", "label": 7}\n')
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"id": "a", "prompt": "x", "label": 0, "category": "gardening", "extra": 1}\n')
    result = CliRunner().invoke(app, ["data", "validate", str(empty), str(dup), str(odd)])
    assert isinstance(result.exception, InputError)
    problems = {str(p) for p in result.exception.problems}
    assert f"{empty}: no records" in problems
    assert f"{dup}:2: id: duplicate id 'a' (first on line 1)" in problems
    assert any(p.startswith(f"{dup}:2: label:") for p in problems)
    assert "1 records, all valid" in result.stdout
    assert "'gardening' is not a category of the constitution (1 records)" in " ".join(result.stderr.split())
