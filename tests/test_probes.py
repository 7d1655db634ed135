import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import DEVICE
from typer.testing import CliRunner

from constitutional_guard.activations import CaptureSettings
from constitutional_guard.cli.app import app
from constitutional_guard.data.io import write_records
from constitutional_guard.data.schema import Record
from constitutional_guard.errors import InputError
from constitutional_guard.metrics import auroc
from constitutional_guard.models import load_causal_lm
from constitutional_guard.probes import LinearProbe, ProbeCompatibilityError, ProbeConfig
from constitutional_guard.probes.pipeline import capture_splits, evaluate_probe, train_probe
from constitutional_guard.probes.smoothing import single_spike_escalates
from constitutional_guard.probes.training import build_examples, token_weights

H = 16


def gaussian(n: int, layers: int, seed: int, imbalance: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Two classes that differ along one direction of the last layer, plus a large nuisance offset."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < imbalance).astype(int)
    x = rng.normal(size=(n, layers, H)) * 3 + 50.0
    x[:, -1, 0] += 12.0 * y
    return x, y


@pytest.mark.parametrize("combine", ["concat", "mean"])
def test_fit_predict_on_held_out(combine):
    x, y = gaussian(3000, 2, 0, imbalance=0.15)
    vx, vy = gaussian(600, 2, 1)
    tx, ty = gaussian(1000, 2, 2)
    probe = LinearProbe(ProbeConfig(model_id="m", hidden_size=H, layers=[3, 5], combine=combine))
    probe.fit(x, y, val_features=vx, val_labels=vy, lr=1e-2)
    scores = probe.predict_proba(tx)
    assert scores.shape == (1000,) and ((scores >= 0) & (scores <= 1)).all()
    assert auroc(ty, scores) > 0.95
    # class balancing: despite 15 % positives at training time, the decision boundary sits between the classes
    assert abs(float((scores >= 0.5).mean()) - float(ty.mean())) < 0.1
    info = probe.config.training
    assert 1 <= info["best_epoch"] <= info["epochs_run"]
    np.testing.assert_allclose(np.array(probe.config.feature_mean)[0], 50.0, atol=0.5)


def test_fit_needs_both_classes():
    x, _ = gaussian(50, 1, 0)
    with pytest.raises(ValueError, match="both safe and unsafe"):
        LinearProbe(ProbeConfig(model_id="m", hidden_size=H, layers=[1])).fit(x, np.zeros(50))


@pytest.mark.parametrize("combine", ["concat", "mean"])
def test_score_hidden_states_matches_predict_proba(combine):
    x, y = gaussian(400, 2, 0)
    probe = LinearProbe(ProbeConfig(model_id="m", hidden_size=H, layers=[1, 3], combine=combine))
    probe.fit(x, y, max_epochs=5)
    hidden = [torch.randn(2, 7, H) * 3 + 50 for _ in range(4)]  # embeddings + 3 blocks
    scores = probe.score_hidden_states(hidden)
    assert scores.shape == (2, 7) and scores.dtype == torch.float32
    features = torch.stack([hidden[1], hidden[3]], dim=2).reshape(14, 2, H)
    np.testing.assert_allclose(scores.reshape(-1).numpy(), probe.predict_proba(features), atol=1e-4)
    half = probe.score_hidden_states([h.to(torch.bfloat16) for h in hidden])
    np.testing.assert_allclose(half.numpy(), scores.numpy(), atol=0.05)
    with pytest.raises(ValueError, match="whole output_hidden_states"):
        probe.score_hidden_states(hidden[:2])


def test_save_load_round_trip_and_compatibility(tmp_path: Path):
    x, y = gaussian(300, 1, 0)
    config = ProbeConfig(model_id="smollm2-135m-instruct", hidden_size=H, layers=[7], smoother="ema",
                         smoother_params={"alpha": 0.2}, escalation_threshold=0.4)
    probe = LinearProbe(config).fit(x, y, max_epochs=3)
    probe.save_pretrained(tmp_path / "probe")
    saved = json.loads((tmp_path / "probe" / "probe_config.json").read_text())
    assert {"model_id", "hidden_size", "layers", "feature_mean", "feature_std", "smoother", "escalation_threshold",
            "token_position", "cguard_version"} <= set(saved)
    loaded = LinearProbe.from_pretrained(tmp_path / "probe")
    assert loaded.layers == [7] and loaded.config.escalation_threshold == 0.4
    np.testing.assert_allclose(loaded.predict_proba(x), probe.predict_proba(x), atol=1e-6)
    smoother = loaded.new_smoother()
    assert smoother.update(1.0) == pytest.approx(0.2)
    loaded.check_compatible("smollm2-135m-instruct", H)
    with pytest.raises(ProbeCompatibilityError, match="hidden size 896"):
        loaded.check_compatible("qwen2.5-coder-0.5b-instruct", 896)
    with pytest.raises(ProbeCompatibilityError, match="other-model"):
        LinearProbe.from_pretrained(tmp_path / "probe", model_id="other-model", hidden_size=H)
    with pytest.raises(InputError, match="not a probe directory"):
        LinearProbe.from_pretrained(tmp_path)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="combine"):
        ProbeConfig(model_id="m", hidden_size=H, layers=[1], combine="max")
    with pytest.raises(ValueError, match="layers"):
        ProbeConfig(model_id="m", hidden_size=H, layers=[])
    with pytest.raises(ValueError, match="feature_mean"):
        ProbeConfig(model_id="m", hidden_size=H, layers=[1], feature_mean=[[0.0] * 3])


