"""Guard bundles (build, read, errors, from_pretrained) and the guard build / generate / bench latency CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import DEVICE
from typer.testing import CliRunner

from constitutional_guard.classifiers.exchange import ExchangeClassifier, ExchangeConfig
from constitutional_guard.cli.app import app
from constitutional_guard.data.io import write_records
from constitutional_guard.data.schema import Record
from constitutional_guard.errors import InputError
from constitutional_guard.evaluation.bench_latency import run_latency_benchmark, unsafe_exchanges
from constitutional_guard.guard.bundle import BUNDLE_FILE, build_bundle, read_bundle
from constitutional_guard.guard.events import Finished, GenerationConfig
from constitutional_guard.guard.guard import Guard
from constitutional_guard.guard.policy import PolicySettings
from constitutional_guard.probes import LinearProbe, ProbeConfig


@pytest.fixture(scope="module")
def artifacts(tiny_lm_dir: Path, tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import AutoTokenizer, BertForSequenceClassification

    root = tmp_path_factory.mktemp("guard-artifacts")
    torch.manual_seed(0)
    config = ProbeConfig(model_id=str(tiny_lm_dir), hidden_size=32, layers=[1, 2], escalation_threshold=0.9)
    LinearProbe(config, torch.randn(2, 32) * 1e-3, torch.zeros(1)).save_pretrained(root / "probe")
    model = BertForSequenceClassification.from_pretrained(tiny_encoder_dir, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    ExchangeClassifier(model, tokenizer, ExchangeConfig(allow=0.999, block=0.9999)).save_pretrained(root / "clf")
    bundle = build_bundle(root / "bundle", root / "probe", root / "clf", policy=PolicySettings(release_lag=2))
    return {"root": root, "probe": root / "probe", "classifier": root / "clf", "bundle": bundle}


def test_build_writes_a_self_contained_bundle_that_loads(artifacts: dict[str, Path], tiny_lm_dir: Path):
    bundle = read_bundle(artifacts["bundle"])
    assert bundle.target_model == str(tiny_lm_dir)
    assert bundle.classifier == "classifier" and bundle.input_classifier is None
    assert bundle.policy.release_lag == 2
    for name in ("probe/probe.safetensors", "classifier/classifier_config.json", "constitution.yaml"):
        assert (artifacts["bundle"] / name).exists()
    guard = Guard.from_pretrained(artifacts["bundle"], device=DEVICE)
    assert guard.thresholds.escalate == 0.9 and guard.input_classifier is guard.classifier
    result = guard.generate("Hello there", GenerationConfig(max_new_tokens=5, ignore_eos=True))
    assert result.status == "completed" and result.completion_tokens == 5
    assert [v.stage for v in result.verdicts] == ["input", "final"]
    assert guard.moderate("Hello", "Hi!").verdict in ("allow", "uncertain", "block")


def test_bad_guard_yaml_names_file_line_and_field(artifacts: dict[str, Path], tmp_path: Path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "probe").mkdir()
    (folder / BUNDLE_FILE).write_text(
        "target_model: tiny\nprobe: probe\nclassifier: missing_dir\npolicy:\n  release_lag: -1\n  colour: red\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError) as err:
        read_bundle(folder)
    text = str(err.value)
    assert f"{folder / BUNDLE_FILE}:5: policy.release_lag" in text
    assert "policy.colour" in text
    (folder / BUNDLE_FILE).write_text("target_model: tiny\nprobe: probe\nclassifier: missing_dir\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"guard.yaml:3: classifier: 'missing_dir' does not exist"):
        read_bundle(folder)
    with pytest.raises(InputError, match="not a guard bundle"):
        read_bundle(tmp_path)


def test_probe_for_another_model_is_refused(artifacts: dict[str, Path], tmp_path: Path):
    probe = LinearProbe.from_pretrained(artifacts["probe"])
    probe.config.model_id = "some-other-model"
    probe.save_pretrained(tmp_path / "probe")
    target = read_bundle(artifacts["bundle"]).target_model
    build_bundle(tmp_path / "bundle", tmp_path / "probe", target_model=target)
    with pytest.raises(ValueError, match="train a probe for that model"):
        Guard.from_pretrained(tmp_path / "bundle", device=DEVICE)


def test_latency_benchmark_times_every_mode_on_equal_tokens(artifacts: dict[str, Path], tmp_path: Path):
    guard = Guard.from_pretrained(artifacts["bundle"], device=DEVICE)
    records = [
        Record(id=f"u{i}", prompt="Tell me how.", response="Sure, step one is this.", label="unsafe", split="test")
        for i in range(3)
    ] + [Record(id="s", prompt="Hi", response="Hello!", label="safe", split="test")]
    write_records(records, tmp_path / "binary" / "test.jsonl")
    unsafe = unsafe_exchanges(tmp_path, 2)
    assert len(unsafe) == 2 and all(r.label == "unsafe" for r in unsafe)
    report = run_latency_benchmark(guard, ["Hi", "Explain rain."], new_tokens=5, unsafe_exchanges=unsafe)
    for key in ("baseline_tok_s", "probe_tok_s", "cascade_tok_s", "reference_tok_s"):
        assert report[key] > 0
    assert report["new_tokens"] == 5 and report["num_prompts"] == 2
    assert {m: report["modes"][m]["tokens"] for m in report["modes"]} == dict.fromkeys(report["modes"], 10)
    assert report["modes"]["cascade"]["classifier_calls_per_prompt"] == 1.0  # the final check only
    assert report["detection"]["cascade"]["exchanges"] == 2


def test_cli_build_generate_and_bench(artifacts: dict[str, Path], tmp_path: Path):
    runner = CliRunner()
    bundle = tmp_path / "bundle"
    built = runner.invoke(
        app,
        ["guard", "build", "--out", str(bundle), "--probe", str(artifacts["probe"]), "--classifier",
         str(artifacts["classifier"]), "--release-lag", "3", "--no-final-check"],
    )
    assert built.exit_code == 0, built.output
    assert read_bundle(bundle).policy.final_check is False
    png, out = tmp_path / "trace.png", tmp_path / "result.json"
    ran = runner.invoke(
        app,
        ["generate", "--guard", str(bundle), "--prompt", "Hello", "--max-new-tokens", "6", "--device", DEVICE,
         "--trace", str(png), "--json", str(out)],
    )
    assert ran.exit_code == 0, ran.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    result = json.loads(out.read_text())
    assert result["status"] in ("completed", "blocked", "held") and len(result["trace"]) == result["completion_tokens"]
    bench = tmp_path / "latency.json"
    timed = runner.invoke(
        app,
        ["bench", "latency", "--guard", str(bundle), "--new-tokens", "3", "--num-prompts", "1", "--json", str(bench),
         "--device", DEVICE],
    )
    assert timed.exit_code == 0, timed.output
    assert {"baseline_tok_s", "probe_tok_s", "cascade_tok_s", "reference_tok_s", "new_tokens"} <= set(
        json.loads(bench.read_text())
    )


def test_cli_generate_prints_only_released_text_on_stdout(artifacts: dict[str, Path], tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "result.json"
    args = ["generate", "--guard", str(artifacts["bundle"]), "-p", "Hello", "--max-new-tokens", "6",
            "--device", DEVICE, "--json", str(out)]
    quiet = runner.invoke(app, args)
    assert quiet.exit_code == 0, quiet.output
    result = json.loads(out.read_text())
    assert quiet.stdout == result["response"] + "\n"
    assert "Loading weights" not in quiet.stderr and "input" not in quiet.stderr
    shown = runner.invoke(app, ["--verbose", *args, "--show-verdicts"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == result["response"] + "\n"
    verdict = result["verdicts"][0]
    assert f"  input {verdict['verdict']} {verdict['score']:.2f}" in shown.stderr.splitlines()
    assert "Loading weights" in shown.stderr


def test_stream_ends_with_one_finished_event(artifacts: dict[str, Path]):
    guard = Guard.from_pretrained(artifacts["bundle"], device=DEVICE)
    events = list(guard.stream([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                               GenerationConfig(max_new_tokens=4)))
    assert isinstance(events[-1], Finished) and sum(isinstance(e, Finished) for e in events) == 1
