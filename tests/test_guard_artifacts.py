"""Broken or non-finite artifacts fail at load naming the file; non-finite scores at run time fail closed."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import DEVICE

from constitutional_guard.classifiers.base import ClassifierScore, Thresholds
from constitutional_guard.errors import InputError
from constitutional_guard.guard import GenerationConfig, GenerationStatus, GuardErrorCode, TextReleased
from constitutional_guard.guard.artifacts import HUB_CHECK_TIMEOUT_S, load_checked_classifier, target_model_problem
from constitutional_guard.guard.bundle import build_bundle
from constitutional_guard.guard.guard import Guard
from constitutional_guard.models.loading import load_causal_lm
from constitutional_guard.probes import LinearProbe, ProbeConfig


@pytest.fixture(scope="module")
def probe_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ProbeConfig(model_id=str(tiny_lm_dir), hidden_size=32, layers=[2])
    return LinearProbe(config, torch.zeros(1, 32), torch.tensor([-8.0])).save_pretrained(
        tmp_path_factory.mktemp("probe") / "probe")


@pytest.fixture(scope="module")
def classifier_dir(tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, BertForSequenceClassification

    from constitutional_guard.classifiers.exchange import ExchangeClassifier, ExchangeConfig

    out = tmp_path_factory.mktemp("clf") / "clf"
    model = BertForSequenceClassification.from_pretrained(tiny_encoder_dir, num_labels=2)
    ExchangeClassifier(model, AutoTokenizer.from_pretrained(tiny_encoder_dir), ExchangeConfig()).save_pretrained(out)
    return out


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def break_file(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x93garbage" * 40}[how])


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_unreadable_probe_weights_name_the_file(probe_dir: Path, tmp_path: Path, how: str):
    probe = copy_of(probe_dir, tmp_path)
    break_file(probe / "probe.safetensors", how)
    with pytest.raises(InputError, match=r"probe\.safetensors: not a readable safetensors file"):
        LinearProbe.from_pretrained(probe)


def test_non_finite_probe_weights_and_statistics_fail_at_load(probe_dir: Path, tmp_path: Path):
    from safetensors.torch import save_file

    probe = copy_of(probe_dir, tmp_path)
    save_file({"weight": torch.full((1, 32), math.nan), "bias": torch.zeros(1)}, str(probe / "probe.safetensors"))
    with pytest.raises(InputError, match=r"probe\.safetensors: tensor weight holds NaN"):
        LinearProbe.from_pretrained(probe)
    save_file({"weight": torch.zeros(1, 32, dtype=torch.int64), "bias": torch.zeros(1)},
              str(probe / "probe.safetensors"))
    with pytest.raises(InputError, match=r"dtype torch\.int64"):
        LinearProbe.from_pretrained(probe)
    save_file({"weight": torch.zeros(1, 32)}, str(probe / "probe.safetensors"))
    with pytest.raises(InputError, match="missing tensor"):
        LinearProbe.from_pretrained(probe)
    config = json.loads((probe / "probe_config.json").read_text())
    config["feature_std"] = [[float("inf")] * 32]
    (probe / "probe_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"probe_config\.json.*feature_std.*NaN or infinite"):
        LinearProbe.from_pretrained(probe)


def test_broken_classifier_artifacts_name_the_file(classifier_dir: Path, tmp_path: Path):
    broken = copy_of(classifier_dir, tmp_path)
    break_file(broken / "model.safetensors", "truncated")
    with pytest.raises(InputError, match=r"model\.safetensors: not a readable safetensors file"):
        load_checked_classifier(broken)
    shutil.rmtree(broken)
    broken = copy_of(classifier_dir, tmp_path)
    (broken / "classifier_config.json").write_text('{"kind": "exchange",', encoding="utf-8")
    with pytest.raises(InputError, match=r"classifier_config\.json:1: invalid JSON"):
        load_checked_classifier(broken)


def test_non_finite_classifier_weights_fail_at_load(classifier_dir: Path, tmp_path: Path):
    from safetensors.torch import load_file, save_file

    broken = copy_of(classifier_dir, tmp_path)
    tensors = load_file(str(broken / "model.safetensors"))
    name = next(k for k, v in tensors.items() if v.is_floating_point() and "weight" in k)
    tensors[name] = torch.full_like(tensors[name], math.nan)
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"model\.safetensors: parameter .* holds NaN or infinite values"):
        load_checked_classifier(broken)


class ScoreClassifier:
    """A second stage that always returns ``score``."""

    kind = "fixed"
    thresholds = Thresholds(allow=0.5, block=0.9)

    def __init__(self, score: float) -> None:
        self.value = score

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore:
        return ClassifierScore(self.value, self.thresholds.verdict(0.0), self.thresholds, "safe")

    def score_batch(self, items):
        return [self.score(p, r) for p, r in items]


def nan_probe(model_id: str) -> LinearProbe:
    config = ProbeConfig(model_id=model_id, hidden_size=32, layers=[2])
    return LinearProbe(config, torch.full((1, 32), math.nan), torch.zeros(1))


def test_non_finite_probe_score_holds_everything(tiny_lm_dir: Path):
    lm = load_causal_lm(str(tiny_lm_dir), device=DEVICE)
    guard = Guard(lm, nan_probe(str(tiny_lm_dir)), classifier=ScoreClassifier(0.01))
    events = list(guard.stream("Hello", GenerationConfig(max_new_tokens=6, ignore_eos=True)))
    assert not any(isinstance(e, TextReleased) for e in events)
    finished = events[-1]
    assert finished.status == GenerationStatus.HELD and finished.response == ""
    assert finished.error_code == GuardErrorCode.NON_FINITE_SCORE and "nan" in finished.error


def test_non_finite_classifier_score_holds(tiny_lm_dir: Path, probe_dir: Path):
    lm = load_causal_lm(str(tiny_lm_dir), device=DEVICE)
    guard = Guard(lm, LinearProbe.from_pretrained(probe_dir), classifier=ScoreClassifier(math.nan))
    result = guard.generate("Hello", GenerationConfig(max_new_tokens=4, ignore_eos=True))
    assert result.status == GenerationStatus.HELD and result.response == ""
    assert result.error_code == GuardErrorCode.NON_FINITE_SCORE
    assert "input classifier scored nan" in result.error


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env.update({"CGUARD_API_KEYS": "key", "HF_HUB_OFFLINE": "1"})
    return subprocess.run([sys.executable, "-m", "constitutional_guard.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_serve_and_generate_fail_at_start_naming_the_broken_file(probe_dir: Path, tmp_path: Path):
    bundle = build_bundle(tmp_path / "bundle", probe_dir)
    break_file(bundle / "probe" / "probe.safetensors", "truncated")
    for args in (["serve", "--guard", str(bundle), "--port", "1"], ["generate", "--guard", str(bundle), "-p", "hi"]):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert f"{bundle / 'probe' / 'probe.safetensors'}: not a readable safetensors file" in result.stderr
        assert "Traceback" not in result.stderr


def test_unknown_target_model_fails_fast_offline(probe_dir: Path, tmp_path: Path):
    bundle = build_bundle(tmp_path / "bundle", probe_dir, target_model="nobody/no-such-model")
    result = run_cli("generate", "--guard", str(bundle), "-p", "hi")
    assert result.returncode == 2, result.stderr
    assert f"{bundle / 'guard.yaml'}: target_model: 'nobody/no-such-model'" in result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_hub_is_reported_at_once(monkeypatch: pytest.MonkeyPatch):
    import httpx
    import huggingface_hub

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    calls = []

    def unreachable(repo_id: str, **kwargs) -> None:
        calls.append(kwargs.get("timeout"))
        raise httpx.ConnectError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    assert "the Hugging Face hub cannot be reached" in target_model_problem("nobody/no-such-model")
    assert calls == [HUB_CHECK_TIMEOUT_S]
    assert "or a valid hub model id" in target_model_problem("no such/model!")
