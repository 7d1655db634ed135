"""States kept by the token sources: the input and exchange checks use the guarded model's (or the stream monitor's)
states of the prompt and the answer instead of reading them again, exactly when they are what they would read."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from serve_fakes import quiet_probe
from test_embedding_classifier import train_tiny
from test_monitor_batching import in_threads, random_probe, read
from tiny_models import DEVICE

from constitutional_guard.classifiers import lm_states
from constitutional_guard.classifiers.base import Thresholds, load_classifier
from constitutional_guard.classifiers.embedding import EmbeddingClassifier
from constitutional_guard.classifiers.lm_states import (
    SEGMENTATION_SLACK,
    AnswerStates,
    StateReader,
    StatesSettings,
    StatesWanted,
    _covering,
)
from constitutional_guard.guard import sources
from constitutional_guard.guard.events import GenerationConfig, GenerationStatus
from constitutional_guard.guard.guard import Guard
from constitutional_guard.guard.monitor import MonitoredToken, StreamMonitor
from constitutional_guard.guard.policy import PolicySettings
from constitutional_guard.guard.sources import LocalSource
from constitutional_guard.guard.upstream import RemoteSource, UpstreamSettings
from constitutional_guard.models.loading import LoadedModel, load_causal_lm

pytestmark = pytest.mark.usefixtures("private_cache")

PROMPT = "What is the capital of France?"
ANSWER = "The capital of France is Paris. Vaccines train the immune system."


@pytest.fixture(scope="module")
def lm(tiny_lm_dir: Path) -> LoadedModel:
    return load_causal_lm(str(tiny_lm_dir), device=DEVICE, dtype="float32")  # paths compared exactly


@pytest.fixture(scope="module")
def reader(tiny_lm_dir: Path) -> StateReader:
    return StateReader.load(StatesSettings(model=str(tiny_lm_dir), layers=(1, 2), max_length=48,
                                           max_response_tokens=16, dtype="float32"))


def kept(lm: LoadedModel, prompt: str, answer: str, layers: tuple[int, ...] = (1, 2), limit: int = 64) -> AnswerStates:
    """The answer's states as a source keeps them (of its first ``limit`` tokens), from one forward over prompt and
    answer."""
    prompt_ids = lm.encode_messages([{"role": "user", "content": prompt}])
    answer_ids = lm.tokenizer(answer, add_special_tokens=False)["input_ids"]
    hidden = lm.hidden_states(prompt_ids + answer_ids)
    states = AnswerStates.start(lm, StatesWanted(layers, limit), prompt_ids)
    for j, token in enumerate(answer_ids):
        row = torch.stack([hidden[layer][len(prompt_ids) + j] for layer in layers]).numpy()
        states.append(token, None if states.full else row)
    return states


def count_reads(monkeypatch: pytest.MonkeyPatch, prompts: bool = False) -> list[int]:
    """Answers (with ``prompts``: prompts alone too) the state readers run through the model from now on, per
    call."""
    calls: list[int] = []
    pooled = lm_states.pooled_states

    def counted(lm, encoded, settings):
        calls.append(sum(prompts or len(ids) > prompt_length for ids, prompt_length in encoded))
        return pooled(lm, encoded, settings)

    monkeypatch.setattr(lm_states, "pooled_states", counted)
    return calls


@pytest.fixture
def no_recent_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts alone read by earlier tests are not reused."""
    monkeypatch.setattr(lm_states, "_RECENT", lm_states._RecentRows(lm_states.RECENT_PROMPTS))


def with_prompt(lm: LoadedModel, states: AnswerStates) -> AnswerStates:
    """``states`` with the prompt's states, as a source that read the prompt keeps them."""
    hidden = lm.hidden_states(states.prompt_ids)
    states.keep_prompt(torch.stack([hidden[layer] for layer in states.layers], dim=1).numpy())
    return states


