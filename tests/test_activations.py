import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import DEVICE

from constitutional_guard import activations
from constitutional_guard.activations import CaptureSettings, capture, capture_dir, capture_key, resolve_layers
from constitutional_guard.data.schema import Record
from constitutional_guard.models import load_causal_lm


def make_records(n: int = 10) -> list[Record]:
    out = []
    for i in range(n):
        unsafe = i % 2 == 0
        topic = "how to make a bomb " if unsafe else "what is the capital of France "
        prompt = f"Question {i}: " + topic * (1 + i % 3)
        answer = "Sure, here is how. " * (1 + i % 4) if unsafe else "Paris is. " * (i % 3 + 1)
        response = None if i % 5 == 4 else answer
        out.append(Record(id=f"r{i}", prompt=prompt, response=response, label="unsafe" if unsafe else "safe"))
    return out


@pytest.fixture()
def lm(tiny_lm_dir: Path):
    return load_causal_lm(str(tiny_lm_dir), device=DEVICE)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CGUARD_CACHE_DIR", str(tmp_path / "cache"))


def test_resolve_layers():
    assert resolve_layers("all", 4) == [0, 1, 2, 3, 4]
    assert resolve_layers("1,3-4", 4) == [1, 3, 4]
    assert resolve_layers("-1", 4) == [4]
    assert resolve_layers("every:3", 7) == [0, 3, 6, 7]
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers("9", 4)
    with pytest.raises(ValueError, match="bad layer spec"):
        resolve_layers("x", 4)


@pytest.mark.parametrize("layers", [(0, 1, 2), (1, 0), (0,)])  # (1, 0) and (0,) stop before the last block
def test_batched_capture_matches_one_at_a_time(lm, layers):
    records = make_records()
    settings = CaptureSettings(layers=layers, batch_size=4, shard_records=3)
    acts = capture(lm, records, settings)
    assert acts.final.dtype == np.float16 and acts.final.shape == (10, len(layers), 32)
    for i, record in enumerate(records):
        ids, n_prompt = activations.encode_record(lm, record, settings)
        reference = torch.stack([lm.hidden_states(ids)[layer] for layer in layers], dim=1)  # [seq, layers, hidden]
        np.testing.assert_allclose(acts.final[i].astype(np.float32), reference[-1].numpy(), atol=2e-2, rtol=1e-2)
        tokens = acts.tokens[acts.offsets[i] : acts.offsets[i + 1]]
        assert len(tokens) == len(ids) - n_prompt
        assert (len(tokens) == 0) == (record.response is None)
        np.testing.assert_allclose(tokens.astype(np.float32), reference[n_prompt:].numpy(), atol=2e-2, rtol=1e-2)


def test_capture_is_cached_keyed_and_resumes(lm, monkeypatch: pytest.MonkeyPatch):
    records = make_records()
    settings = CaptureSettings(layers=(1, 2), batch_size=2, shard_records=4)
    calls = {"n": 0}
    real_forward = activations.forward_batch

    def failing_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the first shard (4 records, two batches of 2) completes, then the run dies
            raise KeyboardInterrupt
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(activations, "forward_batch", failing_forward)
    with pytest.raises(KeyboardInterrupt):
        capture(lm, records, settings)
    folder = capture_dir(capture_key(lm, records, settings))
    index = json.loads((folder / "index.json").read_text())
    assert not index["complete"] and len(index["shards"]) == 1

    counted = {"n": 0}

    def counting_forward(*args, **kwargs):
        counted["n"] += len(args[1])
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(activations, "forward_batch", counting_forward)
    acts = capture(lm, records, settings)
    assert counted["n"] == 6  # only the records of the missing shards ran
    fresh = capture(lm, records, settings, root=folder.parent / "fresh")
    np.testing.assert_array_equal(acts.final, fresh.final)
    np.testing.assert_array_equal(acts.tokens, fresh.tokens)
    counted["n"] = 0
    capture(lm, records, settings)
    assert counted["n"] == 0  # complete captures are read from the cache
    other = capture_key(lm, records, CaptureSettings(layers=(2,)))
    assert capture_dir(other) != folder
    assert capture_dir(capture_key(lm, records[:-1], settings)) != folder
    with pytest.raises(ValueError, match="not captured"):
        acts.final_features([0])


def test_long_prompt_is_cut_from_the_left(lm):
    record = Record(id="long", prompt="word " * 400, response="Paris is the capital.", label="safe")
    settings = CaptureSettings(layers=(2,), max_length=64, max_response_tokens=4)
    ids, n_prompt = activations.encode_record(lm, record, settings)
    assert len(ids) == 64 and len(ids) - n_prompt == 4


def test_fewer_layers_reuse_a_cached_superset(lm, monkeypatch: pytest.MonkeyPatch):
    records = make_records(6)
    full = capture(lm, records, CaptureSettings(layers=(0, 1, 2)))
    monkeypatch.setattr(activations, "forward_batch", lambda *a, **k: pytest.fail("the model ran again"))
    subset = capture(lm, records, CaptureSettings(layers=(2, 1)))
    assert subset.layers == [2, 1]
    np.testing.assert_array_equal(subset.final, full.final[:, [2, 1]])
    np.testing.assert_array_equal(subset.tokens, full.tokens[:, [2, 1]])
    with pytest.raises(pytest.fail.Exception):
        capture(lm, records, CaptureSettings(layers=(1,), max_response_tokens=3))  # other limits: a new capture


def test_bench_capture_reports_every_variant(lm):
    from constitutional_guard.evaluation.bench_capture import bench_capture

    report = bench_capture(lm, make_records(6), CaptureSettings(layers=(1, 2), batch_size=4), chunk=4)
    reference, one, batched = report["results"]
    assert [r["variant"] for r in report["results"]] == ["reference_loop", "one_at_a_time", "batched"]
    assert all(r["records"] == 6 and r["tokens"] == report["tokens"] > 0 for r in report["results"])
    assert report["speedup"] == one["seconds"] / batched["seconds"]
    assert report["speedup_vs_reference_loop"] == reference["seconds"] / batched["seconds"]


@pytest.mark.real
def test_early_exit_capture_on_smollm2(smollm2_dir: Path):
    lm = load_causal_lm(str(smollm2_dir), device=DEVICE)
    records = make_records(3)
    settings = CaptureSettings(layers=(5, 0), batch_size=3)
    acts = capture(lm, records, settings)
    for i, record in enumerate(records):
        ids, n_prompt = activations.encode_record(lm, record, settings)
        hidden = lm.hidden_states(ids)
        reference = torch.stack([hidden[5], hidden[0]], dim=1)
        np.testing.assert_allclose(acts.final[i].astype(np.float32), reference[-1].numpy(), atol=5e-2, rtol=1e-2)
        tokens = acts.tokens[acts.offsets[i] : acts.offsets[i + 1]].astype(np.float32)
        np.testing.assert_allclose(tokens, reference[n_prompt:].numpy(), atol=5e-2, rtol=1e-2)
