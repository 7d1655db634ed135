"""Load target models by embedded alias, local directory or hub id, with chat-template handling."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from constitutional_guard.models.embedded import EMBEDDED_MODELS, materialize

Message = dict[str, str]
PLACEHOLDER_OPEN, PLACEHOLDER_CLOSE = "\ue000", "\ue001"
PLACEHOLDER = re.compile(f"({PLACEHOLDER_OPEN}\\d+{PLACEHOLDER_CLOSE})")
"""Stands in for a message's content while the chat template is rendered (private-use characters)."""


def special_token_texts(tokenizer: Any) -> list[str]:
    """The text of every special token the tokenizer would recognise inside a string."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    texts = [token.content for token in decoder.values() if getattr(token, "special", False)]
    return [text for text in dict.fromkeys([*texts, *getattr(tokenizer, "all_special_tokens", [])]) if text]


def resolve_model(name: str, prepare: bool = True) -> str:
    """Resolve a model name: embedded alias → materialised dir; else local path; else hub id."""
    if name in EMBEDDED_MODELS:
        model = EMBEDDED_MODELS[name]
        if prepare:
            return str(materialize(name))
        return str(model.materialized_dir())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    return name


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA devices that support it, float32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def encoder_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware multiplies it natively (CUDA with bf16; CPUs with AMX or AVX512-BF16), else float32.

    A frozen sentence encoder's features in bf16 match float32's to a cosine of 0.9999, and mpnet encodes about
    2.4-3.4x faster on such CPUs (docs/results/guard_quality.md).
    """
    if device.type == "cuda":
        return default_dtype(device)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return torch.bfloat16 if any(getattr(torch.cpu, name, lambda: False)() for name in checks) else torch.float32


def new_kv_cache(model: Any) -> dict[str, Any]:
    """A fresh KV cache for ``model``, as the keyword argument its ``forward`` takes.

    Every forward it is passed to fills it in place. Current transformers name the argument ``cache``;
    earlier 5.x releases ``past_key_values``.
    """
    from transformers import DynamicCache

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    return {name: DynamicCache(config=base.config)}


def parse_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype {dtype!r} is not a torch dtype (try float32, bfloat16, float16)")
    return resolved


def _is_image_text_to_text(config: Any) -> bool:
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith("ForConditionalGeneration") for a in archs) and hasattr(config, "vision_config")


@dataclass
class LoadedModel:
    """A causal LM ready for generation and activation reads."""

    name: str
    path: str
    model: Any
    tokenizer: Any
    processor: Any | None = None
    use_chat_template: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    @property
    def text_config(self) -> Any:
        config = self.model.config
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def eos_token_ids(self) -> list[int]:
        ids = getattr(self.model.generation_config, "eos_token_id", None)
        if ids is None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return []
        return [int(i) for i in (ids if isinstance(ids, list | tuple) else [ids])]

    def render_messages(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        """Render a chat as text: the tokenizer's chat template, or plain ``role: content`` lines."""
        if self.use_chat_template and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        if add_generation_prompt:
            lines.append("assistant:")
        return "\n".join(lines) + ("" if add_generation_prompt else "\n")

    def encode_messages(self, messages: list[Message], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a chat, special tokens included once (the template carries them).

        Message content never becomes special tokens: a message quoting ``<|im_end|>`` is encoded as
        ordinary text, so it cannot close its turn or open another.
        """
        templated = bool(self.use_chat_template and getattr(self.tokenizer, "chat_template", None))
        if not any(self._quotes_special_token(m["content"]) for m in messages):
            text = self.render_messages(messages, add_generation_prompt=add_generation_prompt)
            return list(self.tokenizer(text, add_special_tokens=not templated)["input_ids"])
        return self._encode_content_as_text(messages, add_generation_prompt, templated)

    def _quotes_special_token(self, content: str) -> bool:
        return any(token in content for token in special_token_texts(self.tokenizer))

    def _encode_content_as_text(
        self, messages: list[Message], add_generation_prompt: bool, templated: bool
    ) -> list[int]:
        """Render the chat with placeholders for the contents, then encode the template's text with its special
        tokens and each content with special-token text split into ordinary tokens."""
        placeholders = [{**m, "content": f"{PLACEHOLDER_OPEN}{i}{PLACEHOLDER_CLOSE}"} for i, m in enumerate(messages)]
        text = self.render_messages(placeholders, add_generation_prompt=add_generation_prompt)
        ids = [] if templated else list(self.tokenizer("", add_special_tokens=True)["input_ids"])
        for piece in PLACEHOLDER.split(text):
            if PLACEHOLDER.fullmatch(piece):
                content = messages[int(piece[1:-1])]["content"]
                ids += self.tokenizer(content, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            elif piece:
                ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
        return ids

    @torch.inference_mode()
    def hidden_states(self, input_ids: list[int]) -> tuple[torch.Tensor, ...]:
        """All hidden states (embeddings + every layer) of one sequence, on CPU."""
        ids = torch.tensor([input_ids], device=self.device)
        out = self.model(input_ids=ids, output_hidden_states=True, use_cache=False)
        return tuple(h[0].float().cpu() for h in out.hidden_states)


def load_causal_lm(
    name: str,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    use_chat_template: bool = True,
) -> LoadedModel:
    """Load a text causal LM or a Gemma-style image-text-to-text checkpoint for text use."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    path = resolve_model(name)
    dev = torch.device(device) if device is not None else default_device()
    torch_dtype = parse_dtype(dtype, dev)
    config = AutoConfig.from_pretrained(path)
    processor = None
    if _is_image_text_to_text(config):
        processor = AutoProcessor.from_pretrained(path)
        tokenizer = processor.tokenizer
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(dev).eval()
    return LoadedModel(
        name=name,
        path=path,
        model=model,
        tokenizer=tokenizer,
        processor=processor,
        use_chat_template=use_chat_template,
        device=dev,
        dtype=torch_dtype,
    )