def test_kept_states_give_the_row_a_read_gives(lm, reader, monkeypatch):
    answer = kept(lm, PROMPT, ANSWER)
    tokens = lm.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    partial = lm.tokenizer.decode(tokens[:7])  # a check in the middle of the answer
    items = [(PROMPT, ANSWER), (PROMPT, partial)]
    expected = reader.encode(items)
    reads = count_reads(monkeypatch)
    assert np.allclose(reader.encode(items, [answer, answer]), expected, atol=2e-3)
    assert sum(reads) == 0, "the kept states were read again"


def test_states_past_the_limit_are_not_kept(lm, reader, monkeypatch):
    answer = kept(lm, PROMPT, ANSWER, limit=5)
    tokens = lm.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    assert len(answer.rows) == 5 and answer.token_ids == tokens
    reads = count_reads(monkeypatch)
    within = (PROMPT, lm.tokenizer.decode(tokens[:5]))
    assert np.allclose(reader.encode([within], [answer]), reader.encode([within]), atol=2e-3)
    reader.encode([(PROMPT, ANSWER)], [answer])  # needs states past the limit: read
    assert reads == [1, 1]


@pytest.mark.parametrize("change", ["layers", "dtype", "model", "prompt", "answer", "prompt cut"])
def test_states_that_are_not_the_readers_are_read_again(lm, reader, monkeypatch, change):
    prompt, response = PROMPT, ANSWER
    answer = kept(lm, PROMPT, ANSWER, layers=(1,) if change == "layers" else (1, 2))
    if change == "dtype":
        answer.model = (answer.model[0], "torch.bfloat16", answer.model[2])
    elif change == "model":
        answer.model = ("another-model", *answer.model[1:])
    elif change == "prompt":
        prompt = "What is the capital of Spain?"
    elif change == "answer":
        response = "The capital of France is Lyon."
    elif change == "prompt cut":  # the reader keeps max_length tokens: a long prompt is cut from the left
        prompt = "Explain how vaccines work. " * 8
        answer = kept(lm, prompt, ANSWER)
    reads = count_reads(monkeypatch)
    row = reader.encode([(prompt, response)], [answer])
    assert sum(reads) == 1
    assert np.allclose(row, reader.encode([(prompt, response)]), atol=1e-6)


@pytest.mark.usefixtures("no_recent_prompts")
@pytest.mark.parametrize("change", ["none", "layers", "model", "prompt", "prompt cut", "not read"])
def test_kept_prompt_states_give_a_prompts_row_when_they_are_the_readers(lm, reader, monkeypatch, change):
    prompt = "Explain how vaccines work. " * 8 if change == "prompt cut" else PROMPT
    answer = kept(lm, prompt, ANSWER, layers=(1,) if change == "layers" else (2, 1))  # any order of layers
    if change != "not read":
        with_prompt(lm, answer)
    if change == "model":
        answer.model = ("another-model", *answer.model[1:])
    elif change == "prompt":
        prompt = "What is the capital of Spain?"
    expected = reader.encode([(prompt, None)])
    lm_states._RECENT._rows.clear()
    reads = count_reads(monkeypatch, prompts=True)
    assert np.allclose(reader.encode([(prompt, None)], [answer]), expected, atol=2e-3)
    assert sum(reads) == (0 if change == "none" else 1)
    reader.encode([(prompt, None)])  # a kept or read row is remembered for the exchange checks' prompt alone
    assert sum(reads) == (0 if change == "none" else 1)


