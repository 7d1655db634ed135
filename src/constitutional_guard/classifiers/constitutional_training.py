"""Train the constitutional LM classifier: PEFT LoRA through TRL's ``SFTTrainer``, loss on the answer only.

Every example is the policy prefix, the item (content + question + assistant opener) and the
answer word. All examples of a batch share one policy, so each step runs its prefix once (with the
adapter, with gradients) and expands the KV cache over the batch instead of repeating it per row.
Labels come from the corpus as binary safe / unsafe (three-class collapses: unsafe = unsafe
compliance). Checkpoints go to ``<out_dir>/checkpoints`` and training resumes from the latest; the
finished classifier replaces ``out_dir`` (checkpoints dropped).

Policy shifts teach the classifier to read its policy rather than memorise one: a share
(``policy_shift``) of the batches is trained under a copy of the constitution in which one harmful
category is allowed. Half of such a batch is content of that category, answered ``safe``; the other
half is content from elsewhere with its own label, so the same words flip with the policy alone.

With ``name_categories`` the answer to unsafe content of a category the batch's policy lists as
harmful is that category's name (the unsafe word for content without one), so the classifier learns
which category it is judging and a category moved to the harmless side stops counting at scoring.

Kind-specific ``options.extra`` keys: ``lora_r`` (16), ``lora_alpha`` (32), ``lora_dropout`` (0.05),
``target_modules`` ("all-linear"), ``lora_layers`` (0 = all; n = only the top n layers, which also
stops the backward pass below them), ``policy_examples`` (2), ``labels`` ("safe,unsafe"),
``save_steps`` (50), ``logging_steps`` (10), ``gradient_accumulation_steps`` (1), ``merge`` (false),
``balance`` (false: when true, the capped training sample has equal safe and unsafe counts),
``policy_shift`` (0.0: share of batches under a constitution that allows one harmful category),
``name_categories`` (false: when true, unsafe answers name the harmful category).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from constitutional_guard.classifiers.base import TrainOptions
from constitutional_guard.classifiers.constitutional import ConstitutionalClassifier, ConstitutionalConfig
from constitutional_guard.classifiers.constitutional_prompt import ConstitutionalPrompt, record_item
from constitutional_guard.constitution import Constitution, load_constitution
from constitutional_guard.data.corpus import split_path
from constitutional_guard.data.io import read_records
from constitutional_guard.data.schema import Record
from constitutional_guard.errors import InputError
from constitutional_guard.models.loading import load_causal_lm, new_kv_cache

EXTRA_DEFAULTS: dict[str, Any] = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "lora_layers": 0,
    "policy_examples": 2,
    "labels": "safe,unsafe",
    "save_steps": 50,
    "logging_steps": 10,
    "gradient_accumulation_steps": 1,
    "merge": False,
    "balance": False,
    "policy_shift": 0.0,
    "name_categories": False,
}


def _extra(options: TrainOptions) -> dict[str, Any]:
    unknown = sorted(set(options.extra) - set(EXTRA_DEFAULTS))
    if unknown:
        raise InputError.one(
            "--set",
            f"unknown constitutional training settings {unknown}; known: {', '.join(EXTRA_DEFAULTS)}",
            field="extra",
        )
    return {**EXTRA_DEFAULTS, **options.extra}


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def training_records(options: TrainOptions, balance: bool = False) -> list[Record]:
    """The training split, capped at ``options.max_train`` by a seeded sample (optionally class-balanced)."""
    try:
        path = split_path(options.data_dir, "train", options.label_scheme)
    except ValueError as exc:  # an unknown label scheme
        raise InputError.one(options.data_dir, str(exc), field="label_scheme") from None
    if not path.exists():
        raise InputError.one(path, "training split not found (expected <data_dir>/<scheme>/train.jsonl)")
    records = read_records(path)
    if not records:
        raise InputError.one(path, "training split is empty")
    rng = random.Random(options.seed)
    cap = options.max_train
    if balance:
        by_label = {lab: [r for r in records if r.binary_label == lab] for lab in ("safe", "unsafe")}
        per_class = min(len(v) for v in by_label.values())
        if cap is not None:
            per_class = min(per_class, cap // 2)
        records = [r for group in by_label.values() for r in rng.sample(group, per_class)]
    elif cap is not None and cap < len(records):
        records = rng.sample(records, cap)
    rng.shuffle(records)
    return records


@dataclass(frozen=True)
class PlannedBatch:
    """One training step: the records, their answers and the policy they are judged under."""

    allowed: str | None
    """Harmful category the policy allows for this batch; None: the constitution as given."""
    items: list[tuple[Record, str]]
    """(record, answer): ``safe``, ``unsafe`` or (naming categories) a harmful category's name."""

    def policy(self, constitution: Constitution) -> Constitution:
        """The constitution this batch is judged under."""
        return constitution if self.allowed is None else constitution.allowing(self.allowed)

    def naming_categories(self, constitution: Constitution) -> PlannedBatch:
        """The batch with each unsafe answer replaced by the record's category where the policy lists it."""
        harmful = set(self.policy(constitution).harmful_names)
        named = [(r, r.category if a == "unsafe" and r.category in harmful else a) for r, a in self.items]
        return PlannedBatch(self.allowed, named)


