"""Prompt classifiers under grouped leave-source-out: frozen encoders (and their concatenation) against a
fine-tuned one, on the same folds of source families.

Prompts alone (records without a response) of a built corpus. Source families are dealt to ``--folds`` folds
by size (``family_folds``); each fold trains on the train split without its families and scores every prompt
of them (all splits). Variants:
- a frozen encoder per ``--encoders`` alias: the embedding classifier's features and default head
  (``linear+mlp``, tuned on the validation split without the fold), source-balanced weights;
- ``both``, when two encoders are given: their features side by side;
- ``--fine-tune ALIAS``: the encoder with a classification head, fine-tuned (all layers) on
  ``--samples`` prompts drawn with the same weights, batch 32, AdamW, warm-up then linear decay; first 32
  and last ``--max-tokens`` − 32 tokens of a long prompt.

Reported per variant: pooled out-of-fold AUROC, per-fold AUROC, AUROC on the hand-written prompts
(``benchmarks/handwritten_prompts.jsonl``, mean score of the fold models) and their first prompt's score.

    python benchmarks/encoder_folds.py --data CORPUS --encoders minilm-l6,mpnet-base --out encoder_folds.json
    python benchmarks/encoder_folds.py --data CORPUS --encoders minilm-l6 --fine-tune minilm-l6 --out ft.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from constitutional_guard.classifiers.embedding import SentenceEncoder, item_features
from constitutional_guard.classifiers.embedding_training import FeatureCache, fit_head, record_items, sample_weights
from constitutional_guard.classifiers.input_format import format_input, record_prompt
from constitutional_guard.data.corpus import load_split
from constitutional_guard.data.schema import SPLITS, Record, family_folds, family_of
from constitutional_guard.metrics import auroc
from constitutional_guard.models.loading import resolve_model

HANDWRITTEN = Path(__file__).with_name("handwritten_prompts.jsonl")
Item = str | tuple[str, str]
"""A prompt, or a (prompt, response) exchange."""


def frozen_features(alias: str, splits: dict[str, list[Record]], hand: list[str]) -> dict[str, np.ndarray]:
    encoder = SentenceEncoder.from_pretrained(resolve_model(alias))
    cache = FeatureCache.for_encoder(alias, encoder)
    features = {name: item_features(encoder, record_items(records), cache) for name, records in splits.items()}
    features["hand"] = item_features(encoder, [(text, None) for text in hand], cache)
    cache.save()
    return features


class FineTuned:
    """An encoder with a fresh two-way classification head, trained on weighted draws of prompts or exchanges.

    A prompt keeps its first ``head_tokens`` and last tokens; an exchange is a sentence pair laid out as the
    exchange classifier lays it out (``format_input``). On CUDA it trains and scores under bf16 autocast."""

    def __init__(self, alias: str, max_tokens: int, head_tokens: int = 32, device: str = "cpu"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path = resolve_model(alias)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model_class = AutoModelForSequenceClassification
        self.max_tokens, self.head_tokens = max_tokens, head_tokens
        self.device = torch.device(device)
        self._ids: dict[Item, tuple[list[int], list[int]]] = {}

    def ids(self, item: Item) -> tuple[list[int], list[int]]:
        """Token ids and token type ids of a prompt (``str``) or a ``(prompt, response)`` pair."""
        if item not in self._ids:
            if isinstance(item, str):
                t = self.tokenizer(item, add_special_tokens=False, verbose=False)["input_ids"]
                if len(t) > self.max_tokens - 2:
                    t = t[: self.head_tokens] + t[-(self.max_tokens - 2 - self.head_tokens) :]
                ids = [self.tokenizer.cls_token_id, *t, self.tokenizer.sep_token_id]
                self._ids[item] = (ids, [0] * len(ids))
            else:
                encoding = format_input(self.tokenizer, item[0], item[1], self.max_tokens).encoding
                ids = encoding["input_ids"]
                self._ids[item] = (ids, encoding.get("token_type_ids") or [0] * len(ids))
        return self._ids[item]

    def batch(self, items: list[Item]) -> dict[str, torch.Tensor]:
        seqs = [self.ids(item) for item in items]
        width = max(len(ids) for ids, _ in seqs)
        x = torch.zeros(len(seqs), width, dtype=torch.long)
        types, mask = torch.zeros_like(x), torch.zeros_like(x)
        for j, (ids, kinds) in enumerate(seqs):
            x[j, : len(ids)], types[j, : len(ids)], mask[j, : len(ids)] = torch.tensor(ids), torch.tensor(kinds), 1
        batch = {"input_ids": x, "attention_mask": mask}
        if "token_type_ids" in self.tokenizer.model_input_names:
            batch["token_type_ids"] = types
        return {k: v.to(self.device) for k, v in batch.items()}

    def logits(self, model: Any, items: list[Item]) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return model(**self.batch(items)).logits.float()

    def fit(self, items: list[Item], y: np.ndarray, weights: np.ndarray, samples: int, lr: float, seed: int) -> Any:
        """Train a fresh model (kept as ``self.model``, the one ``score`` uses by default) and return it."""
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        self.model = self.model_class.from_pretrained(self.path, num_labels=2, dtype=torch.float32).to(self.device)
        opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)
        steps = samples // 32
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, s / (0.06 * steps)) * max(0.0, (steps - s) / steps)
        )
        p = weights / weights.sum()
        self.model.train()
        for _ in range(steps):
            pick = rng.choice(len(items), 32, p=p)
            loss = torch.nn.functional.cross_entropy(
                self.logits(self.model, [items[i] for i in pick]), torch.tensor(y[pick], device=self.device)
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            opt.step()
            schedule.step()
            opt.zero_grad()
        return self.model

    @torch.inference_mode()
    def score(self, items: list[Item], model: Any = None, batch_size: int = 64) -> np.ndarray:
        model = self.model if model is None else model
        model.eval()
        order = sorted(range(len(items)), key=lambda i: len(self.ids(items[i])[0]))
        out = np.zeros(len(items))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = torch.softmax(self.logits(model, [items[i] for i in idx]), -1)[:, 1].cpu().numpy()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a built corpus (cguard data build)")
    parser.add_argument("--encoders", default="minilm-l6", help="comma-separated encoder aliases, frozen")
    parser.add_argument("--fine-tune", default=None, help="encoder alias to fine-tune as a further variant")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8000, help="prompts drawn per fine-tuning run")
    parser.add_argument("--lr", type=float, default=4e-5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    splits = {name: [r for r in load_split(args.data, name) if r.response is None] for name in SPLITS}
    hand = [json.loads(line) for line in HANDWRITTEN.read_text(encoding="utf-8").splitlines() if line.strip()]
    hand_text, hand_y = [h["prompt"] for h in hand], np.array([int(h["label"] == "unsafe") for h in hand])
    family = {name: np.array([family_of(r) for r in records]) for name, records in splits.items()}
    label = {name: np.array([int(r.is_unsafe) for r in records]) for name, records in splits.items()}
    fold_of = family_folds([f for name in SPLITS for f in family[name]], args.folds)
    folds = [sorted(f for f, k in fold_of.items() if k == fold) for fold in range(args.folds)]

    features = {alias: frozen_features(alias, splits, hand_text) for alias in args.encoders.split(",")}
    if len(features) == 2:
        a, b = features.values()
        features["both"] = {key: np.concatenate([a[key], b[key]], axis=1) for key in a}
    variants = list(features) + ([f"fine-tuned {args.fine_tune}"] if args.fine_tune else [])
    tuned = FineTuned(args.fine_tune, args.max_tokens) if args.fine_tune else None
    scores: dict[str, dict[str, list]] = {v: {"y": [], "score": [], "hand": [], "fold_auroc": []} for v in variants}

    for fold, left in enumerate(folds):
        keep = {name: ~np.isin(family[name], left) for name in SPLITS}
        kept = [r for r, k in zip(splits["train"], keep["train"], strict=True) if k]
        weights = sample_weights(kept)
        y_fold = np.concatenate([label[name][~keep[name]] for name in SPLITS])
        for variant in variants:
            if variant in features:
                f = features[variant]
                head, _ = fit_head(
                    f["train"][keep["train"]], label["train"][keep["train"]], weights,
                    f["validation"][keep["validation"]], label["validation"][keep["validation"]], [1], None, 0,
                    "linear+mlp",
                )
                s = np.concatenate([head.probabilities(f[name][~keep[name]])[:, 1] for name in SPLITS])
                h = head.probabilities(f["hand"])[:, 1]
            else:
                tuned.fit([record_prompt(r) for r in kept], label["train"][keep["train"]], weights,
                          args.samples, args.lr, fold)
                texts = [
                    record_prompt(r) for name in SPLITS for r, k in zip(splits[name], keep[name], strict=True) if not k
                ]
                s, h = tuned.score(texts), tuned.score(hand_text)
            row = scores[variant]
            row["y"] += y_fold.tolist()
            row["score"] += s.tolist()
            row["hand"].append(h.tolist())
            row["fold_auroc"].append(auroc(y_fold, s) if 0 < y_fold.sum() < len(y_fold) else None)
        print(f"fold {fold} done ({time.perf_counter() - start:.0f} s)", flush=True)

    report = {
        "data": args.data,
        "folds": folds,
        "settings": {k: v for k, v in vars(args).items() if k not in ("data", "out")},
        "seconds": round(time.perf_counter() - start),
        "variants": {},
    }
    for variant, row in scores.items():
        hand_scores = np.mean(row["hand"], axis=0)
        report["variants"][variant] = {
            "pooled_auroc": auroc(np.array(row["y"]), np.array(row["score"])),
            "fold_auroc": row["fold_auroc"],
            "handwritten_auroc": auroc(hand_y, hand_scores),
            "first_handwritten": {"prompt": hand_text[0], "score": float(hand_scores[0])},
        }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report["variants"], indent=2))


if __name__ == "__main__":
    main()