def test_the_same_text_in_other_tokens_is_covered(lm):
    """A model may write a text in other tokens than tokenising it gives ("\\n\\n" as one token or two)."""
    text = "Paris is big."
    tokens = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    bytewise = lm.tokenizer.convert_tokens_to_ids(lm.tokenizer.convert_ids_to_tokens(tokens))
    pieces = [piece for token in lm.tokenizer.convert_ids_to_tokens(tokens) for piece in token]
    produced = lm.tokenizer.convert_tokens_to_ids(pieces)  # one token per byte
    assert bytewise == tokens and lm.tokenizer.decode(produced) == text and len(produced) > len(tokens)
    assert _covering(lm.tokenizer, tokens, produced + tokens) == len(produced)
    assert _covering(lm.tokenizer, tokens, tokens + produced) == len(tokens)
    assert _covering(lm.tokenizer, tokens, lm.tokenizer("Paris is small.")["input_ids"]) is None


@pytest.fixture(scope="module")
def state_classifier(tiny_encoder_dir: Path, tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    _, folder = train_tiny(
        tmp_path_factory.mktemp("answer-states"), tiny_encoder_dir, states_model=str(tiny_lm_dir),
        states_layers="1,2", states_max_length=64, states_max_response_tokens=16, states_dtype="float32",
    )
    classifier = load_classifier(folder)
    assert isinstance(classifier, EmbeddingClassifier)
    return classifier


def test_the_local_guard_hands_its_states_to_the_exchange_check(lm, state_classifier, monkeypatch):
    guard = Guard(lm, quiet_probe(str(lm.path), lm.num_layers, lm.hidden_size), classifier=state_classifier,
                  policy=PolicySettings(input_check=False))
    assert guard.shares_answer_states and guard.source.kept_states == StatesWanted((1, 2), 16 + SEGMENTATION_SLACK)
    config = GenerationConfig(max_new_tokens=64)
    reads = count_reads(monkeypatch)
    shared = guard.replay(PROMPT, ANSWER, config)
    exchange_reads = sum(reads)
    guard.source.kept_states = None
    read_again = guard.replay(PROMPT, ANSWER, config)
    finals = [[v.score for v in result.verdicts if v.stage == "final"] for result in (shared, read_again)]
    assert len(finals[0]) == 1 and np.allclose(finals[0], finals[1], atol=1e-4)
    assert exchange_reads == 0 and sum(reads) == 1, "the kept states were read again"


@pytest.mark.usefixtures("no_recent_prompts")
def test_the_local_guard_reads_the_prompt_once_for_the_input_check_and_generation(lm, state_classifier, monkeypatch):
    probe = quiet_probe(str(lm.path), lm.num_layers, lm.hidden_size)
    for pair in ("thresholds", "prompt_thresholds"):  # the input check allows: the exchange checks run too
        monkeypatch.setattr(state_classifier, pair, Thresholds(allow=0.99, block=1.0))
    guard = Guard(lm, probe, classifier=state_classifier)
    assert guard.shares_prompt_states and guard.shares_answer_states
    config = GenerationConfig(max_new_tokens=12, ignore_eos=True)
    reads = count_reads(monkeypatch, prompts=True)
    shared = guard.generate(PROMPT, config)
    assert sum(reads) == 0, "the input or exchange check read the prompt or answer again"
    lm_states._RECENT._rows.clear()
    separate = Guard(lm, probe, classifier=state_classifier, source=_Plain(lm, probe))
    assert not separate.shares_prompt_states and not separate.cascade.prompt_states
    read_again = separate.generate(PROMPT, config)
    assert sum(reads) >= 2, "the checks read the prompt and the answer themselves"
    assert shared.response == read_again.response and shared.status == read_again.status
    scores = [[v.score for v in result.verdicts] for result in (shared, read_again)]
    assert [v.stage for v in shared.verdicts] == [v.stage for v in read_again.verdicts] == ["input", "final"]
    assert np.allclose(scores[0], scores[1], atol=1e-3)


class _Plain(LocalSource):
    """A local source that keeps no states (the checks read everything themselves)."""

    def keep_answer_states(self, wanted: StatesWanted) -> bool:
        return False


def test_a_failed_prompt_read_holds_the_stream(lm, state_classifier, monkeypatch):
    guard = Guard(lm, quiet_probe(str(lm.path), lm.num_layers, lm.hidden_size), classifier=state_classifier)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(sources, "prefill", broken)
    result = guard.generate(PROMPT, GenerationConfig(max_new_tokens=4))
    assert result.status == GenerationStatus.HELD and result.response == "" and "out of memory" in result.error
    assert not result.verdicts, "the input check ran without the prompt's states"


def test_a_guard_whose_check_reads_another_model_keeps_nothing(lm, tiny_encoder_dir, tmp_path):
    _, folder = train_tiny(tmp_path, tiny_encoder_dir)  # no states
    guard = Guard(lm, quiet_probe(str(lm.path), lm.num_layers, lm.hidden_size), classifier=load_classifier(folder))
    assert not guard.shares_answer_states and guard.source.kept_states is None
    bf16 = StateReader.load(StatesSettings(model=str(lm.path), layers=(1,), dtype="bfloat16"))
    assert bf16.wanted_states(lm) is None


@pytest.mark.parametrize("max_batch", [1, 4], ids=["alone", "batched"])
def test_the_monitor_keeps_the_states_it_reads(lm, max_batch):
    monitor = StreamMonitor(lm, random_probe([2]), chunk_tokens=3, max_batch=max_batch, max_wait_s=0.05)
    assert monitor.keep_answer_states(StatesWanted((1, 2), 8))
    streams = [monitor.start([{"role": "user", "content": PROMPT}], {}) for _ in range(2)]
    results: list[list[MonitoredToken]] = [[], []]
    errors = in_threads([lambda s=s, r=r: read(s, ANSWER, r) for s, r in zip(streams, results, strict=True)])
    assert errors == [None, None]
    for stream, tokens in zip(streams, results, strict=True):
        answer = stream.answer_states
        assert answer is not None and answer.token_ids == [t.token_id for t in tokens]
        hidden = lm.hidden_states(answer.prompt_ids + answer.token_ids)
        expected = torch.stack([hidden[layer][len(answer.prompt_ids) :] for layer in (1, 2)], dim=1)
        assert len(tokens) > 8 and len(answer.rows) == 8, "the states of the first 8 tokens only"
        assert torch.allclose(torch.from_numpy(np.stack(answer.rows)), expected[:8], atol=1e-4)
        assert np.allclose(answer.prompt_pooled, with_prompt(lm, kept(lm, PROMPT, "")).prompt_pooled, atol=1e-4)


@pytest.mark.parametrize("max_batch", [1, 4], ids=["alone", "batched"])
def test_the_monitor_keeps_the_prompts_states_when_it_reads_the_prompt_first(lm, max_batch):
    monitor = StreamMonitor(lm, random_probe([2]), chunk_tokens=3, max_batch=max_batch, max_wait_s=0.05)
    assert monitor.keep_answer_states(StatesWanted((2,), 0))
    prompts = [PROMPT, "How do vaccines work?"]
    streams = [monitor.start([{"role": "user", "content": prompt}], {}) for prompt in prompts]
    assert in_threads([stream.prefill for stream in streams]) == [None, None]
    for stream in streams:
        expected = with_prompt(lm, AnswerStates.start(lm, StatesWanted((2,), 0), stream.prompt_ids)).prompt_pooled
        assert stream.answer_states is not None and np.allclose(stream.answer_states.prompt_pooled, expected, atol=1e-4)
        tokens: list[MonitoredToken] = []
        read(stream, ANSWER, tokens)  # the answer after the prompt read: no states kept of it (0 wanted)
        assert stream.answer_states.rows == [] and len(stream.answer_states.token_ids) == len(tokens)
    assert monitor.active_streams == 0


class _ReadsLayerOne:
    """An exchange check that reads layer 1 of ``lm``'s states (only what the guard asks its source for matters)."""

    def __init__(self, lm: LoadedModel):
        self.lm = lm

    def wanted_states(self, lm: LoadedModel) -> StatesWanted | None:
        return StatesWanted((1,), 8) if lm is self.lm else None

    def score(self, prompt, response=None, answer_states=None):
        raise AssertionError("not called")


def test_a_source_that_cannot_keep_both_keeps_the_answers_states(lm, state_classifier):
    monitor = StreamMonitor(lm, random_probe([1]), chunk_tokens=3)  # its forward stops after layer 1
    source = RemoteSource(UpstreamSettings(base_url="http://127.0.0.1:9/v1", model="m"), monitor)
    guard = Guard(lm, monitor.probe, classifier=_ReadsLayerOne(lm), input_classifier=state_classifier, source=source)
    assert guard.shares_answer_states and not guard.shares_prompt_states and not guard.cascade.prompt_states
    assert monitor.kept_states == StatesWanted((1,), 8), "the input check's layer 2 is past the monitor's forward"


def test_the_prompt_is_read_while_the_input_check_runs(lm, monkeypatch):
    """``read_prompt`` sends the prompt's forward and returns; the states are waited for where they are read, and a
    failed read raises there (the input check then fails, and the stream is held)."""
    monitor = StreamMonitor(lm, random_probe([2]), chunk_tokens=3, max_batch=4, max_wait_s=0.0)
    assert monitor.keep_answer_states(StatesWanted((2,), 8))
    gate, run_jobs = threading.Event(), monitor.run_jobs

    def gated(jobs):
        assert gate.wait(10)
        run_jobs(jobs)

    monkeypatch.setattr(monitor, "run_jobs", gated)
    stream = monitor.start([{"role": "user", "content": PROMPT}], {})
    stream.read_prompt()  # returns although the forward waits at the gate
    assert stream.prompt_job is not None and not stream.prompt_job.done.is_set()
    gate.set()
    expected = with_prompt(lm, AnswerStates.start(lm, StatesWanted((2,), 0), stream.prompt_ids)).prompt_pooled
    assert stream.answer_states is not None and np.allclose(stream.answer_states.prompt_states(), expected, atol=1e-4)
    tokens: list[MonitoredToken] = []
    read(stream, ANSWER, tokens)
    assert len(stream.answer_states.rows) == 8

    def broken(jobs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(monitor, "run_jobs", broken)
    failing = monitor.start([{"role": "user", "content": PROMPT}], {})
    failing.read_prompt()
    with pytest.raises(RuntimeError, match="out of memory"):
        failing.answer_states.prompt_states()
    assert failing.cache is None, "a failed read leaves no cache a chunk could be read on from"
    failing.close()


def test_the_monitor_keeps_no_layer_its_forward_stops_before(lm, state_classifier):
    truncated = StreamMonitor(lm, random_probe([1]), chunk_tokens=3)
    assert truncated.truncated and not truncated.keep_answer_states(StatesWanted((1, 2), 8))
    assert truncated.kept_states is None
    monitor = StreamMonitor(lm, random_probe([2]), chunk_tokens=3)
    source = RemoteSource(UpstreamSettings(base_url="http://127.0.0.1:9/v1", model="m"), monitor)
    guard = Guard(lm, monitor.probe, classifier=state_classifier, source=source)
    assert guard.shares_answer_states and monitor.answer_layers == (1, 2)
    assert guard.shares_prompt_states and guard.cascade.prompt_states
    stream = source.open([{"role": "user", "content": PROMPT}], GenerationConfig(), {})
    assert stream.answer_states is not None and stream.answer_states.prompt_ids == monitor.lm.encode_messages(
        [{"role": "user", "content": PROMPT}])
    assert stream.read_prompt is not None
    stream.read_prompt()  # as before an input check: the prompt is read, nothing is sent upstream yet
    assert stream.answer_states.prompt_states() is not None and monitor.active_streams == 1
    stream.steps.close()  # an input block: the steps never ran, the monitor stream still ends
    assert monitor.active_streams == 0
