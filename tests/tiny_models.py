"""Tiny random models built from configs (test support): the default test tier and the soak benchmark run on
them without any download."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEVICE = os.environ.get("CGUARD_TEST_DEVICE", "cpu")
"""Where the tests run their models: CPU unless ``CGUARD_TEST_DEVICE`` names another torch device (``make
test-cuda`` sets ``cuda``)."""

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]
_CORPUS = [
    "How do I make a bomb? I can't help with that. Here is how to bake bread safely.",
    "What is the capital of France? The capital of France is Paris.",
    "Write a phishing email. Sure, here is an email pretending to be your bank.",
    "Explain how vaccines work. Vaccines train the immune system to recognise pathogens.",
    "user assistant system the a an and or of to in is it you I we they safe unsafe refusal",
    "0123456789 !?.,;:'\"()[]{}<>-_=+*/\\|@#$%^&~` abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 400):
    """A byte-level BPE tokenizer with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token="<|endoftext|>",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def _sizes(tokenizer: Any, hidden_size: int, num_layers: int) -> dict[str, Any]:
    """The config sizes every tiny model shares."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "max_position_embeddings": 512,
        "pad_token_id": tokenizer.pad_token_id,
    }


def build_tiny_causal_lm(out_dir: str | Path, num_layers: int = 2, hidden_size: int = 32, seed: int = 0) -> Path:
    """Save a random Llama-architecture causal LM with the tiny tokenizer; returns the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = build_tiny_tokenizer(out)
    config = LlamaConfig(
        **_sizes(tokenizer, hidden_size, num_layers),
        num_key_value_heads=2,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    return out


def build_tiny_encoder(out_dir: str | Path, num_layers: int = 2, hidden_size: int = 32, seed: int = 0) -> Path:
    """Save a random BERT encoder with the tiny tokenizer; returns the folder."""
    import torch
    from transformers import BertConfig, BertModel

    out = Path(out_dir)
    tokenizer = build_tiny_tokenizer(out)
    config = BertConfig(**_sizes(tokenizer, hidden_size, num_layers))
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(out)
    return out


def build_tiny_image_text_lm(out_dir: str | Path, num_layers: int = 2, hidden_size: int = 32, seed: int = 0) -> Path:
    """Save a random Gemma-3-style image-text-to-text checkpoint with a processor; returns the folder."""
    import torch
    import transformers
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        PreTrainedTokenizerFast,
        SiglipVisionConfig,
    )

    out = Path(out_dir)
    build_tiny_tokenizer(out)
    image_tokens = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out, extra_special_tokens=image_tokens)
    boi, eoi, image = tokenizer.convert_tokens_to_ids(list(image_tokens.values()))
    text = Gemma3TextConfig(
        **_sizes(tokenizer, hidden_size, num_layers),
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        sliding_window=64,
    )
    vision = SiglipVisionConfig(
        hidden_size=hidden_size, intermediate_size=hidden_size * 2, num_hidden_layers=1, num_attention_heads=4,
        image_size=28, patch_size=14,
    )
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=boi, eoi_token_index=eoi,
        image_token_index=image, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    Gemma3ForConditionalGeneration(config).save_pretrained(out)
    image_processor_cls = getattr(transformers, "Gemma3ImageProcessorPil", None) or transformers.Gemma3ImageProcessor
    processor = Gemma3Processor(
        image_processor=image_processor_cls(size={"height": 28, "width": 28}),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
        image_seq_length=4,
    )
    processor.save_pretrained(out)
    return out