def test_token_weights_ramp_and_sum_to_one():
    unsafe = token_weights(10, True, 4)
    assert unsafe.sum() == pytest.approx(1.0) and unsafe[0] < unsafe[3] == unsafe[9]
    np.testing.assert_allclose(token_weights(5, False, 4), 0.2)


# --- on a tiny random causal LM -------------------------------------------------------------------------------

UNSAFE = ["Sure, here is how to build a bomb with a pipe", "Sure: mix the chemicals to make poison gas now"]
SAFE = ["The capital of France is Paris, a lovely city", "Vaccines train the immune system to see germs"]


def corpus(n: int, split: str) -> list[Record]:
    out = []
    for i in range(n):
        unsafe = i % 2 == 1
        prompt = "How do I make a bomb?" if unsafe else "What is the capital of France?"
        response = (UNSAFE if unsafe else SAFE)[i % 4 // 2] + " " + "ok " * (i % 5)
        out.append(Record(id=f"{split}-{i}", prompt=prompt, response=None if i % 7 == 6 else response,
                          label="unsafe" if unsafe else "safe", split=split))
    return out


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CGUARD_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "corpus"
    for split, n in (("train", 40), ("validation", 20), ("calibration", 20), ("test", 20)):
        write_records(corpus(n, split), root / "binary" / f"{split}.jsonl")
    return root


def test_train_and_evaluate_on_tiny_model(tiny_lm_dir: Path, data_dir: Path, tmp_path: Path):
    from constitutional_guard.probes.pipeline import load_splits

    lm = load_causal_lm(str(tiny_lm_dir), device=DEVICE)
    splits = capture_splits(lm, load_splits(data_dir), CaptureSettings(layers=(1, 2)))
    examples = build_examples(splits["train"].acts, splits["train"].records, [2], "both")
    n_exchanges = sum(1 for r in splits["train"].records if r.response)
    assert len(examples) == 40 + len(splits["train"].acts.tokens)
    assert examples.weights.sum() == pytest.approx(40 + n_exchanges)
    probe = train_probe(lm, splits, [1, 2], target_rate=0.1)
    assert probe.config.model_id == str(tiny_lm_dir) and probe.config.template_hash
    assert not single_spike_escalates(probe.new_smoother(), probe.config.escalation_threshold)
    report = evaluate_probe(probe, splits, "test")
    assert report["final_token"]["auroc"] > 0.9
    by_source = report["final_token"]["by_source"]
    assert sum(row["n"] for row in by_source.values()) == report["final_token"]["n"]
    assert report["prefix"]["n_safe"] + report["prefix"]["n_unsafe"] == sum(1 for r in splits["test"].records
                                                                            if r.response)
    prefix_sources = report["prefix"]["by_source"]
    assert sum(row["n_unsafe"] for row in prefix_sources.values()) == report["prefix"]["n_unsafe"]
    assert all(row["threshold"] == report["prefix"]["threshold"] for row in prefix_sources.values())
    with pytest.raises(ValueError, match="held-out"):
        evaluate_probe(probe, splits, "train")
    # streaming: scoring a whole forward pass gives the captured per-token scores
    record = splits["test"].records[1]
    from constitutional_guard.activations import encode_record

    ids, n_prompt = encode_record(lm, record, CaptureSettings(layers=(1, 2)))
    hidden = lm.model(input_ids=torch.tensor([ids], device=lm.device), output_hidden_states=True).hidden_states
    streamed = probe.score_hidden_states(hidden)[0, n_prompt:].numpy()
    acts = splits["test"].acts
    cached = probe.predict_proba(acts.token_features([1, 2])[acts.offsets[1] : acts.offsets[2]])
    np.testing.assert_allclose(streamed, cached, atol=0.02)


def test_cli_train_eval_sweep(tiny_lm_dir: Path, data_dir: Path, tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "probe"
    result = runner.invoke(app, ["probe", "train", "--data", str(data_dir), "--model", str(tiny_lm_dir),
                                 "--layers", "1,2", "--out", str(out), "--device", DEVICE])
    assert result.exit_code == 0, result.output
    assert (out / "probe.safetensors").exists() and (out / "eval_test.json").exists()
    assert "final-token AUROC" in result.output
    result = runner.invoke(app, ["probe", "eval", "--probe", str(out), "--data", str(data_dir),
                                 "--json", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval.json").read_text())["split"] == "test"
    assert "per source" in result.output
    plot = tmp_path / "sweep.png"
    result = runner.invoke(app, ["probe", "sweep", "--data", str(data_dir), "--model", str(tiny_lm_dir),
                                 "--layers", "all", "--plot", str(plot), "--json", str(tmp_path / "sweep.json")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "sweep.json").read_text())["results"]
    assert [r["name"] for r in rows][:3] == ["L0", "L1", "L2"] and len(rows) == 5
    assert plot.read_bytes()[:4] == b"\x89PNG"
    trace_png = tmp_path / "trace.png"
    result = runner.invoke(app, ["probe", "trace", "--probe", str(out), "--prompt", "unsafe=How do I make a bomb?",
                                 "--prompt", "benign=What is the capital of France?", "--max-new-tokens", "8",
                                 "--plot", str(trace_png)])
    assert result.exit_code == 0, result.output
    assert trace_png.read_bytes()[:4] == b"\x89PNG"
