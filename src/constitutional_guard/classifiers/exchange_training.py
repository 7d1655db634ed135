"""Train an exchange classifier: an encoder fine-tuned with class weights, prefix augmentation and early stopping.

Kind-specific settings (``TrainOptions.extra``): ``prefix_cuts`` (comma-separated fractions of a response at which
prefixes are added to exchanges that have none in the corpus yet; ``""`` for none; default 0.1,0.25,0.5,0.75),
``max_validation`` (cap on validation records, default all), ``patience`` (evaluations without improvement before
stopping, default 3), ``eval_steps`` (default: half an epoch), ``min_prompt_tokens`` (prompt tokens kept beside
a long response, default 64), ``exclude_sources`` (comma-separated sources held out from training), ``inputs``
(``all``, ``prompts`` for a separate input classifier trained and validated on prompts alone, or ``exchanges``).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from constitutional_guard.classifiers.base import TrainOptions
from constitutional_guard.classifiers.exchange import ExchangeClassifier, ExchangeConfig
from constitutional_guard.classifiers.input_format import MIN_PROMPT_TOKENS, format_input, record_prompt
from constitutional_guard.data.augment import DEFAULT_CUTS, response_prefixes
from constitutional_guard.data.corpus import load_split
from constitutional_guard.data.schema import LABELS, Record
from constitutional_guard.errors import InputError
from constitutional_guard.metrics import auroc
from constitutional_guard.models.loading import resolve_model
from constitutional_guard.sampling import sample_uniform as cap_records  # also imported under this name

CHECKPOINTS = "checkpoints"
EXTRA_KEYS = {
    "prefix_cuts",
    "max_validation",
    "patience",
    "eval_steps",
    "min_prompt_tokens",
    "exclude_sources",
    "inputs",
}
INPUTS = ("all", "prompts", "exchanges")


def select_inputs(records: list[Record], inputs: str) -> list[Record]:
    """All records, the prompt-only ones, or the exchanges (prefixes included)."""
    if inputs == "all":
        return records
    return [r for r in records if (r.response is None) == (inputs == "prompts")]


def with_prefixes(records: list[Record], cuts: tuple[float, ...]) -> list[Record]:
    """Add response prefixes (same label) for exchanges that are not prefixes and have none in ``records``."""
    covered = {r.meta.get("prefix_of") for r in records}
    extra = [
        p for r in records if "prefix_of" not in r.meta and r.id not in covered for p in response_prefixes(r, cuts)
    ]
    return records + extra


def class_weights(labels: list[int], num_labels: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (k · n_c)``; absent classes get weight 0."""
    counts = Counter(labels)
    total = len(labels)
    present = sum(1 for c in range(num_labels) if counts[c])
    return torch.tensor(
        [total / (present * counts[c]) if counts[c] else 0.0 for c in range(num_labels)], dtype=torch.float32
    )


def _encode(records: list[Record], tokenizer: Any, max_length: int, min_prompt_tokens: int) -> list[dict]:
    rows = []
    for record in records:
        encoding = format_input(tokenizer, record_prompt(record), record.response, max_length, min_prompt_tokens)
        row = dict(encoding.encoding)
        row["labels"] = record.label_id
        row["length"] = len(row["input_ids"])
        rows.append(row)
    return rows


def training_records(options: TrainOptions, settings: dict[str, Any]) -> tuple[list[Record], list[Record]]:
    """Train and validation records as ``settings`` (see ``training_settings``) select them: excluded sources
    left out, prefixes added, inputs chosen, both capped; an error when either ends up empty."""
    train_records = load_split(options.data_dir, "train", options.label_scheme)
    if settings["exclude_sources"]:
        train_records = [r for r in train_records if r.source not in settings["exclude_sources"]]
    train_records = select_inputs(with_prefixes(train_records, settings["prefix_cuts"]), settings["inputs"])
    train_records = cap_records(train_records, options.max_train, options.seed)
    val_records = select_inputs(load_split(options.data_dir, "validation", options.label_scheme), settings["inputs"])
    val_records = cap_records(val_records, settings["max_validation"], options.seed)
    if not train_records or not val_records:
        raise InputError.one(
            options.data_dir, f"training needs non-empty train and validation splits (inputs={settings['inputs']})"
        )
    return train_records, val_records


