"""Leave-one-annotator-out agreement: the human ceiling of noisy multi-annotator labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from constitutional_guard.cli.app import app
from constitutional_guard.data.agreement import annotator_agreement
from constitutional_guard.data.io import write_records
from constitutional_guard.data.schema import Record
from constitutional_guard.errors import InputError


def _record(i: int, scores: list[float], source: str = "pyrit/harm_scored", **meta) -> Record:
    label = "unsafe" if sum(scores) / len(scores) >= 0.5 else "safe"
    return Record(
        id=f"r{i}", prompt=f"p{i}", response="r", label=label, source=source, meta={"human_scores": scores, **meta}
    )


def test_agreement_scores_each_annotator_against_the_others():
    records = [
        _record(0, [1.0, 1.0, 1.0]),
        _record(1, [0.0, 0.0, 0.0]),
        _record(2, [1.0, 0.0, 0.0]),  # the first annotator disagrees with the other two
        _record(3, [0.75]),  # one annotator: not scored
        _record(4, [1.0, 1.0, 1.0], prefix_of="r0"),  # a prefix of r0: counted once
        _record(5, [0.0, 1.0], source="other"),
    ]
    by_source = {a.source: a for a in annotator_agreement(records)}
    harm = by_source["pyrit/harm_scored"]
    assert (harm.exchanges, harm.pairs) == (3, 9)
    assert harm.unanimous == pytest.approx(2 / 3)
    # (held-out score, others' label): r0 → (1, unsafe) ×3, r1 → (0, safe) ×3, r2 → (1, safe) and, as the
    # other two average 0.5, (0, unsafe) ×2. Of 20 unsafe-safe pairs 9 are ordered right, 2 wrong, 9 tied.
    assert harm.auroc == pytest.approx(13.5 / 20)
    other = by_source["other"]
    assert other.auroc == pytest.approx(0.0) and other.unanimous == 0.0


def test_scores_that_are_not_numbers_name_the_record():
    bad = _record(0, [1.0, 0.0]).model_copy(update={"id": "bad", "meta": {"human_scores": [1, "x"]}})
    with pytest.raises(InputError) as error:
        annotator_agreement([bad])
    assert "record bad" in str(error.value) and "meta.human_scores" in str(error.value)


def test_agreement_cli_writes_json_and_rejects_files_without_scores(tmp_path: Path):
    path = tmp_path / "test.jsonl"
    write_records([_record(0, [1.0, 0.75]), _record(1, [0.0, 0.25])], path)
    out = tmp_path / "agreement.json"
    result = CliRunner().invoke(app, ["data", "agreement", str(path), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())[0]["auroc"] == 1.0
    plain = tmp_path / "plain.jsonl"
    write_records([Record(id="a", prompt="p", label="safe")], plain)
    result = CliRunner().invoke(app, ["data", "agreement", str(plain)])
    assert result.exit_code != 0 and "human scores" in result.output
