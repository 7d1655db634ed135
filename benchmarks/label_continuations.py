"""Multi-token answer scoring: one tree-masked pass for every variant against one pass per variant.

The category-naming constitutional classifier scores ~24 answers, most of them several tokens long.
``LabelScorer`` scores all continuations of a batch in one forward pass; the reference below runs one
pass per variant on the shared cache and crops it after each, as a per-label loop does. Both score
the same items with the same model and prefix, alternately per chunk so machine load hits both alike.

    OMP_NUM_THREADS=1 python benchmarks/label_continuations.py --data /tmp/cguard-corpus --n 32 \\
        --out docs/results/bench_label_continuations.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from typing import Any

import numpy as np
import torch

from constitutional_guard.atomic import write_json_atomic
from constitutional_guard.classifiers.constitutional import ConstitutionalClassifier
from constitutional_guard.classifiers.constitutional_prompt import record_item
from constitutional_guard.classifiers.label_scoring import LabelScorer
from constitutional_guard.data.corpus import load_split


class PerVariantScorer(LabelScorer):
    """The reference: one forward pass per multi-token variant, cropping the cache after each."""

    def _continuations(self, cache: Any, mask: torch.Tensor, last_position: torch.Tensor) -> dict:
        out = {}
        for variant in sorted({v for group in self.variants for v in group if len(v) > 1}):
            steps, batch, device = len(variant) - 1, mask.shape[0], mask.device
            ext_mask = torch.cat([mask, torch.ones(batch, steps, dtype=mask.dtype, device=device)], dim=-1)
            logits = self.model(
                input_ids=torch.tensor([list(variant[:-1])] * batch, device=device),
                attention_mask=ext_mask,
                position_ids=last_position + torch.arange(1, steps + 1, device=device),
                past_key_values=cache,
                use_cache=True,
            ).logits
            targets = torch.tensor(variant[1:], device=device).expand(batch, steps)
            log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            out[variant] = log_probs.sum(-1)
            cache.crop(-steps)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Corpus directory (items from its test split).")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    classifier = ConstitutionalClassifier.zero_shot(
        args.model, policy_examples=0, max_item_tokens=128, name_categories=True, batch_size=args.batch_size
    )
    records = random.Random(0).sample(load_split(args.data, "test"), args.n)
    prompt = classifier.prompt
    items = [prompt.item_ids(*record_item(r)) for r in records]
    tree = classifier.scorer
    reference = PerVariantScorer(classifier.lm.model, classifier.lm.tokenizer, classifier.answers, args.batch_size)
    tree.score(prompt.prefix_ids, items[:1])  # computes and caches the prefix for both variants' timings
    reference.score(prompt.prefix_ids, items[:1])
    seconds = {"tree": 0.0, "per_variant": 0.0}
    scores: dict[str, list[np.ndarray]] = {"tree": [], "per_variant": []}
    for start in range(0, len(items), args.batch_size * 2):
        chunk = items[start : start + args.batch_size * 2]
        for name, scorer in (("per_variant", reference), ("tree", tree)):
            began = time.perf_counter()
            scores[name].append(scorer.score(prompt.prefix_ids, chunk))
            seconds[name] += time.perf_counter() - began
    diff = float(np.abs(np.concatenate(scores["tree"]) - np.concatenate(scores["per_variant"])).max())
    variants = [v for group in tree.variants for v in group]
    report = {
        "model": args.model,
        "items": len(items),
        "answers": len(classifier.answers),
        "variants": len(variants),
        "multi_token_variants": sum(len(v) > 1 for v in variants),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "seconds": seconds,
        "items_per_s": {name: len(items) / s for name, s in seconds.items()},
        "speedup": seconds["per_variant"] / seconds["tree"],
        "max_abs_score_difference": diff,
    }
    write_json_atomic(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