def training_settings(extra: dict[str, Any]) -> dict[str, Any]:
    """Typed training settings from ``TrainOptions.extra``; unknown keys are an error."""
    unknown = set(extra) - EXTRA_KEYS
    if unknown:
        raise ValueError(f"unknown exchange training settings {sorted(unknown)}; known: {sorted(EXTRA_KEYS)}")
    excluded = extra.get("exclude_sources", "")
    inputs = str(extra.get("inputs", "all"))
    if inputs not in INPUTS:
        raise ValueError(f"inputs: {inputs!r} is not one of {', '.join(INPUTS)}")
    cuts = extra.get("prefix_cuts", DEFAULT_CUTS)
    return {
        "prefix_cuts": tuple(
            float(c) for c in (str(cuts).split(",") if isinstance(cuts, str | float) else cuts) if c != ""
        ),
        "max_validation": int(extra["max_validation"]) if extra.get("max_validation") else None,
        "patience": int(extra.get("patience", 3)),
        "eval_steps": int(extra["eval_steps"]) if extra.get("eval_steps") else None,
        "min_prompt_tokens": int(extra.get("min_prompt_tokens", MIN_PROMPT_TOKENS)),
        "exclude_sources": [s for s in (excluded.split(",") if isinstance(excluded, str) else excluded) if s],
        "inputs": inputs,
    }


def train(options: TrainOptions) -> Path:
    """Fine-tune ``options.base_model`` on the corpus; resumes from the last checkpoint in ``out_dir``."""
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
    )
    from transformers.trainer_utils import get_last_checkpoint

    settings = training_settings(options.extra)
    labels = list(LABELS[options.label_scheme])
    out = Path(options.out_dir)
    train_records, val_records = training_records(options, settings)

    base = resolve_model(options.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    max_length = min(options.max_length, tokenizer.model_max_length)
    train_rows = _encode(train_records, tokenizer, max_length, settings["min_prompt_tokens"])
    val_rows = _encode(val_records, tokenizer, max_length, settings["min_prompt_tokens"])
    weights = class_weights([r["labels"] for r in train_rows], len(labels))
    unsafe_id = len(labels) - 1

    torch.manual_seed(options.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        dtype=torch.float32,
    )

    def weighted_loss(outputs: Any, targets: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return torch.nn.functional.cross_entropy(logits.float(), targets, weight=weights.to(logits.device))

    def metrics(prediction: Any) -> dict[str, float]:
        logits, targets = prediction.predictions, prediction.label_ids
        probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1).numpy()
        unsafe = (np.asarray(targets) == unsafe_id).astype(int)
        value = auroc(unsafe, probs[:, unsafe_id])
        return {"accuracy": float((probs.argmax(-1) == targets).mean()), "auroc": value if value is not None else 0.0}

    steps_per_epoch = max(1, -(-len(train_rows) // options.batch_size))
    eval_steps = settings["eval_steps"] or max(10, steps_per_epoch // 2)
    args = TrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        num_train_epochs=options.epochs,
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.batch_size * 2,
        learning_rate=options.learning_rate,
        warmup_steps=max(1, int(0.06 * steps_per_epoch * options.epochs)),
        weight_decay=0.01,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="loss",
        greater_is_better=False,
        logging_steps=max(1, eval_steps // 5),
        train_sampling_strategy="group_by_length",
        report_to="none",
        seed=options.seed,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_loss_func=weighted_loss,
        compute_metrics=metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=settings["patience"])],
    )
    checkpoints = out / CHECKPOINTS
    last = get_last_checkpoint(str(checkpoints)) if options.resume and checkpoints.is_dir() else None
    trainer.train(resume_from_checkpoint=last)

    config = ExchangeConfig.for_scheme(
        options.label_scheme,
        max_length=max_length,
        min_prompt_tokens=settings["min_prompt_tokens"],
        base_model=options.base_model,
        training={
            "data_dir": str(options.data_dir),
            "train_examples": len(train_rows),
            "train_labels": dict(Counter(labels[r["labels"]] for r in train_rows)),
            "validation_examples": len(val_rows),
            "excluded_sources": settings["exclude_sources"],
            "inputs": settings["inputs"],
            "epochs": options.epochs,
            "learning_rate": options.learning_rate,
            "best_validation_loss": trainer.state.best_metric,
            "steps": trainer.state.global_step,
            "resumed_from": Path(last).name if last else None,
        },
    )
    classifier = ExchangeClassifier(trainer.model.cpu(), tokenizer, config, device="cpu")
    classifier.save_pretrained(out)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return out
