"""report.md, results.json and plots of an evaluation, and the ``cguard eval`` command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_eval_harness import KeywordClassifier, _records
from typer.testing import CliRunner

from constitutional_guard.cli.app import app
from constitutional_guard.data.io import write_records
from constitutional_guard.data.schema import Record
from constitutional_guard.evaluation import systems as systems_module
from constitutional_guard.evaluation.datasets import EvalDataset
from constitutional_guard.evaluation.harness import EvalOptions, run_evaluation
from constitutional_guard.evaluation.report import pct, write_report
from constitutional_guard.evaluation.systems import ClassifierSystem

PNG = b"\x89PNG\r\n\x1a\n"


def _only_unsafe(n: int) -> list[Record]:
    return [Record(id=f"u{i}", prompt=f"make malware {i}", label="unsafe") for i in range(n)]


def test_report_side_by_side_with_plots(tmp_path: Path) -> None:
    class Shy(KeywordClassifier):
        def score(self, prompt, response=None):
            result = super().score(prompt, response)
            return type(result)(result.score / 2, result.verdict, result.thresholds, result.label)

    systems = [ClassifierSystem("ours", KeywordClassifier()), ClassifierSystem("shy", Shy())]
    datasets = [EvalDataset("test", "mem", _records(30)), EvalDataset("harmful", "mem", _only_unsafe(8))]
    cal = EvalDataset("cal", "mem", _records(30, prefix="c"))
    run = run_evaluation(systems, datasets, cal, tmp_path, EvalOptions(n_boot=50), {"command": "cguard eval x"})
    written = write_report(run, tmp_path, "My report")
    report = (tmp_path / "report.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert report.startswith("# My report")
    assert "cguard eval x" in report
    for section in ("## test", "## test/prompts", "## test/exchanges", "## harmful"):
        assert section in report
    harmful_rows = [line for line in report.split("## harmful")[1].splitlines() if line.startswith("| shy")]
    assert "n/a" in harmful_rows[0]  # FPR and AUROC undefined on an all-unsafe set
    assert "oracle TPR (threshold chosen on test)" in report
    assert [s["name"] for s in results["systems"]] == ["ours", "shy"]
    assert results["results"]["shy"]["datasets"]["harmful"]["default"]["tpr"] == 0.0
    assert results["results"]["ours"]["datasets"]["harmful"]["default"]["tpr"] == 1.0
    pngs = [p for k, p in written.items() if ":" in k]
    assert {p.name for p in pngs} >= {"roc_test.png", "hist_harmful.png", "threshold_test_prompts.png"}
    assert "roc_harmful.png" not in {p.name for p in pngs}  # one class: no ROC curve
    assert all(p.read_bytes().startswith(PNG) for p in pngs)
    for line in report.splitlines():
        if line.startswith("!["):
            assert (tmp_path / line.split("](")[1].rstrip(")")).exists()


def test_pct_formats_intervals_and_missing() -> None:
    assert pct(None) == "n/a"
    assert pct(0.5, (0.25, 0.75)) == "50.0 % [25.0–75.0]"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for split, n in (("test", 24), ("calibration", 18)):
        write_records(
            [r.model_copy(update={"split": split}) for r in _records(n, prefix=split)],
            root / "binary" / f"{split}.jsonl",
        )
    return root


def test_eval_cli_end_to_end_and_resume(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classifier = KeywordClassifier()

    def fake_load_system(arg, target_model=None, constitution=None):
        name, spec = systems_module.parse_system_arg(arg)
        return ClassifierSystem(name or spec, classifier, {"kind": "keyword"})

    monkeypatch.setattr(systems_module, "load_system", fake_load_system)
    out = tmp_path / "report"
    args = ["eval", "-s", "kw=anything", "-d", str(corpus), "-o", str(out), "--n-boot", "30"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["calibration"]["spec"] == f"{corpus}@calibration"
    assert results["results"]["kw"]["calibration"]["n"] == 18
    assert len(results["provenance"]["data_sha256"]) == 2
    assert sum(classifier.calls) == 24 + 18
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert sum(classifier.calls) == 24 + 18  # resumed from the score cache
    fresh = CliRunner().invoke(app, [*args, "--no-resume"])
    assert fresh.exit_code == 0 and sum(classifier.calls) == 2 * (24 + 18)


def test_eval_cli_bad_dataset_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "", "label": "safe"}\n')
    result = CliRunner().invoke(app, ["eval", "-s", "baseline:x", "-d", str(bad), "-o", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "bad.jsonl:1" in str(result.exception)
