"""The stream monitor batched across concurrent streams: one padded forward for many streams, the same scores
as one stream at a time, and a failing chunk that fails only its own stream, closed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from serve_fakes import running_server
from tiny_models import DEVICE
from upstream_fakes import BENIGN, HARMFUL, TAIL, ScriptedUpstream, pieces_of, remote_guard

from constitutional_guard.guard.events import Finished, GenerationConfig, GenerationStatus, TextReleased
from constitutional_guard.guard.monitor import MonitoredToken, MonitorStream, StreamMonitor
from constitutional_guard.models.loading import LoadedModel, load_causal_lm
from constitutional_guard.probes import LinearProbe, ProbeConfig

PROMPTS = ["Tell me about Paris.", "Hi", "Write a long and careful answer about old bridges in France, please.",
           "What is ZYX?"]
TEXTS = [BENIGN, HARMFUL, TAIL + BENIGN, BENIGN + HARMFUL]


@pytest.fixture(scope="module")
def lm(tiny_lm_dir: Path) -> LoadedModel:
    return load_causal_lm(str(tiny_lm_dir), device=DEVICE, dtype="float32")  # paths compared exactly


def random_probe(layers: list[int]) -> LinearProbe:
    torch.manual_seed(0)
    return LinearProbe(ProbeConfig(model_id="tiny", hidden_size=32, layers=layers), torch.randn(1, 32), torch.zeros(1))


def count_forwards(monitor: StreamMonitor) -> list[int]:
    """Batch size of every forward the monitor runs from now on."""
    sizes: list[int] = []
    forward = monitor.hidden_states

    def counted(input_ids: Any, cache: dict, **inputs: Any) -> Any:
        sizes.append(input_ids.shape[0] if isinstance(input_ids, torch.Tensor) else 1)
        return forward(input_ids, cache, **inputs)

    monitor.hidden_states = counted  # type: ignore[method-assign]
    return sizes


def prefill_alone(monitor: StreamMonitor, streams: list[MonitorStream]) -> None:
    """Read each prompt, one stream at a time, so every stream is active before any chunk is submitted."""
    assert monitor.batcher is not None
    wait, monitor.batcher.max_wait_s = monitor.batcher.max_wait_s, 0.0
    for stream in streams:
        stream.prefill()
    monitor.batcher.max_wait_s = wait


def read(stream: MonitorStream, text: str, tokens: list[MonitoredToken]) -> None:
    """Feed ``text`` in small pieces and flush, collecting the scored tokens (kept up to an error)."""
    try:
        for piece in pieces_of(text, 5):
            tokens.extend(stream.feed(piece))
        tokens.extend(stream.flush())
    finally:
        stream.close()


def in_threads(jobs: list[Callable[[], None]]) -> list[BaseException | None]:
    """Run ``jobs`` at once, one thread each; the exception each raised (None if none)."""
    errors: list[BaseException | None] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(i: int) -> None:
        start.wait()
        try:
            jobs[i]()
        except BaseException as exc:  # reported to the test
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def unbatched_scores(lm: LoadedModel, probe: LinearProbe, prompt: str, text: str) -> list[MonitoredToken]:
    monitor = StreamMonitor(lm, probe, chunk_tokens=3, max_batch=1)
    tokens: list[MonitoredToken] = []
    read(monitor.start([{"role": "user", "content": prompt}], {}), text, tokens)
    return tokens


def test_concurrent_streams_share_each_forward(lm):
    monitor = StreamMonitor(lm, random_probe([1]), chunk_tokens=3, max_batch=4, max_wait_s=5.0)
    streams = [monitor.start([{"role": "user", "content": p}], {}) for p in PROMPTS]
    prefill_alone(monitor, streams)
    assert monitor.active_streams == 4
    sizes = count_forwards(monitor)
    results: list[list[MonitoredToken]] = [[] for _ in streams]
    errors = in_threads([lambda s=s, r=r: read(s, BENIGN, r) for s, r in zip(streams, results, strict=True)])
    assert errors == [None] * 4
    per_stream = len(results[0]) // 3 + (len(results[0]) % 3 > 0)
    assert all(len(r) == len(results[0]) for r in results)
    assert sizes == [4] * per_stream, "the four streams' chunks were not read in one forward each"
    assert monitor.active_streams == 0


@pytest.mark.parametrize("layers", [[1], [2]], ids=["truncated", "full-stack"])
@pytest.mark.parametrize("prefill", [True, False], ids=["prefill", "prompt-with-first-chunk"])
def test_batched_scores_equal_one_stream_at_a_time(lm, layers, prefill):
    probe = random_probe(layers)
    monitor = StreamMonitor(lm, probe, chunk_tokens=3, max_batch=4, max_wait_s=0.05, first_chunk_tokens=2)
    sizes = count_forwards(monitor)
    streams = [monitor.start([{"role": "user", "content": p}], {}) for p in PROMPTS]
    results: list[list[MonitoredToken]] = [[] for _ in streams]

    def job(stream: MonitorStream, text: str, tokens: list[MonitoredToken]) -> Callable[[], None]:
        return lambda: (stream.prefill() if prefill else None, read(stream, text, tokens))

    errors = in_threads([job(s, t, r) for s, t, r in zip(streams, TEXTS, results, strict=True)])
    assert errors == [None] * 4
    assert max(sizes) > 1, "nothing was batched"
    for prompt, text, tokens in zip(PROMPTS, TEXTS, results, strict=True):
        expected = unbatched_scores(lm, probe, prompt, text)
        assert "".join(t.piece for t in tokens) == text
        assert [t.token_id for t in tokens] == [t.token_id for t in expected]
        assert torch.allclose(torch.tensor([t.score for t in tokens]), torch.tensor([t.score for t in expected]),
                              atol=1e-5)


def poison_after(monitor: StreamMonitor, poison: int) -> list[int]:
    """Make every forward that reads token ``poison`` fail (as a bad chunk would); the batch sizes tried."""
    sizes: list[int] = []
    forward = monitor.hidden_states

    def failing(input_ids: Any, cache: dict, **inputs: Any) -> Any:
        ids = input_ids if isinstance(input_ids, torch.Tensor) else torch.tensor([input_ids])
        sizes.append(ids.shape[0])
        if bool((ids == poison).any()):
            raise RuntimeError("bad chunk")
        return forward(input_ids, cache, **inputs)

    monitor.hidden_states = failing  # type: ignore[method-assign]
    return sizes


def only_in(lm: LoadedModel, text: str, other: str) -> int:
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    others = set(lm.tokenizer(other, add_special_tokens=False)["input_ids"])
    return next(i for i in ids if i not in others)


def test_a_failing_chunk_fails_only_its_own_stream(lm):
    probe = random_probe([1])
    monitor = StreamMonitor(lm, probe, chunk_tokens=3, max_batch=2, max_wait_s=5.0)
    poison = only_in(lm, HARMFUL, BENIGN)
    good, bad = (monitor.start([{"role": "user", "content": p}], {}) for p in PROMPTS[:2])
    prefill_alone(monitor, [good, bad])
    sizes = poison_after(monitor, poison)
    kept: list[list[MonitoredToken]] = [[], []]
    errors = in_threads([lambda: read(good, BENIGN + BENIGN, kept[0]), lambda: read(bad, HARMFUL, kept[1])])
    assert errors[0] is None and isinstance(errors[1], RuntimeError)
    assert 2 in sizes and sizes.count(1) >= 2, "the failed batch was not retried stream by stream"
    assert poison not in [t.token_id for t in kept[1]], "a token of the failed chunk was yielded"
    assert HARMFUL.startswith("".join(t.piece for t in kept[1]))
    expected = unbatched_scores(lm, probe, PROMPTS[0], BENIGN + BENIGN)
    assert torch.allclose(torch.tensor([t.score for t in kept[0]]), torch.tensor([t.score for t in expected]),
                          atol=1e-5)
    assert monitor.active_streams == 0


def test_guarded_streams_side_by_side_one_fails_closed(lm):
    """Two guarded streams share the monitor; a failing chunk holds its own stream with nothing of it released."""
    bad_text = BENIGN + HARMFUL  # a few chunks shared before the failing one
    script = ScriptedUpstream(script=lambda body: pieces_of(bad_text if "bad" in body["messages"][-1]["content"]
                                                            else BENIGN + BENIGN), delay_s=0.003)
    with running_server(script) as url:
        guard = remote_guard(lm, f"{url}/v1")
        monitor = guard.source.monitor
        monitor.batcher.max_wait_s = 1.0  # while both streams are active, each forward waits for both
        poison = only_in(lm, HARMFUL, BENIGN)
        sizes = poison_after(monitor, poison)
        events: list[list[Any]] = [[], []]
        config = GenerationConfig(max_new_tokens=512)
        errors = in_threads([lambda: events[0].extend(guard.stream("Tell me about Paris.", config)),
                             lambda: events[1].extend(guard.stream("a bad one", config))])
    assert errors == [None, None]
    good, bad = events[0][-1], events[1][-1]
    assert isinstance(good, Finished) and good.status is GenerationStatus.COMPLETED
    assert good.response == BENIGN + BENIGN
    assert isinstance(bad, Finished) and bad.status is GenerationStatus.HELD
    released = "".join(e.text for e in events[1] if isinstance(e, TextReleased) and not e.is_refusal)
    encoded = lm.tokenizer(bad_text, add_special_tokens=False, return_offsets_mapping=True)
    poisoned_at = encoded["offset_mapping"][encoded["input_ids"].index(poison)][0]
    assert bad_text.startswith(released) and len(released) <= poisoned_at, "text of the failed chunk was released"
    assert max(sizes) == 2, "the two streams never shared a forward"


@pytest.mark.real
def test_batched_scores_on_smollm2(smollm2_dir: Path):
    """SmolLM2 with a random probe at layer 18 (a truncated stack): batched scores equal one stream at a time."""
    lm = load_causal_lm(str(smollm2_dir), device=DEVICE)
    torch.manual_seed(0)
    probe = LinearProbe(ProbeConfig(model_id="smollm2", hidden_size=lm.hidden_size, layers=[18]),
                        torch.randn(1, lm.hidden_size) / lm.hidden_size**0.5, torch.zeros(1))
    monitor = StreamMonitor(lm, probe, chunk_tokens=8, max_batch=4, max_wait_s=0.05, first_chunk_tokens=5)
    sizes = count_forwards(monitor)
    streams = [monitor.start([{"role": "user", "content": p}], {}) for p in PROMPTS]
    results: list[list[MonitoredToken]] = [[] for _ in streams]
    errors = in_threads([lambda s=s, t=t, r=r: (s.prefill(), read(s, t, r))
                         for s, t, r in zip(streams, TEXTS, results, strict=True)])
    assert errors == [None] * 4 and max(sizes) > 1
    for prompt, text, tokens in zip(PROMPTS, TEXTS, results, strict=True):
        alone = StreamMonitor(lm, probe, chunk_tokens=8, max_batch=1)
        expected: list[MonitoredToken] = []
        read(alone.start([{"role": "user", "content": prompt}], {}), text, expected)
        assert torch.allclose(torch.tensor([t.score for t in tokens]), torch.tensor([t.score for t in expected]),
                              atol=1e-4)
