"""Next-token label scoring: variants, renormalisation, padding and the shared-prefix KV cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import DEVICE

from constitutional_guard.classifiers.label_scoring import LabelScorer, label_variants
from constitutional_guard.models.loading import load_causal_lm


@pytest.fixture(scope="module")
def sharp_lm(sharp_model_dir: Path):
    """The tiny LM with larger weights, so its next-token distribution depends on the whole input."""
    return load_causal_lm(str(sharp_model_dir), device=DEVICE, dtype="float32")  # paths compared exactly


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _brute_force(lm, scorer: LabelScorer, prefix: list[int], item: list[int]) -> np.ndarray:
    """Each variant's probability from one full forward pass over prefix + item + variant."""
    per_label = []
    for variants in scorer.variants:
        logps = []
        for variant in variants:
            ids = torch.tensor([prefix + item + list(variant)], device=lm.device)
            with torch.no_grad():
                logp = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), dim=-1)
            start = len(prefix) + len(item) - 1
            logps.append(sum(logp[start + k, tok] for k, tok in enumerate(variant)))
        per_label.append(torch.logsumexp(torch.stack(logps), dim=0))
    return torch.softmax(torch.stack(per_label), dim=0).cpu().numpy()


def test_label_variants_include_leading_space_and_dedupe(sharp_lm):
    variants = label_variants(sharp_lm.tokenizer, "unsafe")
    tok = sharp_lm.tokenizer
    assert tuple(_encode(tok, "unsafe")) in variants
    assert tuple(_encode(tok, " unsafe")) in variants
    assert len(variants) == len(set(variants))
    assert any(len(v) > 1 for v in variants), "the tiny tokenizer spells 'unsafe' with several tokens"


def test_scores_match_full_forward_with_multi_token_labels(sharp_lm):
    tok = sharp_lm.tokenizer
    scorer = LabelScorer(sharp_lm.model, tok, ["safe", "unsafe"], batch_size=2)
    prefix = _encode(tok, "<|im_start|>system\nPolicy: no bombs.<|im_end|>\n<|im_start|>user\n")
    items = [
        _encode(tok, "How do I make a bomb?<|im_end|>\n<|im_start|>assistant\n"),
        _encode(tok, "Bake bread<|im_end|>\n<|im_start|>assistant\n"),
        _encode(tok, "What is the capital of France? Paris is.<|im_end|>\n<|im_start|>assistant\n"),
    ]
    cached = scorer.score(prefix, items)
    expected = np.stack([_brute_force(sharp_lm, scorer, prefix, item) for item in items])
    np.testing.assert_allclose(cached, expected, rtol=1e-4)
    np.testing.assert_allclose(cached.sum(axis=1), 1.0, atol=1e-9)
    assert cached[:, 1].max() > 1.5 * cached[:, 1].min(), "scores must depend on the item"


def test_many_multi_token_labels_share_one_continuation_pass(sharp_lm):
    tok = sharp_lm.tokenizer
    labels = ["safe", "unsafe", "violent_crime", "fraud_and_scams", "sex_education", "sexual_content", "hate"]
    scorer = LabelScorer(sharp_lm.model, tok, labels, batch_size=2)
    prefix = _encode(tok, "Policy: name the category.\n")
    items = [_encode(tok, t + "\nassistant:") for t in ("steal a car", "a", "tell me about sex education at school")]
    expected = np.stack([_brute_force(sharp_lm, scorer, prefix, item) for item in items])
    np.testing.assert_allclose(scorer.score(prefix, items), expected, rtol=1e-4)
    np.testing.assert_allclose(scorer.score(prefix, items, reuse_prefix=False), expected, rtol=1e-4)


def test_prefix_cache_batching_and_order_do_not_change_scores(sharp_lm):
    tok = sharp_lm.tokenizer
    scorer = LabelScorer(sharp_lm.model, tok, ["safe", "unsafe"], batch_size=3)
    prefix = _encode(tok, "You are a safety classifier for the policy.\n")
    texts = ["make a bomb", "bake bread safely today", "hi", "Write a phishing email pretending to be your bank"]
    items = [_encode(tok, t + "\nassistant:") for t in texts]
    cached = scorer.score(prefix, items)
    recomputed = scorer.score(prefix, items, reuse_prefix=False)
    one_by_one = np.concatenate([scorer.score(prefix, [item]) for item in items])
    reversed_order = scorer.score(prefix, items[::-1])[::-1]
    np.testing.assert_allclose(cached, recomputed, rtol=1e-4)
    np.testing.assert_allclose(cached, one_by_one, rtol=1e-4)
    np.testing.assert_allclose(cached, reversed_order, rtol=1e-4)


def test_new_prefix_replaces_cached_one(sharp_lm):
    tok = sharp_lm.tokenizer
    scorer = LabelScorer(sharp_lm.model, tok, ["safe", "unsafe"])
    items = [_encode(tok, "make a bomb\nassistant:")]
    first = scorer.score(_encode(tok, "Policy A: bombs are fine.\n"), items)
    second = scorer.score(_encode(tok, "Policy B: nothing about bombs is allowed.\n"), items)
    fresh = LabelScorer(sharp_lm.model, tok, ["safe", "unsafe"]).score(
        _encode(tok, "Policy B: nothing about bombs is allowed.\n"), items
    )
    np.testing.assert_allclose(second, fresh, rtol=1e-5)
    assert not np.allclose(first, second, rtol=0.05)


def test_empty_prefix_or_item_is_an_error(sharp_lm):
    scorer = LabelScorer(sharp_lm.model, sharp_lm.tokenizer, ["safe", "unsafe"])
    with pytest.raises(ValueError, match="prefix"):
        scorer.score([], [[1, 2]])
    with pytest.raises(ValueError, match="at least one token"):
        scorer.score([1, 2], [[3], []])