def plan_batches(
    records: list[Record],
    constitution: Constitution,
    batch_size: int,
    epochs: float,
    policy_shift: float = 0.0,
    seed: int = 0,
) -> list[PlannedBatch]:
    """``ceil(epochs * len(records) / batch_size)`` full batches; ``policy_shift`` of them under a shifted policy."""
    if not 0.0 <= policy_shift <= 1.0:
        raise ValueError(f"policy_shift must be in [0, 1], got {policy_shift}")
    rng = random.Random(seed)
    by_category = {
        name: [r for r in records if r.category == name and r.is_unsafe] for name in constitution.harmful_names
    }
    half = max(batch_size // 2, 1)
    shiftable = [name for name, group in by_category.items() if len(group) >= half]
    if policy_shift > 0 and (len(by_category) < 2 or not shiftable):
        raise ValueError(
            f"policy_shift needs two or more harmful categories, one of them with at least {half} unsafe "
            "training records"
        )
    order: list[Record] = []
    batches = []
    for _ in range(max(1, math.ceil(epochs * len(records) / batch_size))):
        if shiftable and rng.random() < policy_shift:
            name = rng.choice(shiftable)
            inside = rng.sample(by_category[name], half)
            outside = rng.sample([r for r in records if r.category != name], batch_size - half)
            items = [(r, "safe") for r in inside] + [(r, r.binary_label) for r in outside]
            batches.append(PlannedBatch(name, items))
            continue
        while len(order) < batch_size:
            order += rng.sample(records, len(records))
        chunk, order = order[:batch_size], order[batch_size:]
        batches.append(PlannedBatch(None, [(r, r.binary_label) for r in chunk]))
    return batches


def encode_examples(
    prompt: ConstitutionalPrompt, items: list[tuple[Record, str]], policy: int = 0
) -> list[dict[str, list[int] | int]]:
    """Item ids + answer ids per (record, answer); labels are -100 except on the answer token(s).

    An answer is ``safe`` / ``unsafe`` (written as the prompt's label words) or a category name.
    ``policy`` indexes the prefix (the policy text) the example is trained under.
    """
    words = dict(zip(("safe", "unsafe"), prompt.labels, strict=True))
    examples: list[dict[str, list[int] | int]] = []
    for record, label in items:
        item = prompt.item_ids(*record_item(record))
        answer = prompt.answer_ids(words.get(label, label))
        examples.append({"input_ids": item + answer, "labels": [-100] * len(item) + answer, "policy": policy})
    return examples


class PadCollator:
    """Right-pads item ids and labels (the policy prefix is prepended inside the trainer)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        ids, labels, mask = [], [], []
        for e in examples:
            pad = width - len(e["input_ids"])
            ids.append(e["input_ids"] + [self.pad_id] * pad)
            labels.append(e["labels"] + [-100] * pad)
            mask.append([1] * len(e["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
            "policy": torch.tensor([e.get("policy", 0) for e in examples]),
        }


def _trainer_class() -> type:
    from trl import SFTTrainer

    class SharedPrefixSFTTrainer(SFTTrainer):
        """SFTTrainer that runs the batch's policy prefix once per step and reuses its KV cache for the batch."""

        prefixes: list[list[int]]
        """Prefix ids per policy index (0: the constitution as given)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            policy = inputs.pop("policy")
            if bool((policy != policy[0]).any()):
                raise ValueError("every example of a batch must share one policy prefix")
            batch = inputs["input_ids"].shape[0]
            device = inputs["input_ids"].device
            prefix = torch.tensor([self.prefixes[int(policy[0])]], device=device)
            cache_arg = new_kv_cache(model)
            model(input_ids=prefix, use_cache=True, **cache_arg)
            (cache,) = cache_arg.values()
            cache.batch_repeat_interleave(batch)
            ones = torch.ones(batch, prefix.shape[1], dtype=inputs["attention_mask"].dtype, device=device)
            mask = torch.cat([ones, inputs["attention_mask"]], dim=-1)
            positions = prefix.shape[1] + torch.arange(inputs["input_ids"].shape[1], device=device).expand(batch, -1)
            inputs = {**inputs, "attention_mask": mask, "position_ids": positions, **cache_arg}
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return SharedPrefixSFTTrainer


def lora_targets(model: Any, target_modules: str, top_layers: int) -> str | list[str]:
    """PEFT ``target_modules``: as given, or the matching linear layers of the top ``top_layers`` blocks only."""
    if top_layers <= 0:
        return target_modules if target_modules == "all-linear" else target_modules.split(",")
    wanted = None if target_modules == "all-linear" else {t.strip() for t in target_modules.split(",")}
    blocks = re.compile(r"\.layers\.(\d+)\.")
    found = {int(m.group(1)) for name, _ in model.named_modules() if (m := blocks.search(name))}
    if not found:
        raise ValueError("lora_layers needs a model whose blocks are named '.layers.<i>.'; use lora_layers=0")
    top = set(sorted(found)[-top_layers:])
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (m := blocks.search(name)) is not None
        and int(m.group(1)) in top
        and (wanted is None or name.rsplit(".", 1)[-1] in wanted)
    ]


def _latest_checkpoint(folder: Path) -> str | None:
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(checkpoints[-1]) if checkpoints else None


def train(options: TrainOptions) -> Path:
    """Fine-tune a LoRA constitutional classifier; returns the folder to ``from_pretrained``."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig

    extra = _extra(options)
    labels = [w.strip() for w in str(extra["labels"]).split(",")]
    constitution = load_constitution(options.constitution)
    records = training_records(options, balance=_as_bool(extra["balance"]))
    policy_shift = float(extra["policy_shift"])
    batches = plan_batches(records, constitution, options.batch_size, options.epochs, policy_shift, options.seed)
    name_categories = _as_bool(extra["name_categories"])
    if name_categories:
        batches = [b.naming_categories(constitution) for b in batches]
    lm = load_causal_lm(options.base_model)
    config = ConstitutionalConfig(
        base_model=options.base_model,
        constitution_sha256=constitution.fingerprint(),
        weights="adapter",
        labels=labels,
        policy_examples=int(extra["policy_examples"]),
        max_item_tokens=options.max_length,
        name_categories=name_categories,
        training={
            "records": len(records),
            "unsafe": sum(r.is_unsafe for r in records),
            "epochs": options.epochs,
            "batches": len(batches),
            "shifted_batches": sum(b.allowed is not None for b in batches),
            "policy_shift": policy_shift,
            "batch_size": options.batch_size,
            "learning_rate": options.learning_rate,
            "seed": options.seed,
            "data_dir": str(options.data_dir),
            **{k: extra[k] for k in ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "lora_layers")},
        },
    )

    def policy_prompt(policy: Constitution) -> ConstitutionalPrompt:
        return ConstitutionalPrompt(
            lm.tokenizer,
            policy,
            labels,
            config.policy_examples,
            config.max_item_tokens,
            lm.use_chat_template,
            config.name_categories,
        )

    prompt = policy_prompt(constitution)
    policies: list[str | None] = [None, *sorted({b.allowed for b in batches if b.allowed is not None})]
    prefixes = [prompt.prefix_ids] + [policy_prompt(constitution.allowing(name)).prefix_ids for name in policies[1:]]
    examples = [e for b in batches for e in encode_examples(prompt, b.items, policies.index(b.allowed))]
    out = Path(options.out_dir)
    checkpoints = out / "checkpoints"
    args = SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=1,  # the planned batches already cover ``options.epochs`` passes
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=int(extra["gradient_accumulation_steps"]),
        learning_rate=options.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        logging_steps=int(extra["logging_steps"]),
        save_steps=int(extra["save_steps"]),
        save_total_limit=2,
        seed=options.seed,
        report_to=[],
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        activation_checkpointing=False,  # the shared prefix needs its KV cache
        train_sampling_strategy="sequential",  # keeps each planned batch (and its policy) together
        use_cpu=lm.device.type == "cpu",
        bf16=lm.dtype == torch.bfloat16,
    )
    lora = LoraConfig(
        r=int(extra["lora_r"]),
        lora_alpha=int(extra["lora_alpha"]),
        lora_dropout=float(extra["lora_dropout"]),
        target_modules=lora_targets(lm.model, str(extra["target_modules"]), int(extra["lora_layers"])),
        task_type="CAUSAL_LM",
    )
    trainer = _trainer_class()(
        model=lm.model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        data_collator=PadCollator(int(lm.tokenizer.pad_token_id)),
        processing_class=lm.tokenizer,
        peft_config=lora,
    )
    trainer.prefixes = prefixes
    resume = _latest_checkpoint(checkpoints) if options.resume else None
    trainer.train(resume_from_checkpoint=resume)
    config.training["steps"] = trainer.state.global_step
    lm.model = trainer.model.eval()
    classifier = ConstitutionalClassifier(lm, constitution, config)
    if _as_bool(extra["merge"]):
        classifier = classifier.merge()
    classifier.save_pretrained(out)  # replaces out_dir as a whole, checkpoints included
    return out
