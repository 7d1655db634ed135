"""Encoder input: long prompts are shortened at both ends kept; the response stays in view."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from constitutional_guard.classifiers.input_format import ELISION, format_input, record_prompt, shorten
from constitutional_guard.data.schema import Record

PROMPT = "START of the prompt. " + " ".join(f"filler{i}" for i in range(300)) + " END of the prompt."
RESPONSE = "Response begins. " + " ".join(f"step{i}" for i in range(20)) + " response ends."


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_encoder_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_encoder_dir)


def test_shorten_keeps_both_ends(tiny_tokenizer) -> None:
    text, dropped = shorten(PROMPT, tiny_tokenizer, 40)
    assert text.startswith("START") and text.endswith("END of the prompt.")
    assert ELISION in text and dropped > 0
    assert len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"]) <= 40
    assert shorten("short", tiny_tokenizer, 40) == ("short", 0)


def test_exchange_keeps_whole_response_and_prompt_ends(tiny_tokenizer) -> None:
    n_response = len(tiny_tokenizer(RESPONSE, add_special_tokens=False)["input_ids"])
    max_length = n_response + 60
    formatted = format_input(tiny_tokenizer, PROMPT, RESPONSE, max_length, min_prompt_tokens=32)
    ids = formatted.encoding["input_ids"]
    assert len(ids) <= max_length
    text = tiny_tokenizer.decode(ids)
    assert text.endswith(RESPONSE)  # the whole response, unchanged, at the end
    assert "START" in text and "END of the prompt." in text
    assert formatted.prompt_tokens_dropped > 0 and formatted.response_tokens_dropped == 0


def test_response_longer_than_window_keeps_its_newest_text(tiny_tokenizer) -> None:
    long_response = RESPONSE + " " + " ".join(f"more{i}" for i in range(300)) + " NEWEST TEXT"
    formatted = format_input(tiny_tokenizer, PROMPT, long_response, 96, min_prompt_tokens=24)
    text = tiny_tokenizer.decode(formatted.encoding["input_ids"])
    assert len(formatted.encoding["input_ids"]) <= 96
    assert text.rstrip().endswith("NEWEST TEXT") and "START" in text
    assert formatted.response_tokens_dropped > 0


def test_short_inputs_unchanged(tiny_tokenizer) -> None:
    formatted = format_input(tiny_tokenizer, "hello there", "general kenobi", 64)
    assert (formatted.prompt_tokens_dropped, formatted.response_tokens_dropped) == (0, 0)
    assert tiny_tokenizer.decode(formatted.encoding["input_ids"]) == "hello theregeneral kenobi"


def test_prompt_only_fits_window(tiny_tokenizer) -> None:
    formatted = format_input(tiny_tokenizer, PROMPT, None, 50)
    text = tiny_tokenizer.decode(formatted.encoding["input_ids"])
    assert len(formatted.encoding["input_ids"]) <= 50 and text.startswith("START") and text.endswith("prompt.")


def test_record_prompt_renders_multi_turn_chats() -> None:
    single = Record(id="a", prompt="hi", label="safe")
    chat = Record(
        id="b",
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "second"},
        ],
        label="safe",
    )
    assert record_prompt(single) == "hi"
    assert record_prompt(chat) == "user: first\nassistant: reply\nuser: second"


@pytest.mark.real
def test_minilm_pair_layout(minilm_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    formatted = format_input(tokenizer, PROMPT, RESPONSE, 128)
    ids = formatted.encoding["input_ids"]
    assert len(ids) <= 128 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    text = tokenizer.decode(ids)
    assert text.startswith("[CLS] start of the prompt") and text.endswith("response ends. [SEP]")
    assert "end of the prompt. [SEP] response begins" in text
    assert set(formatted.encoding["token_type_ids"][-5:]) == {1}


def test_training_and_serving_render_a_chat_alike():
    from constitutional_guard.classifiers.input_format import chat_prompt

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert chat_prompt(chat) == "system: Be brief.\nuser: Hi"
    assert record_prompt(Record(id="c", messages=chat, label="safe")) == chat_prompt(chat)
    lone = [{"role": "user", "content": "Hello"}]
    assert record_prompt(Record(id="p", prompt="Hello", label="safe")) == chat_prompt(lone) == "Hello"
