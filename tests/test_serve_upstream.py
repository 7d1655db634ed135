"""The guarded server in front of a scripted OpenAI-compatible engine (both real uvicorn servers on 127.0.0.1)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_fakes import running_server
from tiny_models import DEVICE
from upstream_fakes import BENIGN, HARMFUL_AT, UPSTREAM_TEXT, ScriptedUpstream, ZyxClassifier, pieces_of, remote_guard

from constitutional_guard.constitution import load_constitution
from constitutional_guard.models.loading import LoadedModel, load_causal_lm
from constitutional_guard.serve import ServeSettings, create_app


@pytest.fixture(scope="module")
def lm(tiny_lm_dir: Path) -> LoadedModel:
    return load_causal_lm(str(tiny_lm_dir), device=DEVICE)


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[str, ScriptedUpstream]]:
    script = ScriptedUpstream()
    with running_server(script) as url:
        yield f"{url}/v1", script


@pytest.fixture(scope="module", params=[True, False], ids=["monitor", "classifier-only"])
def served(request, lm, engine) -> Iterator[str]:
    """A guarded server in front of the scripted engine, with or without the stream monitor."""
    guard = remote_guard(lm, engine[0], monitor=request.param, classifier=ZyxClassifier(), read_timeout_s=0.5,
                         retries=0)
    with running_server(create_app(guard, ServeSettings(auth=False))) as url:
        yield url


@pytest.fixture
def script(engine) -> ScriptedUpstream:
    engine[1].__dict__.update(ScriptedUpstream().__dict__)
    return engine[1]


def chat(url: str, stream: bool, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "Tell me about it."}], "stream": stream, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)


def events(response: httpx.Response) -> list[dict | str]:
    """The server-sent payloads of a streamed answer (``[DONE]`` as a string)."""
    lines = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def content(payloads: list[dict | str]) -> str:
    return "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads
                   if isinstance(p, dict) and p.get("choices"))


def test_safe_answers_pass_through(served, script):
    script.pieces = pieces_of(BENIGN)
    completion = chat(served, stream=False).json()
    assert completion["choices"][0]["message"]["content"] == BENIGN
    assert completion["choices"][0]["finish_reason"] == "stop" and completion["guard"]["status"] == "completed"
    payloads = events(chat(served, stream=True))
    assert content(payloads) == BENIGN and payloads[-1] == "[DONE]"
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_zero_leak(served, script, stream):
    script.delay_s, script.linger_s = 0.005, 10.0  # still generating when the guard blocks, however slow it is
    response = chat(served, stream=stream)
    assert response.status_code == 200
    if stream:
        payloads = events(response)
        text = content(payloads)
        assert payloads[-2]["guard"]["status"] == "blocked" and payloads[-1] == "[DONE]"
    else:
        text = response.json()["choices"][0]["message"]["content"]
        assert response.json()["guard"]["status"] == "blocked"
    refusal = load_constitution().refusal
    assert text.endswith(refusal)
    shown = text.removesuffix(refusal).removesuffix("\n\n")
    assert UPSTREAM_TEXT[:HARMFUL_AT].startswith(shown)
    deadline = time.monotonic() + 5
    while not script.disconnected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert script.disconnected, "the block did not abort the upstream"


def test_upstream_errors_map_to_502_with_its_message(served, script):
    script.fail_status = 500
    for stream in (False, True):
        response = chat(served, stream=stream)
        assert response.status_code == 502
        error = response.json()["error"]
        assert "scripted engine failure" in error["message"] and error["code"] == "upstream_error"


def test_upstream_timeout_maps_to_504(served, script):
    script.stall_s = 1.0
    response = chat(served, stream=False)
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"


def test_mid_stream_drop_ends_with_an_error_chunk(served, script):
    script.pieces, script.drop_after = pieces_of(BENIGN), 22
    payloads = events(chat(served, stream=True))
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["error"]["code"] == "upstream_error"
    assert not any(isinstance(p, dict) and p.get("choices") and p["choices"][0].get("finish_reason")
                   for p in payloads), "a dropped stream must not look finished"
    sent = "".join(script.pieces[:22])
    assert sent.startswith(content(payloads)) and len(content(payloads)) < len(sent)
    response = chat(served, stream=False)
    assert response.status_code == 502 and "broke off" in response.json()["error"]["message"]


def test_models_are_proxied(served, script):
    listing = httpx.get(f"{served}/v1/models", timeout=10).json()
    assert [m["id"] for m in listing["data"]] == ["scripted-model"]
