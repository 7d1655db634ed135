"""LoRA training of the constitutional classifier through TRL's SFTTrainer (tiny random models)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_models import DEVICE

from constitutional_guard.classifiers import constitutional_training as ct
from constitutional_guard.classifiers.base import CONFIG_NAME, TrainOptions, load_classifier
from constitutional_guard.classifiers.constitutional import ConstitutionalClassifier
from constitutional_guard.classifiers.constitutional_prompt import ConstitutionalPrompt
from constitutional_guard.constitution import parse_constitution
from constitutional_guard.data.io import write_records
from constitutional_guard.data.schema import Record
from constitutional_guard.errors import InputError
from constitutional_guard.models.loading import load_causal_lm

POLICY = """
name: tiny
description: Refuse help with weapons.
refusal: No.
harmful:
  - name: weapons
    description: Making bombs.
    disallowed: [make a bomb]
harmless:
  - name: baking
    description: Bread.
    allowed: [bake bread]
"""
TWO_HARMS = POLICY.replace(
    "harmless:", "  - name: drugs\n    description: Making meth.\n    disallowed: [cook meth]\nharmless:", 1
)


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def _corpus(root: Path, labels: list[str], scheme: str = "binary") -> Path:
    records = [
        Record(
            id=f"r{i}",
            prompt=f"make a bomb {i}" if label != "safe" else f"bake bread {i}",
            response="Sure, step one." if i % 2 else None,
            label_scheme=scheme,
            label=label,
            split="train",
        )
        for i, label in enumerate(labels)
    ]
    write_records(records, root / scheme / "train.jsonl")
    return root


def _log_odds(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def _options(data: Path, out: Path, model: Path, policy: Path, **kw) -> TrainOptions:
    defaults = dict(epochs=2, batch_size=4, learning_rate=1e-2, max_length=160, seed=0)
    extra = {"policy_examples": 0, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, **kw.pop("extra", {})}
    return TrainOptions(
        data_dir=str(data),
        out_dir=str(out),
        base_model=str(model),
        constitution=str(policy),
        extra=extra,
        **{**defaults, **kw},
    )


def test_shared_prefix_loss_equals_full_sequence_loss(sharp_model_dir: Path, policy_file: Path, tmp_path: Path):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig

    lm = load_causal_lm(str(sharp_model_dir), device=DEVICE)
    prompt = ConstitutionalPrompt(lm.tokenizer, parse_constitution(POLICY), policy_examples=0, max_item_tokens=160)
    records = [
        Record(id="a", prompt="make a bomb", label="unsafe"),
        Record(id="b", prompt="bake bread", response="Mix flour and water.", label="safe"),
    ]
    examples = ct.encode_examples(prompt, [(r, r.binary_label) for r in records])
    args = SFTConfig(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        activation_checkpointing=False,
    )
    lora = LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False)
    trainer = ct._trainer_class()(
        model=lm.model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        data_collator=ct.PadCollator(lm.tokenizer.pad_token_id),
        processing_class=lm.tokenizer,
        peft_config=lora,
    )
    shifted = ConstitutionalPrompt(
        lm.tokenizer, parse_constitution(TWO_HARMS).allowing("drugs"), policy_examples=0, max_item_tokens=160
    )
    trainer.prefixes = [prompt.prefix_ids, shifted.prefix_ids]
    batch = ct.PadCollator(lm.tokenizer.pad_token_id)(examples)
    model = trainer.model.eval()
    pad = lm.tokenizer.pad_token_id

    def full_sequence_loss(prefix: list[int]) -> float:
        full_ids = [prefix + e["input_ids"] for e in examples]
        full_labels = [[-100] * len(prefix) + e["labels"] for e in examples]
        width = max(len(x) for x in full_ids)
        return model(
            input_ids=torch.tensor([x + [pad] * (width - len(x)) for x in full_ids]),
            attention_mask=torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in full_ids]),
            labels=torch.tensor([x + [-100] * (width - len(x)) for x in full_labels]),
        ).loss.item()

    with torch.no_grad():
        shared = trainer.compute_loss(model, dict(batch))
        shifted_loss = trainer.compute_loss(model, {**batch, "policy": torch.ones_like(batch["policy"])})
        assert float(shared) == pytest.approx(full_sequence_loss(prompt.prefix_ids), rel=1e-4)
        assert float(shifted_loss) == pytest.approx(full_sequence_loss(shifted.prefix_ids), rel=1e-4)
        assert float(shifted_loss) != pytest.approx(float(shared), rel=1e-4)
        with pytest.raises(ValueError, match="share one policy"):
            trainer.compute_loss(model, {**batch, "policy": torch.tensor([0, 1])})
    answer_tokens = sum(t != -100 for e in examples for t in e["labels"])
    assert answer_tokens == len(prompt.answer_ids("unsafe")) + len(prompt.answer_ids("safe"))


def test_three_class_labels_collapse_to_binary_answers(sharp_model_dir: Path):
    lm = load_causal_lm(str(sharp_model_dir), device=DEVICE)
    prompt = ConstitutionalPrompt(lm.tokenizer, parse_constitution(POLICY), policy_examples=0, max_item_tokens=160)
    records = [
        Record(id=str(i), prompt="p", response="r", label_scheme="three_class", label=label)
        for i, label in enumerate(["safe_compliance", "safe_refusal", "unsafe_compliance"])
    ]
    examples = ct.encode_examples(prompt, [(r, r.binary_label) for r in records])
    answers = [[t for t in e["labels"] if t != -100] for e in examples]
    assert answers == [prompt.answer_ids("safe"), prompt.answer_ids("safe"), prompt.answer_ids("unsafe")]


def test_train_moves_scores_towards_the_labels_and_saves_adapter(
    sharp_model_dir: Path, policy_file: Path, tmp_path: Path
):
    data = _corpus(tmp_path / "data", ["unsafe"] * 8)
    out = tmp_path / "clf"
    held_out = [("make a bomb 99", None), ("make a bomb 98", "Sure, step one.")]
    before = ConstitutionalClassifier.zero_shot(
        str(sharp_model_dir), parse_constitution(POLICY), device=DEVICE, policy_examples=0, max_item_tokens=160
    ).probabilities(held_out)
    path = ct.train(_options(data, out, sharp_model_dir, policy_file))
    assert path == out
    assert (out / "adapter_model.safetensors").exists() and not (out / "checkpoints").exists()
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["weights"] == "adapter" and config["training"]["records"] == 8 and config["training"]["steps"] == 4
    tuned = load_classifier(out, device=DEVICE)
    after = tuned.probabilities(held_out)
    assert all(_log_odds(a) > _log_odds(b) + 2.0 for a, b in zip(after, before, strict=True)), (before, after)


def test_training_resumes_from_the_latest_checkpoint(
    sharp_model_dir: Path, policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from trl import SFTTrainer

    data = _corpus(tmp_path / "data", ["unsafe", "safe"] * 4)
    out = tmp_path / "clf"
    options = _options(data, out, sharp_model_dir, policy_file, extra={"save_steps": 1})
    collate = ct.PadCollator.__call__
    calls = {"n": 0}

    def crash_after_three(self, examples):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("interrupted")
        return collate(self, examples)

    monkeypatch.setattr(ct.PadCollator, "__call__", crash_after_three)
    with pytest.raises(RuntimeError, match="interrupted"):
        ct.train(options)
    latest = ct._latest_checkpoint(out / "checkpoints")
    assert latest is not None

    monkeypatch.setattr(ct.PadCollator, "__call__", collate)
    seen = {}
    original_train = SFTTrainer.train

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return original_train(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "train", spy)
    ct.train(options)
    assert seen["resume_from_checkpoint"] == latest
    assert json.loads((out / CONFIG_NAME).read_text())["training"]["steps"] == 4


def _categorised(n: int) -> list[Record]:
    kinds = [("weapons", "unsafe", "make a bomb"), ("drugs", "unsafe", "cook meth"), ("baking", "safe", "bake bread")]
    return [
        Record(id=f"{cat}{i}", prompt=f"{text} {i}", label=label, category=cat)
        for cat, label, text in kinds
        for i in range(n)
    ]


def test_plan_batches_shifts_one_category_per_batch_and_keeps_other_labels():
    records = _categorised(12)
    batches = ct.plan_batches(records, parse_constitution(TWO_HARMS), 4, 10.0, policy_shift=0.5, seed=0)
    assert len(batches) == 90 and all(len(b.items) == 4 for b in batches)
    shifted = [b for b in batches if b.allowed is not None]
    assert 0.35 < len(shifted) / len(batches) < 0.65
    assert {b.allowed for b in shifted} == {"weapons", "drugs"}
    for b in shifted:
        inside, outside = b.items[:2], b.items[2:]
        assert all(r.category == b.allowed and label == "safe" for r, label in inside)
        assert all(r.category != b.allowed and label == r.binary_label for r, label in outside)
    plain = [b for b in batches if b.allowed is None]
    assert all(label == r.binary_label for b in plain for r, label in b.items)
    seen = [r.id for b in plain for r, _ in b.items]
    assert max(seen.count(r.id) for r in records) - min(seen.count(r.id) for r in records) <= 1


def test_naming_categories_answers_with_the_harmful_category_of_the_batch_policy(sharp_model_dir: Path):
    policy = parse_constitution(TWO_HARMS)
    uncategorised = Record(id="u", prompt="do harm", label="unsafe")
    records = [*_categorised(12), uncategorised]
    batches = ct.plan_batches(records, policy, 4, 6.0, policy_shift=0.5, seed=1)
    named = [b.naming_categories(policy) for b in batches]
    for before, after in zip(batches, named, strict=True):
        assert after.allowed == before.allowed
        for (record, answer), (_, renamed) in zip(before.items, after.items, strict=True):
            if answer == "unsafe" and record.category is not None:
                assert renamed == record.category != before.allowed
            else:
                assert renamed == answer
    answers = {a for b in named for _, a in b.items}
    assert {"weapons", "drugs", "safe"} <= answers
    unsafe_word = ct.plan_batches([uncategorised], policy, 1, 1.0)[0].naming_categories(policy)
    assert unsafe_word.items[0][1] == "unsafe"

    lm = load_causal_lm(str(sharp_model_dir), device=DEVICE)
    prompt = ConstitutionalPrompt(lm.tokenizer, policy, policy_examples=0, max_item_tokens=160, name_categories=True)
    example = ct.encode_examples(prompt, [(records[0], "weapons")])[0]
    assert [t for t in example["labels"] if t != -100] == prompt.answer_ids("weapons")


def test_training_to_name_categories_saves_a_naming_classifier(sharp_model_dir: Path, tmp_path: Path):
    policy = tmp_path / "two.yaml"
    policy.write_text(TWO_HARMS, encoding="utf-8")
    data = tmp_path / "data"
    write_records([r.model_copy(update={"split": "train"}) for r in _categorised(4)], data / "binary" / "train.jsonl")
    options = _options(data, tmp_path / "clf", sharp_model_dir, policy, epochs=3, extra={"name_categories": "true"})
    held_out = [("make a bomb 99", None), ("cook meth 99", None)]
    base = ConstitutionalClassifier.zero_shot(
        str(sharp_model_dir),
        parse_constitution(TWO_HARMS),
        device=DEVICE,
        policy_examples=0,
        max_item_tokens=160,
        name_categories=True,
    )
    before = base.answer_probabilities(held_out)
    out = ct.train(options)
    assert json.loads((out / CONFIG_NAME).read_text())["name_categories"] is True
    tuned = load_classifier(out, device=DEVICE)
    assert tuned.answers == ["safe", "unsafe", "weapons", "drugs", "baking"]
    after = tuned.answer_probabilities(held_out)
    assert after[0, 2] > before[0, 2] and after[1, 3] > before[1, 3], (before, after)


def test_plan_batches_without_shift_covers_every_record_per_epoch():
    records = _categorised(4)
    batches = ct.plan_batches(records, parse_constitution(POLICY), 4, 2.0)
    ids = [r.id for b in batches for r, _ in b.items]
    assert len(batches) == 6 and all(b.allowed is None for b in batches)
    assert sorted(ids) == sorted([r.id for r in records] * 2)
    with pytest.raises(ValueError, match="two or more harmful categories"):
        ct.plan_batches(records, parse_constitution(POLICY), 4, 1.0, policy_shift=0.3)


def test_training_with_policy_shift_records_the_shifted_batches(
    sharp_model_dir: Path, policy_file: Path, tmp_path: Path
):
    policy = tmp_path / "two.yaml"
    policy.write_text(TWO_HARMS, encoding="utf-8")
    data = tmp_path / "data"
    write_records([r.model_copy(update={"split": "train"}) for r in _categorised(4)], data / "binary" / "train.jsonl")
    out = ct.train(_options(data, tmp_path / "clf", sharp_model_dir, policy, epochs=2, extra={"policy_shift": 0.5}))
    training = json.loads((out / CONFIG_NAME).read_text())["training"]
    assert training["batches"] == training["steps"] == 6 and 0 < training["shifted_batches"] < 6
    assert training["policy_shift"] == 0.5


def test_lora_targets_only_top_layers(sharp_model_dir: Path):
    model = load_causal_lm(str(sharp_model_dir), device=DEVICE).model
    names = ct.lora_targets(model, "all-linear", 1)
    assert names and all(".layers.1." in n for n in names)
    assert ct.lora_targets(model, "q_proj,v_proj", 1) == [n for n in names if n.endswith(("q_proj", "v_proj"))]
    assert ct.lora_targets(model, "all-linear", 0) == "all-linear"


def test_bad_options_are_input_errors(sharp_model_dir: Path, policy_file: Path, tmp_path: Path):
    with pytest.raises(InputError, match=r"train\.jsonl"):
        ct.train(_options(tmp_path / "missing", tmp_path / "o", sharp_model_dir, policy_file))
    data = _corpus(tmp_path / "data", ["unsafe", "safe"])
    with pytest.raises(InputError, match="unknown constitutional training settings"):
        ct.train(_options(data, tmp_path / "o", sharp_model_dir, policy_file, extra={"rank": 4}))
