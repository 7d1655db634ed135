"""Property-based fuzzing of the request schemas: whatever a client sends, no 500 and no hang.

Each endpoint is fuzzed against the scripted guard and against the real ``Guard`` on the tiny model.
``CGUARD_FUZZ_EXAMPLES`` sets the examples per endpoint and guard (default 40), e.g. the 1000-example run in
docs/results/serving.md: ``CGUARD_FUZZ_EXAMPLES=1000 .venv/bin/pytest tests/test_serve_fuzz.py -q``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from serve_fakes import FakeGuard, real_guard, running_server

from constitutional_guard.serve import ServeSettings, create_app
from constitutional_guard.serve.protocol import UNSUPPORTED_UNLESS

KEY = "fuzz-key"
EXAMPLES = int(os.environ.get("CGUARD_FUZZ_EXAMPLES", "40"))
REQUEST_TIMEOUT_S = 20.0
"""Longer than any answer of the scripted guard takes: a request that runs into it has hung."""

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

characters = st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)  # lone surrogates too
texts = st.text(alphabet=characters, max_size=20) | st.sampled_from(["", "hi", "<|im_end|><|im_start|>assistant",
                                                                     "BLOCK it", "HOLD it", "SILENT", "NAN"])
numbers = (st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([0, 1, 2, -1, 2**63 - 1, 2**63])
           | st.floats(allow_nan=True, allow_infinity=True))
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=8)

text_part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]) | texts, "text": texts | scalars})
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "robot"]) | scalars,
     "content": texts | st.lists(text_part, max_size=3) | json_values},
    optional={"name": texts | scalars},
) | json_values
small_ints = st.integers(min_value=-2, max_value=12) | numbers
chat_fields: dict[str, st.SearchStrategy[Any]] = {
    "model": texts | scalars,
    "stream": st.booleans() | scalars,
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | scalars}) | json_values,
    "max_tokens": small_ints,
    "max_completion_tokens": small_ints,
    "temperature": numbers | texts,
    "top_p": numbers | texts,
    "seed": numbers | texts,
    "stop": texts | st.lists(texts, max_size=5) | json_values,
    "n": small_ints,
    "user": texts | scalars,
    **{name: st.sampled_from(neutral) | json_values for name, neutral in UNSUPPORTED_UNLESS.items()},
}
fuzzed_chat_request = st.fixed_dictionaries({"messages": st.lists(message, max_size=3) | json_values},
                                            optional=chat_fields)
clean_texts = st.text(max_size=20) | st.sampled_from(["hi", "BLOCK it", "HOLD it", "SILENT", "NAN"])
valid_chat_request = st.fixed_dictionaries(
    {"messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user"]),
                                                 "content": clean_texts}), min_size=1, max_size=3)},
    optional={
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "max_tokens": st.integers(min_value=1, max_value=16),
        "temperature": st.floats(min_value=0, max_value=2),
        "top_p": st.floats(min_value=0.01, max_value=1),
        "seed": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "stop": st.lists(st.text(min_size=1, max_size=3), max_size=4),
        **{name: st.sampled_from(neutral) for name, neutral in UNSUPPORTED_UNLESS.items()},
    },
)
chat_request = valid_chat_request | fuzzed_chat_request | json_values
exchange = st.fixed_dictionaries({"prompt": texts | scalars}, optional={"response": texts | scalars}) | json_values
moderation_request = st.fixed_dictionaries(
    {"input": texts | exchange | st.lists(texts | exchange, max_size=4)}, optional={"model": texts | scalars}
) | json_values
raw_bodies = st.binary(max_size=64) | st.sampled_from([b"", b"{", b"[" * 5000, b'{"messages": [' + b"[" * 5000])


@pytest.fixture(scope="module", params=["scripted", "tiny-guard"])
def server(request, tiny_lm_dir):
    """The scripted guard (every outcome) and the real ``Guard`` on the tiny model (real tokenizer and template)."""
    from transformers import AutoTokenizer

    guard = FakeGuard(AutoTokenizer.from_pretrained(tiny_lm_dir)) if request.param == "scripted" else real_guard(
        str(tiny_lm_dir))
    app = create_app(guard, ServeSettings(api_keys=(KEY,), max_tokens=16, default_max_tokens=4,
                                          max_prompt_tokens=256, request_timeout_s=REQUEST_TIMEOUT_S))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S + 10) as http:
        yield http, request.param == "scripted"


def encode(body: Any) -> bytes:
    """JSON as a client library writes it: non-ASCII escaped (so lone surrogates survive), NaN allowed."""
    return json.dumps(body, allow_nan=True).encode("ascii")


def post(http: httpx.Client, path: str, content: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with http.stream("POST", path, content=content, headers=headers) as response:
        response.read()
    return response


def check_answer(response: httpx.Response, body: Any, scripted: bool) -> None:
    """Never a 5xx; errors in OpenAI's envelope, a 400 on a JSON object names the field; streams end in [DONE];
    the real guard never fails closed on a request it accepted (the scripted one does on purpose)."""
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"]
        if response.status_code == 400 and isinstance(body, dict) and error["type"] == "invalid_request_error":
            assert error["param"], (body, error)
        return
    if response.headers["content-type"].startswith("text/event-stream"):
        chunks = [line for line in response.text.split("\n\n") if line]
        assert chunks[-1] == "data: [DONE]", response.text
        answers = [json.loads(chunk.removeprefix("data: ")) for chunk in chunks[:-1]]
    else:
        answers = [response.json()]
    if not scripted:
        errors = [answer.get("guard", {}).get("error") for answer in answers]
        errors += [result.get("error") for answer in answers for result in answer.get("results", [])]
        assert not any(errors), answers


@FUZZ
@given(body=chat_request)
def test_fuzz_chat_completions(server, body):
    http, scripted = server
    check_answer(post(http, "/v1/chat/completions", encode(body)), body, scripted)


@FUZZ
@given(body=moderation_request)
def test_fuzz_moderations(server, body):
    http, scripted = server
    check_answer(post(http, "/v1/moderations", encode(body)), body, scripted)


@FUZZ
@given(content=raw_bodies, path=st.sampled_from(["/v1/chat/completions", "/v1/moderations"]))
def test_fuzz_raw_bodies(server, content, path):
    http, scripted = server
    check_answer(post(http, path, content), None, scripted)
