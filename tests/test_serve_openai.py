"""The server against the official ``openai`` client on a real uvicorn at 127.0.0.1, with a scripted guard."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from serve_fakes import RELEASED_BEFORE_BLOCK, SAFE_ANSWER, UNSAFE_ANSWER, FakeGuard, running_server

from constitutional_guard.serve import ServeSettings, create_app

KEY = "test-key-123"


@pytest.fixture(scope="module")
def tokenizer(tiny_lm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_dir)


@pytest.fixture
def served(tokenizer):
    """(base URL, guard, app) of a fresh server with default limits."""

    def start(token_delay: float = 0.0, **limits):
        guard = FakeGuard(tokenizer, token_delay=token_delay)
        app = create_app(guard, ServeSettings(api_keys=(KEY,), **limits))
        return guard, app

    servers = []

    def serve(token_delay: float = 0.0, **limits):
        guard, app = start(token_delay, **limits)
        ctx = running_server(app)
        url = ctx.__enter__()
        servers.append(ctx)
        return url, guard, app

    yield serve
    for ctx in servers:
        ctx.__exit__(None, None, None)


def client(url: str, key: str = KEY, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30, **kwargs)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def test_chat_completion(served):
    url, _, _ = served()
    completion = client(url).chat.completions.create(model="any", messages=ask("Capital of France?"))
    choice = completion.choices[0]
    assert choice.message.content == SAFE_ANSWER
    assert choice.finish_reason == "stop"
    assert completion.model == "fake-guarded-model"
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    guard = completion.model_extra["guard"]
    assert guard["status"] == "completed" and guard["verdict"] == "allow"


def test_streaming_releases_text_in_order(served):
    url, _, _ = served()
    stream = client(url).chat.completions.create(
        model="any", messages=ask("Capital of France?"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == SAFE_ANSWER
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 5
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    assert finals[0].model_extra["guard"]["status"] == "completed"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_max_tokens_ends_with_length(served):
    url, _, _ = served()
    completion = client(url).chat.completions.create(model="any", messages=ask("Capital?"), max_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3


def test_blocked_stream_ends_in_content_filter_without_leaking(served):
    url, guard, _ = served()
    stream = client(url).chat.completions.create(model="any", messages=ask("BLOCK: how to"), stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    pieces = guard._tokens(UNSAFE_ANSWER)
    released = "".join(pieces[:RELEASED_BEFORE_BLOCK])
    assert text == released + "\n\n" + guard.constitution.refusal
    assert "".join(pieces[: RELEASED_BEFORE_BLOCK + 1]) not in text
    final = chunks[-1]
    assert final.choices[0].finish_reason == "content_filter"
    meta = final.model_extra["guard"]
    assert meta["status"] == "blocked" and meta["verdict"] == "block"
    assert meta["category"] == "weapons_cbrn" and meta["escalations"] == 1


def test_blocked_completion_returns_the_refusal(served):
    url, guard, _ = served()
    completion = client(url).chat.completions.create(model="any", messages=ask("BLOCK: how to"))
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content.endswith(guard.constitution.refusal)
    assert completion.model_extra["guard"]["status"] == "blocked"


def test_held_generation_says_so(served):
    url, guard, _ = served()
    chunks = list(client(url).chat.completions.create(model="any", messages=ask("HOLD this"), stream=True))
    final = chunks[-1]
    assert final.choices[0].finish_reason == "content_filter"
    assert final.model_extra["guard"]["status"] == "held"
    assert final.model_extra["guard"]["verdict"] == "uncertain"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == "".join(guard._tokens(SAFE_ANSWER)[:2])  # what was released before the hold, no notice


def test_held_answer_before_any_text_is_the_hold_notice(served):
    url, guard, _ = served()
    notice = guard.constitution.hold_notice
    for prompt in ("HOLD this", "SILENT please"):  # non-streaming: nothing was sent, so never half an answer
        completion = client(url).chat.completions.create(model="any", messages=ask(prompt))
        assert completion.choices[0].message.content == notice
        assert completion.choices[0].finish_reason == "content_filter"
        assert completion.model_extra["guard"]["status"] == "held"
    chunks = list(client(url).chat.completions.create(model="any", messages=ask("SILENT please"), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == notice
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_guard_failing_closed_is_reported_counted_and_logged(served, caplog):
    url, guard, _ = served()
    with caplog.at_level("WARNING", logger="constitutional_guard.serve.chat"):
        completion = client(url).chat.completions.create(model="any", messages=ask("NAN please"))
        chunks = list(client(url).chat.completions.create(model="any", messages=ask("NAN please"), stream=True))
    meta = completion.model_extra["guard"]
    assert meta["status"] == "held" and meta["error"]["code"] == "non_finite_score"
    assert "nan" in meta["error"]["message"]
    assert completion.choices[0].message.content == guard.constitution.hold_notice
    assert chunks[-1].model_extra["guard"]["error"]["code"] == "non_finite_score"
    assert any(completion.id in r.getMessage() and "non_finite_score" in r.getMessage() for r in caplog.records)
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'cguard_generations_total{status="failed"} 2.0' in text
    assert 'cguard_generations_total{status="held"}' not in text
    assert client(url).chat.completions.create(model="any", messages=ask("hi")).model_extra["guard"]["error"] is None
    with caplog.at_level("WARNING", logger="constitutional_guard.serve.moderation"):
        moderation = client(url).moderations.create(input=["NAN here", "hello"])
    failed, fine = moderation.results
    assert failed.flagged and failed.model_extra["verdict"] == "uncertain" and failed.model_extra["score"] is None
    assert failed.model_extra["error"]["code"] == "non_finite_score" and fine.model_extra["error"] is None
    assert any(moderation.id in r.getMessage() for r in caplog.records)
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'cguard_moderations_total{verdict="failed"} 1.0' in text


def test_moderation_text_and_exchange(served):
    url, _, _ = served()
    result = client(url).moderations.create(input="how do I make a nerve agent").results[0]
    assert result.flagged
    assert result.categories.model_extra["weapons_cbrn"] is True
    scores = result.category_scores.model_extra
    assert scores["weapons_cbrn"] == pytest.approx(0.96)
    assert "not_a_category" not in scores
    assert result.model_extra["verdict"] == "block"

    body = {"input": [{"prompt": "what is a lock?", "response": "A lock keeps doors shut."}, "hello there"]}
    answer = httpx.post(f"{url}/v1/moderations", json=body, headers={"Authorization": f"Bearer {KEY}"}).json()
    assert [r["verdict"] for r in answer["results"]] == ["uncertain", "allow"]
    assert [r["flagged"] for r in answer["results"]] == [True, False]


def test_auth_required(served):
    url, _, _ = served()
    with pytest.raises(openai.AuthenticationError) as err:
        client(url, key="wrong").chat.completions.create(model="any", messages=ask("hi"))
    assert err.value.status_code == 401
    assert err.value.body["type"] == "authentication_error"
    assert httpx.post(f"{url}/v1/moderations", json={"input": "x"}).status_code == 401
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"


def test_oversize_request_is_413(served):
    url, _, _ = served(max_body_bytes=2_000)
    with pytest.raises(openai.APIStatusError) as err:
        client(url).chat.completions.create(model="any", messages=ask("x" * 5_000))
    assert err.value.status_code == 413
    assert err.value.body["code"] == "body_too_large"

    def chunks():  # no Content-Length: the limit applies to the bytes as they arrive
        yield b'{"messages": [{"role": "user", "content": "'
        yield b"z" * 3_000
        yield b'"}]}'

    answer = httpx.post(f"{url}/v1/chat/completions", content=chunks(),
                        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "body_too_large"


def test_limits_and_malformed_requests_are_4xx(served):
    url, _, _ = served(max_tokens=16, default_max_tokens=16, max_prompt_chars=100)
    api = client(url)
    with pytest.raises(openai.BadRequestError) as err:
        api.chat.completions.create(model="any", messages=ask("hi"), max_tokens=17)
    assert err.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        api.chat.completions.create(model="any", messages=ask("y" * 101))
    assert err.value.body["param"] == "messages"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bad = {
        b"{not json": None,
        b'{"messages": []}': "messages",
        b'{"messages": [{"role": "robot", "content": "hi"}]}': "messages[0].role",
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}': "temperature",
        b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}': "n",
        b"[1, 2]": None,
    }
    for payload, param in bad.items():
        answer = httpx.post(f"{url}/v1/chat/completions", content=payload, headers=headers)
        assert answer.status_code == 400, payload
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        if param is not None:
            assert error["param"] == param, payload
    assert httpx.post(f"{url}/v1/moderations", json={"input": []}, headers=headers).status_code == 400
    assert httpx.get(f"{url}/v1/nowhere", headers=headers).json()["error"]["type"] == "not_found_error"
    assert httpx.get(f"{url}/v1/chat/completions", headers=headers).status_code == 405


MALFORMED = {
    b'{"messages": [{"role": "user", "content": "hi"}], "stop": ""}': "stop",
    b'{"messages": [{"role": "user", "content": "hi"}], "stop": [""]}': "stop",
    b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud800"]}': "stop[0]",
    b'{"messages": [{"role": "user", "content": "a \\ud800 b"}]}': "messages[0].content",
    b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}':
        "messages[0].content[0].text",
    b'{"messages": [{"role": "user", "content": "hi"}], "seed": 1180591620717411303424}': "seed",
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}': "temperature",
}
UNSUPPORTED = {
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "required",
    "functions": [{"name": "f", "parameters": {}}],
    "function_call": "auto",
    "logprobs": True,
    "top_logprobs": 2,
    "response_format": {"type": "json_object"},
    "logit_bias": {"50256": -100},
    "n": 2,
    "presence_penalty": 0.5,
    "frequency_penalty": -1.0,
}
NEUTRAL = {"tools": [], "tool_choice": "none", "logprobs": False, "response_format": {"type": "text"},
           "logit_bias": {}, "presence_penalty": 0, "frequency_penalty": 0.0, "n": 1}


def test_malformed_requests_are_400_naming_the_param(served):
    url, _, _ = served()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for payload, param in MALFORMED.items():
        answer = httpx.post(f"{url}/v1/chat/completions", content=payload, headers=headers)
        assert answer.status_code == 400, payload
        assert answer.json()["error"]["param"] == param, (payload, answer.json())
    for payload, param in ((b'{"input": "\\ud800"}', "input"),
                           (b'{"input": [{"prompt": "a", "response": "\\ud800"}]}', "input[0].response")):
        answer = httpx.post(f"{url}/v1/moderations", content=payload, headers=headers)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.json()


def test_unsupported_openai_parameters_are_400_naming_them(served):
    url, _, _ = served()
    api = client(url)
    for name, value in UNSUPPORTED.items():
        with pytest.raises(openai.BadRequestError) as err:
            api.chat.completions.create(model="any", messages=ask("hi"), **{name: value})
        assert err.value.body["param"] == name, name
    completion = api.chat.completions.create(model="any", messages=ask("hi"), **NEUTRAL)
    assert completion.choices[0].message.content == SAFE_ANSWER


def test_guard_failure_is_a_typed_error(served):
    url, _, _ = served()
    with pytest.raises(openai.InternalServerError) as err:
        client(url).chat.completions.create(model="any", messages=ask("FAIL now"))
    assert err.value.body["code"] == "guard_error"


def test_full_queue_answers_429(served):
    url, _, app = served(token_delay=0.05, max_concurrent=1, max_queued=0)
    api = client(url)
    stream = api.chat.completions.create(model="any", messages=ask("slow"), stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    with pytest.raises(openai.RateLimitError) as err:
        api.chat.completions.create(model="any", messages=ask("another"))
    assert err.value.response.headers["retry-after"] == "1"
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == SAFE_ANSWER
    wait_until(lambda: app.state.worker.running == 0 and app.state.worker.queued == 0)
    assert api.chat.completions.create(model="any", messages=ask("after")).choices[0].message.content == SAFE_ANSWER


def test_timeouts(served):
    url, guard, app = served(token_delay=0.05, request_timeout_s=0.4)
    api = client(url)
    with pytest.raises(openai.APIStatusError) as err:
        api.chat.completions.create(model="any", messages=ask("slow"))
    assert err.value.status_code == 504
    with pytest.raises(openai.APIError, match="time limit"):
        list(api.chat.completions.create(model="any", messages=ask("slow"), stream=True))
    wait_until(lambda: app.state.worker.running == 0 and app.state.worker.queued == 0)
    assert guard.tokens_generated < 2 * len(guard._tokens(SAFE_ANSWER))


def test_client_disconnect_stops_generation(served):
    url, guard, app = served(token_delay=0.05)
    total = len(guard._tokens(SAFE_ANSWER))
    stream = client(url).chat.completions.create(model="any", messages=ask("slow"), stream=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    wait_until(lambda: guard.streams_closed == 1 and app.state.worker.running == 0)
    assert guard.tokens_generated < total

    payload = {"messages": ask("slow")}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=0.3)
    wait_until(lambda: app.state.worker.running == 0 and app.state.worker.queued == 0)
    assert guard.tokens_generated < 2 * total


def test_metrics(served):
    url, _, _ = served()
    api = client(url)
    api.chat.completions.create(model="any", messages=ask("hi"))
    list(api.chat.completions.create(model="any", messages=ask("BLOCK it"), stream=True))
    api.moderations.create(input="nerve agent")
    with pytest.raises(openai.AuthenticationError):
        client(url, key="nope").chat.completions.create(model="any", messages=ask("hi"))
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    for line in (
        'cguard_generations_total{status="completed"} 1.0',
        'cguard_generations_total{status="blocked"} 1.0',
        'cguard_blocks_total{endpoint="chat"} 1.0',
        'cguard_blocks_total{endpoint="moderation"} 1.0',
        "cguard_escalations_total 1.0",
        'cguard_moderations_total{verdict="block"} 1.0',
        'cguard_http_requests_total{method="POST",route="/v1/chat/completions",status="401"} 1.0',
        "cguard_running 0.0",
        "cguard_queued 0.0",
    ):
        assert line in text, line
    assert 'cguard_http_request_duration_seconds_bucket{le="+Inf",route="/v1/chat/completions"} 3.0' in text
    assert "cguard_time_to_first_release_seconds_count 2.0" in text
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"][0]["id"] == (
        "fake-guarded-model"
    )


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
