"""Connection lifecycle: graceful drain on shutdown, a deadline for request bodies, Retry-After from the queue."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from serve_fakes import SAFE_ANSWER, FakeGuard, running_server

from constitutional_guard.serve import ServeSettings, create_app
from constitutional_guard.serve.drain import DrainingServer
from constitutional_guard.serve.errors import APIError
from constitutional_guard.serve.limits import Worker

KEY = "lifecycle-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
CHAT = {"messages": [{"role": "user", "content": "Capital of France?"}], "stream": True}


@pytest.fixture(scope="module")
def tokenizer(tiny_lm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_dir)


@contextmanager
def draining_server(app) -> Iterator[tuple[str, DrainingServer, threading.Thread]]:
    server = DrainingServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"), app.state.drain)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", server, thread
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def sse_data(response: httpx.Response) -> Iterator[str]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line.removeprefix("data: ")


def streamed_text(events: list[str]) -> str:
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def test_drain_lets_streams_finish_and_refuses_new_work(tokenizer):
    app = create_app(FakeGuard(tokenizer, token_delay=0.03), ServeSettings(api_keys=(KEY,), drain_grace_s=20))
    with draining_server(app) as (url, server, thread), httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{url}/v1/chat/completions", json=CHAT, headers=HEADERS) as response:
            events = sse_data(response)
            seen = [next(events), next(events)]
            server.handle_exit(signal.SIGTERM, None)
            health = http.get(f"{url}/healthz")
            assert health.status_code == 503 and health.json()["status"] == "draining"
            refused = http.post(f"{url}/v1/chat/completions", json=CHAT, headers=HEADERS)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
            seen += list(events)
        assert seen[-1] == "[DONE]"
        assert streamed_text(seen) == SAFE_ANSWER
        assert json.loads(seen[-2])["choices"][0]["finish_reason"] == "stop"
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_streams_open_after_the_grace_period_end_with_an_error_and_done(tokenizer):
    guard = FakeGuard(tokenizer, token_delay=0.2)
    app = create_app(guard, ServeSettings(api_keys=(KEY,), drain_grace_s=0.3))
    with draining_server(app) as (url, server, thread), httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{url}/v1/chat/completions", json=CHAT, headers=HEADERS) as response:
            events = sse_data(response)
            seen = [next(events)]
            started = time.monotonic()
            server.handle_exit(signal.SIGTERM, None)
            seen += list(events)
        assert time.monotonic() - started < 5
        assert seen[-1] == "[DONE]"
        assert json.loads(seen[-2])["error"]["code"] == "shutting_down"
        assert len(streamed_text(seen)) < len(SAFE_ANSWER)
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert guard.streams_closed == 1


def test_partial_body_gets_408_after_the_body_deadline(tokenizer):
    app = create_app(FakeGuard(tokenizer), ServeSettings(api_keys=(KEY,), body_timeout_s=0.5))
    with running_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 200\r\n\r\n{\"messa")
            started = time.monotonic()
            answer = b""
            while b"\r\n\r\n{" not in answer or not answer.endswith(b"}"):  # headers and body may come apart
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            answer = answer.decode()
        assert answer.startswith("HTTP/1.1 408") and '"code":"body_timeout"' in answer
        assert time.monotonic() - started < 5


def test_retry_after_follows_the_queue():
    worker = Worker(max_concurrent=2, max_queued=2)
    for _ in range(4):
        worker.admit()
    with pytest.raises(APIError) as err:
        worker.admit()
    assert err.value.retry_after_s == 1  # no job finished yet: nothing to estimate from
    worker.mean_job_s = 9.5
    with pytest.raises(APIError) as err:
        worker.admit()
    assert err.value.status == 429 and err.value.retry_after_s == 19  # 9.5 s × 4 admitted ÷ 2 threads
    assert err.value.response().headers["retry-after"] == "19"
    worker.shutdown()
