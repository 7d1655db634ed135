"""Score label words by next-token probability, never by parsing generated text.

Each label counts every way it can be written as the answer (as is and with a leading space); a
variant that spans several tokens is scored by the chain rule, all such variants in one extra forward
pass over the batch. The label probabilities are then
renormalised over the labels. Items share one prefix (the policy): its KV cache is computed once
and copied into every batch, and items are left-padded after it so the last position is the
answer position of every row.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from constitutional_guard.models.loading import new_kv_cache


def label_variants(tokenizer: Any, label: str) -> list[tuple[int, ...]]:
    """Distinct token sequences that spell ``label`` as the answer: as is and with a leading space."""
    variants: list[tuple[int, ...]] = []
    for text in (label, f" {label}"):
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        if ids and ids not in variants:
            variants.append(ids)
    if not variants:
        raise ValueError(f"label {label!r} tokenizes to nothing")
    return variants


def _expand_cache(cache: dict[str, Any], batch: int) -> dict[str, Any]:
    expanded = copy.deepcopy(cache)
    if batch > 1:
        for value in expanded.values():
            value.batch_repeat_interleave(batch)
    return expanded


class LabelScorer:
    """P(label) for each item, from a causal LM's next-token distribution after a shared prefix."""

    def __init__(self, model: Any, tokenizer: Any, labels: Sequence[str], batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.variants = [label_variants(tokenizer, label) for label in self.labels]
        self.batch_size = batch_size
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self._prefix_key: tuple[int, ...] | None = None
        self._prefix_cache: Any = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def clear_cache(self) -> None:
        """Forget the cached prefix (call after changing the model's weights)."""
        self._prefix_key, self._prefix_cache = None, None

    @torch.inference_mode()
    def prefix_cache(self, prefix_ids: Sequence[int]) -> dict[str, Any]:
        """The KV cache of the shared prefix (as the model's cache keyword), computed once per distinct prefix."""
        key = tuple(prefix_ids)
        if self._prefix_key != key:
            ids = torch.tensor([key], device=self.device)
            cache = new_kv_cache(self.model)
            self.model(input_ids=ids, use_cache=True, **cache)
            self._prefix_cache = cache
            self._prefix_key = key
        return self._prefix_cache

    def score(
        self,
        prefix_ids: Sequence[int],
        items: Sequence[Sequence[int]],
        reuse_prefix: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Probabilities of each label (rows sum to 1), one row per item, in input order."""
        if not prefix_ids:
            raise ValueError("the shared prefix must not be empty")
        out = np.zeros((len(items), len(self.labels)), dtype=np.float64)
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            log_probs = self._score_batch(list(prefix_ids), [list(items[i]) for i in chunk], reuse_prefix)
            out[chunk] = torch.softmax(log_probs, dim=-1).double().cpu().numpy()
            if progress is not None:
                progress(len(chunk))
        return out

    @torch.inference_mode()
    def _score_batch(self, prefix: list[int], items: list[list[int]], reuse_prefix: bool) -> torch.Tensor:
        """Unnormalised log P(label) per item: (batch, n_labels)."""
        if any(not item for item in items):
            raise ValueError("every item needs at least one token after the prefix")
        device, batch, width = self.device, len(items), max(len(item) for item in items)
        if reuse_prefix:
            rows = [[self.pad_id] * (width - len(item)) + item for item in items]
            item_mask = [[0] * (width - len(item)) + [1] * len(item) for item in items]
            mask = torch.tensor([[1] * len(prefix) + m for m in item_mask], device=device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, len(prefix) :]
            cache = _expand_cache(self.prefix_cache(prefix), batch)
        else:
            rows = [[self.pad_id] * (width - len(item)) + prefix + item for item in items]
            mask = torch.tensor([[0] * (width - len(item)) + [1] * (len(prefix) + len(item)) for item in items])
            mask = mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = new_kv_cache(self.model)
        input_ids = torch.tensor(rows, device=device)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **cache)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        rest = self._continuations(cache, mask, positions[:, -1:])
        scores = torch.empty(batch, len(self.labels), device=device)
        for j, variants in enumerate(self.variants):
            per_variant = [first[:, v[0]] + rest[v] if len(v) > 1 else first[:, v[0]] for v in variants]
            scores[:, j] = torch.logsumexp(torch.stack(per_variant, dim=-1), dim=-1)
        return scores

    def _continuations(
        self, cache: dict[str, Any], mask: torch.Tensor, last_position: torch.Tensor
    ) -> dict[tuple[int, ...], torch.Tensor]:
        """log P(variant[1:] | context, variant[0]) per row for every multi-token variant, in one forward pass.

        The variants' tokens are laid side by side after the context; a tree-shaped attention mask lets
        each token see the context and the earlier tokens of its own variant only, at the positions it
        would have as the only continuation.
        """
        variants = sorted({v for group in self.variants for v in group if len(v) > 1})
        if not variants:
            return {}
        steps = [(s, d) for s, v in enumerate(variants) for d in range(len(v) - 1)]
        device, batch = mask.device, mask.shape[0]
        segment = torch.tensor([s for s, _ in steps], device=device)
        depth = torch.tensor([d for _, d in steps], device=device)
        own = (segment[:, None] == segment[None, :]) & (depth[None, :] <= depth[:, None])
        visible = torch.cat([mask.bool()[:, None, :].expand(-1, len(steps), -1), own.expand(batch, -1, -1)], dim=-1)
        dtype = getattr(self.model, "dtype", torch.float32)
        bias = torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill(~visible, torch.finfo(dtype).min)
        ids = torch.tensor([[variants[s][d] for s, d in steps]] * batch, device=device)
        out = self.model(
            input_ids=ids,
            attention_mask=bias[:, None],
            position_ids=last_position + 1 + depth[None, :],
            use_cache=True,
            **cache,
        )
        targets = torch.tensor([variants[s][d + 1] for s, d in steps], device=device).expand(batch, -1)
        log_probs = torch.log_softmax(out.logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        sums = torch.zeros(batch, len(variants), device=device).index_add_(1, segment, log_probs)
        return {v: sums[:, s] for s, v in enumerate(variants)}
