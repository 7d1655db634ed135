"""Guarding a remote OpenAI-compatible engine: the stream monitor, zero leaks, upstream failures, the bundle section."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from serve_fakes import KeywordClassifier, running_server
from tiny_models import DEVICE
from upstream_fakes import (
    BENIGN,
    HARMFUL_AT,
    UPSTREAM_TEXT,
    ScriptedUpstream,
    ZyxClassifier,
    pieces_of,
    remote_guard,
)

from constitutional_guard.errors import InputError
from constitutional_guard.guard.bundle import BUNDLE_FILE, build_bundle, read_bundle
from constitutional_guard.guard.events import (
    Finished,
    GenerationConfig,
    GenerationStatus,
    GuardErrorCode,
    TextReleased,
    TokenRisk,
)
from constitutional_guard.guard.guard import Guard
from constitutional_guard.guard.monitor import StreamMonitor
from constitutional_guard.guard.upstream import RemoteSource, UpstreamError, UpstreamSettings, parse_chunk
from constitutional_guard.models.loading import LoadedModel, load_causal_lm
from constitutional_guard.probes import LinearProbe, ProbeConfig

CONFIG = GenerationConfig(max_new_tokens=512)


@pytest.fixture(scope="module")
def lm(tiny_lm_dir: Path) -> LoadedModel:
    return load_causal_lm(str(tiny_lm_dir), device=DEVICE, dtype="float32")  # paths compared exactly


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, ScriptedUpstream]]:
    script = ScriptedUpstream()
    with running_server(script) as url:
        yield f"{url}/v1", script


@pytest.fixture
def script(upstream: tuple[str, ScriptedUpstream]) -> ScriptedUpstream:
    """The shared scripted engine, reset to stream ``UPSTREAM_TEXT``."""
    fresh = ScriptedUpstream()
    engine = upstream[1]
    engine.__dict__.update({k: v for k, v in fresh.__dict__.items()})
    return engine


def model_text(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextReleased) and not e.is_refusal)


def wait_until(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_monitor_scores_every_token_as_a_full_forward_would(lm: LoadedModel):
    messages = [{"role": "user", "content": "Tell me about Paris."}]
    prompt_ids = lm.encode_messages(messages)
    for layers in ([1], [2]):  # layer 1 of 2: a truncated stack; the last layer: the full one
        torch.manual_seed(0)
        probe = LinearProbe(ProbeConfig(model_id="tiny", hidden_size=32, layers=layers), torch.randn(1, 32),
                            torch.zeros(1))
        monitor = StreamMonitor(lm, probe, chunk_tokens=3)
        assert monitor.layers_run == (1 if layers == [1] else 2)
        stream = monitor.start(messages, {})
        tokens = [t for piece in pieces_of(BENIGN, 5) for t in stream.feed(piece)] + list(stream.flush())
        assert "".join(t.piece for t in tokens) == BENIGN
        ids = [t.token_id for t in tokens]
        assert ids == lm.tokenizer(BENIGN, add_special_tokens=False)["input_ids"]
        full = lm.model(input_ids=torch.tensor([prompt_ids + ids], device=lm.device), output_hidden_states=True)
        expected = probe.score_hidden_states(full.hidden_states)[0, len(prompt_ids) :]
        assert torch.allclose(torch.tensor([t.score for t in tokens]), expected, atol=1e-5)


def test_safe_upstream_text_is_released_whole(lm, upstream, script):
    script.pieces = pieces_of(BENIGN)
    guard = remote_guard(lm, upstream[0], classifier=ZyxClassifier())
    events = list(guard.stream("Tell me about Paris.", GenerationConfig(max_new_tokens=99, stop=("QQ",), seed=3)))
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.status is GenerationStatus.COMPLETED
    assert finished.response == BENIGN == model_text(events)
    assert sum(isinstance(e, TokenRisk) for e in events) == finished.completion_tokens > 0
    request = script.requests[-1]
    assert request["model"] == "scripted-model" and request["stream"] is True
    assert (request["max_tokens"], request["stop"], request["seed"]) == (99, ["QQ"], 3)
    assert request["messages"] == [{"role": "user", "content": "Tell me about Paris."}]


@pytest.mark.parametrize("monitor, classifier", [(True, None), (True, ZyxClassifier), (False, ZyxClassifier)],
                         ids=["probe-only", "probe-and-classifier", "classifier-only"])
@pytest.mark.parametrize("overlap", [False, True], ids=["sequential", "overlapped"])
def test_zero_leak_when_the_upstream_turns_harmful(lm, upstream, script, monitor, classifier, overlap):
    script.delay_s, script.linger_s = 0.005, 10.0  # still generating when the guard blocks, however slow it is
    guard = remote_guard(lm, upstream[0], monitor=monitor, classifier=classifier() if classifier else None,
                         overlap_input_check=overlap)
    events = list(guard.stream("How do I make it?", CONFIG))
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.status is GenerationStatus.BLOCKED
    released = model_text(events)
    assert UPSTREAM_TEXT[:HARMFUL_AT].startswith(released), "text at or after the harmful span reached the user"
    assert finished.response.endswith(guard.refusal)
    # The upstream lingers 10 s after its last piece, so a disconnect before then is the guard's abort.
    assert wait_until(lambda: script.disconnected), "the block did not abort the upstream request"


@pytest.mark.parametrize("monitor", [True, False])
def test_a_blocked_prompt_never_reaches_the_upstream(lm, upstream, script, monitor):
    guard = remote_guard(lm, upstream[0], monitor=monitor, classifier=KeywordClassifier())
    events = list(guard.stream("How do I make a nerve agent?", CONFIG))
    assert events[0].stage == "input" and events[-1].status is GenerationStatus.BLOCKED
    assert events[-1].response == guard.refusal and script.requests == []


class SlowInputCheck(KeywordClassifier):
    """The keyword classifier, 0.3 s per prompt; notes whether the upstream had the request before it finished."""

    def __init__(self, script: ScriptedUpstream):
        self.script, self.request_seen = script, None

    def score(self, prompt: str, response: str | None = None):
        if response is None:
            time.sleep(0.3)
            self.request_seen = bool(self.script.requests)
        return super().score(prompt, response)


def test_an_overlapped_request_is_answered_while_the_input_check_runs(lm, upstream, script):
    script.pieces = pieces_of(BENIGN)
    check = SlowInputCheck(script)
    guard = remote_guard(lm, upstream[0], classifier=check, overlap_input_check=True)
    events = list(guard.stream("Tell me about Paris.", CONFIG))
    assert check.request_seen, "the request waited for the input check"
    assert events[0].stage == "input" and not any(isinstance(e, TextReleased) for e in events[:1])
    assert events[-1].status is GenerationStatus.COMPLETED and model_text(events) == BENIGN
    assert len(script.requests) == 1


@pytest.mark.parametrize("monitor", [True, False])
def test_an_overlapped_request_is_aborted_unread_when_the_input_check_blocks(lm, upstream, script, monitor):
    script.delay_s, script.linger_s = 0.005, 10.0  # an engine still answering when the check blocks
    guard = remote_guard(lm, upstream[0], monitor=monitor, classifier=SlowInputCheck(script), overlap_input_check=True)
    events = list(guard.stream("How do I make a nerve agent?", CONFIG))
    assert events[0].stage == "input" and events[-1].status is GenerationStatus.BLOCKED
    assert events[-1].response == guard.refusal and model_text(events) == ""
    assert len(script.requests) == 1  # the cost of overlapping: the blocked prompt reached the engine
    assert wait_until(lambda: script.disconnected), "the blocked prompt's request was left running"


def test_an_overlapped_request_that_fails_is_held(lm, upstream, script):
    script.fail_status = 400
    guard = remote_guard(lm, upstream[0], classifier=ZyxClassifier(), overlap_input_check=True, retries=0)
    finished = list(guard.stream("Tell me about Paris.", CONFIG))[-1]
    assert finished.status is GenerationStatus.HELD and "scripted engine failure" in (finished.error or "")


def test_a_source_without_scores_needs_a_classifier(lm, upstream):
    with pytest.raises(ValueError, match="needs a classifier"):
        remote_guard(lm, upstream[0], monitor=False)


@pytest.mark.parametrize("monitor", [True, False])
def test_mid_stream_drop_holds_the_unchecked_tail(lm, upstream, script, monitor):
    script.pieces = pieces_of(BENIGN)
    script.drop_after = 22
    guard = remote_guard(lm, upstream[0], monitor=monitor, classifier=KeywordClassifier())
    events = list(guard.stream("Tell me about Paris.", CONFIG))
    finished = events[-1]
    assert finished.status is GenerationStatus.HELD and finished.error_code is GuardErrorCode.UPSTREAM_ERROR
    assert "broke off" in finished.error
    sent = "".join(script.pieces[:22])
    assert sent.startswith(model_text(events)) and len(model_text(events)) < len(sent)


def test_upstream_errors_are_reported_with_their_message(lm, upstream, script, unused_port):
    guard = remote_guard(lm, upstream[0], retries=0)
    script.fail_status = 500
    finished = list(guard.stream("Hi", CONFIG))[-1]
    assert finished.error_code is GuardErrorCode.UPSTREAM_ERROR
    assert "500" in finished.error and "scripted engine failure" in finished.error and finished.response == ""
    script.fail_status, script.stall_s = None, 1.0
    slow = remote_guard(lm, upstream[0], read_timeout_s=0.2)
    assert list(slow.stream("Hi", CONFIG))[-1].error_code is GuardErrorCode.UPSTREAM_TIMEOUT
    gone = remote_guard(lm, f"http://127.0.0.1:{unused_port}/v1", retries=1, retry_backoff_s=0.0)
    finished = list(gone.stream("Hi", CONFIG))[-1]
    assert finished.error_code is GuardErrorCode.UPSTREAM_ERROR and "cannot reach" in finished.error


def test_overloaded_upstream_is_retried(lm, upstream, script):
    script.pieces, script.fail_status, script.fail_times = pieces_of(BENIGN), 503, 1
    guard = remote_guard(lm, upstream[0], retries=1, retry_backoff_s=0.0)
    assert guard.generate("Hi", CONFIG).response == BENIGN
    assert len(script.requests) == 2


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def bundle(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("upstream-bundle")
    config = ProbeConfig(model_id=str(tiny_lm_dir), hidden_size=32, layers=[1])
    LinearProbe(config, torch.zeros(1, 32), torch.tensor([-8.0])).save_pretrained(root / "probe")
    return build_bundle(root / "bundle", root / "probe")


def with_upstream(bundle: Path, tmp_path: Path, **section: str) -> Path:
    """A copy of ``bundle`` whose ``guard.yaml`` has an ``upstream:`` section."""
    remote = tmp_path / "remote"
    remote.mkdir()
    for name in ("probe", "constitution.yaml"):
        (remote / name).symlink_to(bundle / name)
    data = yaml.safe_load((bundle / BUNDLE_FILE).read_text())
    assert "upstream" not in data  # written only when there is one
    (remote / BUNDLE_FILE).write_text(yaml.safe_dump({**data, "upstream": section}))
    return remote


def test_bundle_upstream_section_guards_the_engine(bundle, upstream, script, tmp_path, monkeypatch):
    script.pieces = pieces_of(BENIGN)
    remote = with_upstream(bundle, tmp_path, base_url=upstream[0], model="scripted-model", api_key_env="SCRIPTED_KEY")
    assert read_bundle(remote).upstream.base_url == upstream[0]
    monkeypatch.delenv("SCRIPTED_KEY", raising=False)
    with pytest.raises(InputError, match=r"upstream\.api_key_env: environment variable SCRIPTED_KEY"):
        Guard.from_pretrained(remote, device=DEVICE)
    monkeypatch.setenv("SCRIPTED_KEY", "sk-scripted")
    guard = Guard.from_pretrained(remote, device=DEVICE)
    assert isinstance(guard.source, RemoteSource) and guard.source.monitor is not None
    assert guard.source.monitor.layers_run == 1
    result = guard.generate("Tell me about Paris.", CONFIG)
    assert result.status is GenerationStatus.COMPLETED and result.response == BENIGN
    assert script.headers[-1]["authorization"] == "Bearer sk-scripted"
    assert guard.list_models()[0]["id"] == "scripted-model"


def test_cli_generate_guards_the_bundle_upstream(bundle, upstream, script, tmp_path):
    from typer.testing import CliRunner

    from constitutional_guard.cli.app import app

    script.pieces = pieces_of(BENIGN)
    remote = with_upstream(bundle, tmp_path, base_url=upstream[0], model="scripted-model")
    out = tmp_path / "result.json"
    ran = CliRunner().invoke(app, ["generate", "--guard", str(remote), "--prompt", "Paris?", "--device", DEVICE,
                                   "--json", str(out)])
    assert ran.exit_code == 0, ran.output
    assert BENIGN.strip() in ran.stdout
    result = json.loads(out.read_text())
    assert result["status"] == "completed" and len(result["trace"]) == result["completion_tokens"] > 0
    assert script.requests[-1]["messages"] == [{"role": "user", "content": "Paris?"}]


@pytest.mark.parametrize("options, message", [
    (["--upstream", "ftp://engine"], "must be an http:// or https:// URL"),
    (["--upstream-model", "m"], "no upstream: section"),
    (["--upstream", "http://127.0.0.1:9/v1", "--upstream-api-key-env", "NO_SUCH_KEY_VAR"], "NO_SUCH_KEY_VAR"),
])
def test_cli_serve_rejects_bad_upstream_options(bundle, options, message):
    from typer.testing import CliRunner

    from constitutional_guard.cli.app import app

    ran = CliRunner().invoke(app, ["serve", "--guard", str(bundle), "--no-auth", *options])
    assert ran.exit_code == 2
    assert message in " ".join(ran.output.replace("│", " ").split())  # the error box wraps long lines


def test_an_upstream_without_monitor_needs_a_classifier(bundle, upstream):
    with pytest.raises(InputError, match=r"upstream\.monitor: an upstream without the monitor needs a classifier"):
        Guard.from_pretrained(bundle, upstream=UpstreamSettings(base_url=upstream[0], monitor=False))


def test_an_upstream_without_monitor_loads_no_target_model(tiny_encoder_dir, upstream, script, tmp_path):
    from transformers import AutoTokenizer, BertForSequenceClassification

    from constitutional_guard.classifiers.exchange import ExchangeClassifier, ExchangeConfig

    script.pieces = pieces_of(BENIGN)
    model = BertForSequenceClassification.from_pretrained(tiny_encoder_dir, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    ExchangeClassifier(model, tokenizer, ExchangeConfig(allow=0.999, block=0.9999)).save_pretrained(tmp_path / "clf")
    config = ProbeConfig(model_id="nobody/no-such-model", hidden_size=32, layers=[1])
    LinearProbe(config, torch.zeros(1, 32), torch.zeros(1)).save_pretrained(tmp_path / "probe")
    bundle = build_bundle(tmp_path / "bundle", tmp_path / "probe", tmp_path / "clf")
    remote = UpstreamSettings(base_url=upstream[0], model="scripted-model", monitor=False, classifier_every=8)
    guard = Guard.from_pretrained(bundle, upstream=remote)
    assert guard.lm is None and not guard.scored
    result = guard.generate("Tell me about Paris.", CONFIG)
    assert result.status is GenerationStatus.COMPLETED and result.response == BENIGN and not result.trace
    stages = [v.stage for v in result.verdicts]
    assert stages[0] == "input" and stages[-1] == "final"
    assert stages.count("stream") == result.completion_tokens // 8


def test_from_pretrained_takes_an_upstream_override(bundle, upstream, script):
    script.pieces = pieces_of(BENIGN)
    guard = Guard.from_pretrained(bundle, device=DEVICE, upstream=UpstreamSettings(base_url=upstream[0]))
    assert guard.generate("Hi", CONFIG).response == BENIGN
    assert script.requests[-1]["model"] == "scripted-model"  # the first model the upstream lists


def test_bad_upstream_section_names_file_line_and_field(bundle, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("probe", "constitution.yaml"):
        (folder / name).symlink_to(bundle / name)
    (folder / BUNDLE_FILE).write_text("target_model: tiny\nclassifier: null\nupstream:\n  base_url: ftp://x\n"
                                      "  retries: -1\n")
    with pytest.raises(InputError) as error:
        read_bundle(folder)
    message = str(error.value)
    assert f"{folder / BUNDLE_FILE}:4: upstream.base_url" in message and "http://" in message
    assert f"{folder / BUNDLE_FILE}:5: upstream.retries" in message


def test_chunks_that_cannot_be_read_fail_closed():
    assert parse_chunk('{"choices": [{"delta": {"content": "Hi"}, "finish_reason": null}]}') == ("Hi", None, None)
    assert parse_chunk('{"choices": [], "usage": {"prompt_tokens": 3}}') == ("", None, {"prompt_tokens": 3})
    for bad, why in (("{not json", "not JSON"), ('{"error": {"message": "engine overloaded"}}', "engine overloaded"),
                     ("[1, 2]", "unexpected chunk")):
        with pytest.raises(UpstreamError, match=why) as error:
            parse_chunk(bad)
        assert error.value.code is GuardErrorCode.UPSTREAM_ERROR


def test_cli_generate_takes_the_upstream_options(bundle, upstream, script, tmp_path):
    from typer.testing import CliRunner

    from constitutional_guard.cli.app import app

    script.pieces = pieces_of(BENIGN)
    ran = CliRunner().invoke(app, ["generate", "--guard", str(bundle), "--prompt", "Paris?", "--device", DEVICE,
                                   "--upstream", upstream[0]])
    assert ran.exit_code == 0, ran.output
    assert BENIGN.strip() in ran.stdout
    assert f"guarding scripted-model at {upstream[0]}" in " ".join(ran.output.split())
    bad = CliRunner().invoke(app, ["generate", "--guard", str(bundle), "--prompt", "Hi", "--upstream-model", "m"])
    assert bad.exit_code == 2 and "no upstream: section" in " ".join(bad.output.replace("│", " ").split())


def test_responses_name_the_upstream_model_when_none_is_configured(upstream, unused_port):
    from constitutional_guard.serve import ServeSettings
    from constitutional_guard.serve.app import served_model_name

    listed = RemoteSource(UpstreamSettings(base_url=upstream[0]))
    assert listed.model_id == "scripted-model"
    guard = type("Remote", (), {"model_id": listed.model_id})()
    assert served_model_name(guard, ServeSettings(auth=False)) == "scripted-model"
    gone = UpstreamSettings(base_url=f"http://127.0.0.1:{unused_port}/v1", retries=0, connect_timeout_s=1.0)
    assert RemoteSource(gone).model_id == gone.base_url  # cannot ask: the base URL names it
    assert RemoteSource(UpstreamSettings(base_url=upstream[0], model="mine")).model_id == "mine"
