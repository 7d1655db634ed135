"""Pieces of the server in isolation: request → generation settings, stream state, admission, stream cleanup."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import ClientDisconnect

from constitutional_guard.classifiers.base import ClassifierScore, Thresholds, Verdict
from constitutional_guard.guard.events import (
    Finished,
    FinishReason,
    GenerationStatus,
    GuardErrorCode,
    TextReleased,
)
from constitutional_guard.serve.chat import (
    CompletionState,
    GuardedStreamingResponse,
    StreamEnd,
    generation_config,
    wire_finish_reason,
)
from constitutional_guard.serve.errors import APIError
from constitutional_guard.serve.limits import Worker
from constitutional_guard.serve.moderation import moderation_result
from constitutional_guard.serve.protocol import ChatCompletionRequest
from constitutional_guard.serve.settings import ServeSettings

SETTINGS = ServeSettings(api_keys=("k",), max_tokens=64, default_max_tokens=32, max_prompt_chars=50, max_messages=2)


def request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


def test_generation_config_from_request():
    config = generation_config(request(max_completion_tokens=8, temperature=0.7, top_p=0.9, seed=3, stop="END"),
                               SETTINGS)
    assert (config.max_new_tokens, config.temperature, config.top_p, config.seed, config.stop) == (
        8, 0.7, 0.9, 3, ("END",))
    assert generation_config(request(), SETTINGS).max_new_tokens == 32
    for fields, param in (({"max_tokens": 65}, "max_tokens"), ({"max_completion_tokens": 65}, "max_completion_tokens"),
                          ({"messages": [{"role": "user", "content": "x" * 51}]}, "messages"),
                          ({"messages": [{"role": "user", "content": "a"}] * 3}, "messages")):
        with pytest.raises(APIError) as err:
            generation_config(request(**fields), SETTINGS)
        assert err.value.status == 400 and err.value.param == param


def test_content_parts_and_developer_role():
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    body = request(messages=[{"role": "developer", "content": "rules"}, {"role": "user", "content": parts}])
    assert body.plain_messages() == [{"role": "system", "content": "rules"}, {"role": "user", "content": "ab"}]


def finished(status: GenerationStatus, reason: FinishReason, response: str) -> Finished:
    return Finished(status, reason, response, 3, 2)


def test_finish_reasons_on_the_wire():
    assert wire_finish_reason(finished(GenerationStatus.COMPLETED, FinishReason.STOP, "")) == "stop"
    assert wire_finish_reason(finished(GenerationStatus.COMPLETED, FinishReason.LENGTH, "")) == "length"
    assert wire_finish_reason(finished(GenerationStatus.BLOCKED, FinishReason.CONTENT_FILTER, "")) == "content_filter"
    assert wire_finish_reason(finished(GenerationStatus.HELD, FinishReason.HELD, "")) == "content_filter"


def test_tail_sends_only_what_the_client_lacks():
    state = CompletionState(id="x", model="m")
    state.observe(TextReleased("Sure, ", 0, 1))
    state.observe(finished(GenerationStatus.BLOCKED, FinishReason.CONTENT_FILTER, "Sure, \n\nNo."))
    assert state.tail("Held.") == "\n\nNo."
    other = CompletionState(id="y", model="m", sent="Sure, ")
    other.observe(finished(GenerationStatus.BLOCKED, FinishReason.CONTENT_FILTER, "No."))
    assert other.tail("Held.") == "\n\nNo."
    info = state.guard_info()
    assert (info.status, info.verdict, info.score, info.category) == ("blocked", "block", None, None)
    assert info.error is None and state.outcome == "blocked"


def test_held_tail_is_the_notice_only_before_any_text():
    silent = CompletionState(id="x", model="m")
    silent.observe(finished(GenerationStatus.HELD, FinishReason.HELD, ""))
    assert silent.tail("Held.") == "Held."
    partial = CompletionState(id="y", model="m")
    partial.observe(TextReleased("Sure, ", 0, 1))
    partial.observe(finished(GenerationStatus.HELD, FinishReason.HELD, "Sure, "))
    assert partial.tail("Held.") == ""


def test_failed_guard_is_reported_and_counted_apart():
    state = CompletionState(id="x", model="m")
    state.observe(Finished(GenerationStatus.HELD, FinishReason.HELD, "", 3, 2, error="probe scored token 0 as nan",
                           error_code=GuardErrorCode.NON_FINITE_SCORE))
    info = state.guard_info()
    assert info.status == "held" and state.outcome == "failed"
    assert info.error is not None and info.error.code == "non_finite_score" and "nan" in info.error.message


def test_admission_is_bounded_and_released():
    worker = Worker(max_concurrent=1, max_queued=1)
    first, second = worker.admit(), worker.admit()
    with pytest.raises(APIError) as err:
        worker.admit()
    assert err.value.status == 429
    first.release()
    first.release()  # idempotent
    worker.admit()
    second.release()
    assert worker.queued == 1
    worker.shutdown()


def test_stream_resources_freed_even_if_never_iterated():
    class Run:
        stopped = False

        def stop(self):
            self.stopped = True

    worker = Worker(1, 0)
    run, outcomes = Run(), []
    end = StreamEnd(run, worker.admit(), outcomes.append)

    async def body():
        yield "never"

    async def send(_):
        raise OSError("client gone")

    async def receive():
        return {"type": "http.disconnect"}

    response = GuardedStreamingResponse(body(), end, media_type="text/event-stream")
    with pytest.raises(ClientDisconnect):
        asyncio.run(response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send))
    assert run.stopped and outcomes == ["cancelled"] and worker.queued == 0
    worker.admit()  # the place is free again
    worker.shutdown()


def test_moderation_result_keeps_constitution_categories_only():
    score = ClassifierScore(0.7, Verdict.UNCERTAIN, Thresholds(0.5, 0.9), "unsafe",
                            categories={"hate": 0.7, "fraud_and_scams": 0.1, "made_up": 0.9})
    result = moderation_result(score, ["hate", "fraud_and_scams", "privacy"])
    assert result.flagged and result.verdict == "uncertain"
    assert result.category_scores == {"hate": 0.7, "fraud_and_scams": 0.1}
    assert result.categories == {"hate": True, "fraud_and_scams": False}
    calm = moderation_result(ClassifierScore(0.1, Verdict.ALLOW, Thresholds(), "safe"), ["hate"])
    assert not calm.flagged and calm.category_scores == {} and calm.categories == {}
