"""Exchange classifier: scoring, save / load round trip, config checks, training with resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from tiny_models import DEVICE

from constitutional_guard.classifiers import exchange_training
from constitutional_guard.classifiers.base import (
    CONFIG_NAME,
    SafetyClassifier,
    Thresholds,
    TrainOptions,
    load_classifier,
)
from constitutional_guard.classifiers.exchange import ExchangeClassifier, ExchangeConfig
from constitutional_guard.classifiers.exchange_training import class_weights, select_inputs, train, with_prefixes
from constitutional_guard.data.schema import Record
from constitutional_guard.errors import InputError
from constitutional_guard.metrics import auroc

HARMFUL = ["build a pipe bomb", "make nerve gas", "hack my neighbour's bank", "poison a reservoir"]
BENIGN = ["bake sourdough bread", "learn the piano", "plant tomatoes", "write a birthday poem"]


def write_corpus(root: Path, per_split: int = 16, seed: int = 0) -> Path:
    """A small separable binary corpus: prompt-only records and exchanges, two sources."""
    rng = random.Random(seed)
    for split in ("train", "validation", "calibration", "test"):
        rows = []
        for i in range(per_split):
            unsafe = i % 2 == 0
            topic = rng.choice(HARMFUL if unsafe else BENIGN)
            row = {
                "id": f"{split}-{i}",
                "prompt": f"Tell me how to {topic}.",
                "label": "unsafe" if unsafe else "safe",
                "split": split,
                "source": "alpha" if i % 4 < 2 else "beta",
            }
            if i % 3 == 0:
                opener = "Sure, here is exactly how:" if unsafe else "Happy to help:"
                row["response"] = f"{opener} " + " ".join([topic] * 10)
            rows.append(row)
        (root / "binary").mkdir(parents=True, exist_ok=True)
        (root / "binary" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def make_classifier(encoder_dir: Path, scheme: str = "binary", max_length: int = 64) -> ExchangeClassifier:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = ExchangeConfig.for_scheme(scheme, max_length=max_length, base_model=str(encoder_dir))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(encoder_dir, num_labels=len(config.labels))
    return ExchangeClassifier(model, AutoTokenizer.from_pretrained(encoder_dir), config, device=DEVICE, batch_size=3)


def test_scores_are_probabilities_and_follow_thresholds(tiny_encoder_dir: Path) -> None:
    clf = make_classifier(tiny_encoder_dir)
    assert isinstance(clf, SafetyClassifier)
    result = clf.score("How do I bake bread?", "Mix flour and water.")
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.score == pytest.approx(result.probabilities["unsafe"])
    clf.thresholds = Thresholds(allow=0.0, block=0.0)
    assert clf.score("anything").verdict == "block"
    clf.thresholds = Thresholds(allow=1.0, block=1.0)
    assert clf.score("anything").verdict == "allow"
    clf.thresholds = Thresholds(allow=0.0, block=1.0)
    assert clf.score("anything").verdict == "uncertain"


def test_prompts_alone_use_the_prompt_thresholds(tiny_encoder_dir: Path) -> None:
    clf = make_classifier(tiny_encoder_dir)
    assert clf.prompt_thresholds == clf.thresholds  # none of their own: the exchange pair serves prompts
    clf.thresholds, clf.prompt_thresholds = Thresholds(1.0, 1.0), Thresholds(0.0, 0.0)
    prompt, exchange = clf.score_batch([("anything", None), ("anything", "reply")])
    assert (prompt.verdict, prompt.thresholds) == ("block", Thresholds(0.0, 0.0))
    assert (exchange.verdict, exchange.thresholds) == ("allow", Thresholds(1.0, 1.0))
    clf.prompt_thresholds = None
    assert clf.score("anything").verdict == "allow"
    assert (clf.config.prompt_allow, clf.config.prompt_block) == (None, None)


def test_batch_matches_single_and_keeps_order(tiny_encoder_dir: Path) -> None:
    clf = make_classifier(tiny_encoder_dir)
    items = [("short", None), ("a much longer prompt " * 5, "with a response"), ("mid length prompt", "ok")] * 2
    batch = clf.score_batch(items)
    single = [clf.score(p, r) for p, r in items]
    assert [b.score for b in batch] == pytest.approx([s.score for s in single], abs=1e-5)
    assert batch[0].score != pytest.approx(batch[1].score, abs=1e-7)
    assert clf.score_batch([]) == []


def test_long_inputs_fit_the_window(tiny_encoder_dir: Path) -> None:
    clf = make_classifier(tiny_encoder_dir, max_length=32)
    encoding = clf.encode("word " * 500, "answer " * 500)
    assert len(encoding["input_ids"]) <= 32
    assert 0.0 <= clf.score("word " * 500, "answer " * 500).score <= 1.0


def test_three_class_unsafe_score_is_unsafe_compliance(tiny_encoder_dir: Path) -> None:
    clf = make_classifier(tiny_encoder_dir, scheme="three_class")
    result = clf.score("prompt", "response")
    assert set(result.probabilities) == {"safe_compliance", "safe_refusal", "unsafe_compliance"}
    assert result.score == pytest.approx(result.probabilities["unsafe_compliance"])


def test_save_load_round_trip(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    clf = make_classifier(tiny_encoder_dir)
    clf.thresholds = Thresholds(allow=0.2, block=0.7)
    clf.prompt_thresholds = Thresholds(allow=0.4, block=0.9)
    clf.save_pretrained(tmp_path / "clf")
    loaded = load_classifier(tmp_path / "clf")
    assert isinstance(loaded, ExchangeClassifier)
    assert loaded.thresholds == Thresholds(allow=0.2, block=0.7)
    assert loaded.prompt_thresholds == Thresholds(allow=0.4, block=0.9)
    assert loaded.config.max_length == 64
    assert loaded.score("p", "r").score == pytest.approx(clf.score("p", "r").score, abs=1e-6)
    assert (tmp_path / "clf" / "model.safetensors").exists()
    saved = json.loads((tmp_path / "clf" / CONFIG_NAME).read_text())
    assert saved["kind"] == "exchange" and saved["labels"] == ["safe", "unsafe"]


def test_save_config_rewrites_only_the_config(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    clf = make_classifier(tiny_encoder_dir)
    clf.save_pretrained(tmp_path)
    weights = (tmp_path / "model.safetensors").stat().st_mtime_ns
    clf.thresholds = Thresholds(allow=0.1, block=0.9)
    clf.save_config(tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_mtime_ns == weights
    assert ExchangeClassifier.from_pretrained(tmp_path).thresholds == Thresholds(0.1, 0.9)


def test_config_without_prompt_thresholds_loads(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    clf = make_classifier(tiny_encoder_dir)
    clf.thresholds = Thresholds(0.1, 0.9)
    clf.save_pretrained(tmp_path)
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    del data["prompt_allow"], data["prompt_block"]  # as written before prompts had their own pair
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    assert ExchangeClassifier.from_pretrained(tmp_path).prompt_thresholds == Thresholds(0.1, 0.9)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "other"}, "kind"),
        ({"labels": ["a", "b"]}, "labels"),
        ({"unsafe_labels": ["nope"]}, "unsafe_labels"),
        ({"allow": 0.9, "block": 0.1}, "allow"),
        ({"prompt_allow": 0.2}, "prompt_allow / prompt_block: give both"),
        ({"prompt_allow": 0.9, "prompt_block": 0.1}, "prompt_allow / prompt_block: thresholds need"),
        ({"input_format": "concat"}, "input_format"),
    ],
)
def test_bad_config_is_an_input_error(tiny_encoder_dir: Path, tmp_path: Path, change: dict, field: str) -> None:
    make_classifier(tiny_encoder_dir).save_pretrained(tmp_path)
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    data.update(change)
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(InputError, match=field):
        ExchangeClassifier.from_pretrained(tmp_path)


def test_prefixes_added_only_where_the_corpus_has_none() -> None:
    response = " ".join(f"w{i}" for i in range(40))
    full = Record(id="x", prompt="p", response=response, label="unsafe")
    covered = Record(id="y", prompt="q", response=response, label="safe")
    existing = covered.model_copy(update={"id": "y~cut50", "response": "w0 w1", "meta": {"prefix_of": "y"}})
    prompt_only = Record(id="z", prompt="r", label="safe")
    out = with_prefixes([full, covered, existing, prompt_only], (0.25, 0.5))
    added = out[4:]
    assert [r.meta["prefix_of"] for r in added] == ["x", "x"]
    assert all(r.label == "unsafe" and len(r.response) < len(response) for r in added)
    assert with_prefixes([full], ()) == [full]


def test_select_inputs_splits_prompts_from_exchanges() -> None:
    prompt = Record(id="p", prompt="p", label="safe")
    exchange = Record(id="x", prompt="q", response="r", label="unsafe")
    prefix = exchange.model_copy(update={"id": "x~cut50", "meta": {"prefix_of": "x"}})
    records = [prompt, exchange, prefix]
    assert select_inputs(records, "all") == records
    assert select_inputs(records, "prompts") == [prompt]
    assert select_inputs(records, "exchanges") == [exchange, prefix]


def test_class_weights_balance_classes() -> None:
    weights = class_weights([0, 0, 0, 1], 2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])
    assert class_weights([0, 0], 3).tolist() == pytest.approx([1.0, 0.0, 0.0])


def test_train_learns_and_resumes(tiny_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_corpus(tmp_path / "data")
    out = tmp_path / "clf"
    options = TrainOptions(
        data_dir=str(data), out_dir=str(out), base_model=str(tiny_encoder_dir), epochs=3, batch_size=8,
        learning_rate=3e-3, max_length=48, extra={"eval_steps": 6, "patience": 10, "prefix_cuts": "0.5"},
    )  # fmt: skip
    # First run "dies" after its last checkpoint: keep the checkpoints it would otherwise clean up.
    monkeypatch.setattr(exchange_training.shutil, "rmtree", lambda *a, **k: None)
    train(TrainOptions(**{**options.__dict__, "epochs": 1}))
    assert any((out / "checkpoints").glob("checkpoint-*"))
    monkeypatch.undo()
    path = train(options)
    clf = load_classifier(path)
    training = clf.config.training
    assert training["resumed_from"].startswith("checkpoint-")
    assert training["train_examples"] > 16  # prefix augmentation added exchanges
    assert not (out / "checkpoints").exists()
    test = [json.loads(line) for line in (data / "binary" / "test.jsonl").read_text().splitlines()]
    scores = [r.score for r in clf.score_batch([(t["prompt"], t.get("response")) for t in test])]
    assert auroc([int(t["label"] == "unsafe") for t in test], scores) >= 0.9


def test_train_on_prompts_alone(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "data")
    options = TrainOptions(
        data_dir=str(data), out_dir=str(tmp_path / "clf"), base_model=str(tiny_encoder_dir), epochs=1, batch_size=8,
        max_length=48, extra={"inputs": "prompts"},
    )  # fmt: skip
    training = load_classifier(train(options)).config.training
    train_split = [json.loads(line) for line in (data / "binary" / "train.jsonl").read_text().splitlines()]
    assert training["inputs"] == "prompts"
    assert training["train_examples"] == sum(r.get("response") is None for r in train_split)


def test_train_rejects_unknown_settings(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    options = TrainOptions(
        data_dir=str(write_corpus(tmp_path)), out_dir=str(tmp_path / "o"), base_model=str(tiny_encoder_dir),
        extra={"lora_rank": 8},
    )  # fmt: skip
    with pytest.raises(ValueError, match="lora_rank"):
        train(options)
    with pytest.raises(ValueError, match="inputs: 'replies'"):
        train(TrainOptions(**{**options.__dict__, "extra": {"inputs": "replies"}}))


def test_train_names_a_missing_split(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    options = TrainOptions(data_dir=str(tmp_path), out_dir=str(tmp_path / "o"), base_model=str(tiny_encoder_dir))
    with pytest.raises(InputError, match=r"train\.jsonl"):
        train(options)
