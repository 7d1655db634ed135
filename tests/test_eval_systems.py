"""Systems and commands on real (tiny) artifacts: a probe, an exchange classifier and a guard bundle."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from constitutional_guard.classifiers.exchange import ExchangeClassifier, ExchangeConfig
from constitutional_guard.cli.app import app
from constitutional_guard.data.io import write_records
from constitutional_guard.data.schema import Record
from constitutional_guard.errors import InputError
from constitutional_guard.evaluation.systems import ClassifierSystem, ProbeSystem, load_system
from constitutional_guard.guard.bundle import build_bundle
from constitutional_guard.guard.policy import PolicySettings
from constitutional_guard.probes import LinearProbe, ProbeConfig


def _classifier(tiny_encoder_dir: Path, out: Path, seed: int) -> Path:
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(tiny_encoder_dir, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    ExchangeClassifier(model, tokenizer, ExchangeConfig(allow=0.3, block=0.6)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def artifacts(tiny_lm_dir: Path, tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-artifacts")
    torch.manual_seed(0)
    config = ProbeConfig(model_id=str(tiny_lm_dir), hidden_size=32, layers=[1, 2], escalation_threshold=0.9)
    LinearProbe(config, torch.randn(2, 32), torch.zeros(1)).save_pretrained(root / "probe")
    _classifier(tiny_encoder_dir, root / "clf", seed=0)
    _classifier(tiny_encoder_dir, root / "judge", seed=1)
    bundle = build_bundle(root / "bundle", root / "probe", root / "clf", policy=PolicySettings(release_lag=2))
    records = [
        Record(
            id=f"r{i}",
            prompt=f"question {i}",
            response="an answer" if i % 2 else None,
            label="unsafe" if i % 3 == 0 else "safe",
        )
        for i in range(9)
    ]
    write_records(records, root / "data.jsonl")
    return {
        "root": root,
        "probe": root / "probe",
        "clf": root / "clf",
        "judge": root / "judge",
        "bundle": bundle,
        "data": root / "data.jsonl",
    }


def test_every_system_kind_loads_and_scores(artifacts: dict[str, Path]) -> None:
    records = [Record(id="a", prompt="hello", label="safe"), Record(id="b", prompt="hi", response="yo", label="unsafe")]
    clf = load_system(f"ours={artifacts['clf']}")
    assert isinstance(clf, ClassifierSystem) and clf.name == "ours" and clf.info["kind"] == "exchange"
    assert clf.threshold == 0.6
    probe = load_system(str(artifacts["probe"]))
    assert isinstance(probe, ProbeSystem) and probe.name == "probe" and probe.threshold == 0.9
    bundle_clf = load_system(str(artifacts["bundle"]))
    assert isinstance(bundle_clf, ClassifierSystem) and bundle_clf.info["guard_bundle"] == str(artifacts["bundle"])
    bundle_probe = load_system(f"probe@{artifacts['bundle']}")
    assert isinstance(bundle_probe, ProbeSystem) and bundle_probe.name == "probe-bundle"
    for system in (clf, probe, bundle_clf, bundle_probe):
        scores = system.score_records(records)
        assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert bundle_clf.score_records(records) == clf.score_records(records)  # the bundle holds a copy
    assert bundle_probe.score_records(records) == probe.score_records(records)


def test_classifier_system_sees_the_whole_chat() -> None:
    """Multi-turn records are scored as the classifier was trained: every turn, not the last user message."""
    seen: list[tuple[str, str | None]] = []

    class Recorder:
        def score_batch(self, items: list[tuple[str, str | None]]) -> list:
            seen.extend(items)
            return [SimpleNamespace(score=0.5) for _ in items]

    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "q"},
    ]
    record = Record(id="c", messages=chat, response="a", label="safe")
    assert ClassifierSystem("rec", Recorder()).score_records([record]) == [0.5]
    assert seen == [("user: hi\nassistant: hello\nuser: q", "a")]


def test_eval_cli_on_real_artifacts(artifacts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = [
        "eval",
        "-s",
        str(artifacts["clf"]),
        "-s",
        f"probe@{artifacts['bundle']}",
        "-d",
        str(artifacts["data"]),
        "--calibration",
        str(artifacts["data"]),
        "-o",
        str(out),
        "--n-boot",
        "20",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in results["systems"]] == ["clf", "probe-bundle"]
    assert set(results["results"]["clf"]["datasets"]) == {"data", "data/prompts", "data/exchanges"}


def test_bench_jailbreak_cli_runs_and_refuses_the_guards_own_judge(artifacts: dict[str, Path], tmp_path: Path) -> None:
    harmful = write_records(
        [Record(id=f"h{i}", prompt=f"harm {i}", label="unsafe") for i in range(3)], tmp_path / "harmful.jsonl"
    )
    benign = write_records(
        [Record(id=f"b{i}", prompt=f"benign {i}", label="safe") for i in range(3)], tmp_path / "benign.jsonl"
    )
    common = [
        "bench",
        "jailbreak",
        "--guard",
        str(artifacts["bundle"]),
        "--harmful",
        str(harmful),
        "--benign",
        str(benign),
        "--n-harmful",
        "2",
        "--n-jailbreak",
        "0",
        "--n-benign",
        "2",
        "--max-new-tokens",
        "3",
    ]
    out = tmp_path / "jb"
    result = CliRunner().invoke(app, [*common, "--judge", str(artifacts["judge"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == {"harmful": 2, "jailbreak": 0, "benign": 2}
    assert summary["judge"].startswith("classifier:judge")
    assert summary["provenance"]["models"]["target"] == summary["target_model"]
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["guarded"]["status"] in ("completed", "blocked", "held") for r in rows)
    own = CliRunner().invoke(app, [*common, "--judge", str(artifacts["clf"]), "--out", str(tmp_path / "x")])
    assert own.exit_code != 0 and isinstance(own.exception, InputError)
    assert "guard's own classifier" in str(own.exception)
