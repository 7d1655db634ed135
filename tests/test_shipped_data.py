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
