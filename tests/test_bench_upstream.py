"""``cguard bench upstream`` against a scripted OpenAI-compatible engine: raw and guarded side by side."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from serve_fakes import running_server
from tiny_models import DEVICE
from upstream_fakes import BENIGN, UPSTREAM_TEXT, ScriptedUpstream, ZyxClassifier, pieces_of, remote_guard

from constitutional_guard.evaluation.bench_upstream import (
    StreamOutcome,
    UpstreamBenchOptions,
    bench_upstream,
    percentile,
    summarize_wave,
)
from constitutional_guard.guard.bundle import build_bundle
from constitutional_guard.models.loading import LoadedModel, load_causal_lm
from constitutional_guard.probes import LinearProbe, ProbeConfig

HARMFUL_PROMPT = "HARMFUL: tell me the ZYX recipe."
OPTIONS = UpstreamBenchOptions(concurrencies=(1, 3), max_tokens=64, prompts=("Tell me about Paris.",),
                               harmful_prompts=(HARMFUL_PROMPT,), harmful_marker="ZYX", timeout_s=60)


def answer(body: dict) -> list[str]:
    """Benign text for benign prompts; text that turns harmful at ``ZYX`` for harmful ones."""
    return pieces_of(UPSTREAM_TEXT if body["messages"][-1]["content"].startswith("HARMFUL") else BENIGN)


@pytest.fixture(scope="module")
def lm(tiny_lm_dir: Path) -> LoadedModel:
    return load_causal_lm(str(tiny_lm_dir), device=DEVICE)


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[str, ScriptedUpstream]]:
    script = ScriptedUpstream(script=answer, delay_s=0.001)
    with running_server(script) as url:
        yield f"{url}/v1", script


@pytest.mark.parametrize("monitor", [True, False], ids=["monitor", "classifier-only"])
def test_raw_and_guarded_side_by_side(lm, engine, monitor):
    guard = remote_guard(lm, engine[0], monitor=monitor, classifier=ZyxClassifier(), retries=0)
    report = bench_upstream(guard, OPTIONS)
    assert [row["concurrency"] for row in report["results"]] == [1, 3]
    assert report["model"] == "scripted-model" and report["upstream"] == engine[0]
    for row in report["results"]:
        raw, guarded = row["raw"], row["guarded"]
        for side in (raw, guarded):
            assert side["streams"] == row["concurrency"] and side["errors"] == 0
            assert side["tokens_per_s"] > 0 and side["ttft_ms_p50"] is not None
            assert side["ttft_ms_p95"] >= side["ttft_ms_p50"]
        assert raw["completion_tokens"] == row["concurrency"] * len(pieces_of(BENIGN))  # the engine's usage
        assert guarded["statuses"] == {"completed": row["concurrency"]}
        assert guarded["classifier_calls_per_stream"] >= 1  # the final check at least
        assert guarded["input_checks_per_stream"] == 1
        assert row["throughput_ratio"] == pytest.approx(guarded["tokens_per_s"] / raw["tokens_per_s"], abs=1e-3)
        assert "classifier_calls_per_stream" not in raw
        if monitor:
            assert guarded["monitor_forwards_per_stream"] > 0
        else:
            assert "monitor_forwards_per_stream" not in guarded
    assert report["guard"]["monitor"] is monitor
    assert report["machine"]["load_average_before"] and report["machine"]["cpu_count"]
    detection = report["detection"]
    assert detection["statuses"] == {"blocked": 1} and detection["leaked_chars_total"] == 0
    item = detection["items"][0]
    assert item["harmful_token"] is not None and 0 <= item["detection_tokens"] <= 8
    assert item["released_chars"] <= UPSTREAM_TEXT.index("ZYX")
    assert guard.source.monitor is None or "hidden_states" not in vars(guard.source.monitor)  # unwrapped again
    json.dumps(report)  # serialisable as it is


def test_detection_without_a_marker_counts_from_the_first_token(lm, engine):
    guard = remote_guard(lm, engine[0], classifier=ZyxClassifier(), retries=0)
    options = UpstreamBenchOptions(concurrencies=(1,), max_tokens=64, prompts=("Hi",), harmful_prompts=(
        HARMFUL_PROMPT, "Tell me about Paris."))
    detection = bench_upstream(guard, options)["detection"]
    assert detection["statuses"] == {"blocked": 1, "completed": 1} and detection["leaked_chars_total"] is None
    blocked, completed = detection["items"]
    assert blocked["harmful_token"] == 0 and blocked["detection_tokens"] == blocked["tokens_read"] - 1
    assert "detection_tokens" not in completed


def test_wave_summary_and_percentiles():
    assert percentile([], 50) is None and percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([1, 9], 95) == 9
    guard = {"status": "completed", "verdicts": [{"stage": "input"}, {"stage": "stream"}, {"stage": "final"}]}
    failed = {"status": "held", "verdicts": [], "error": {"code": "classifier_failed", "message": "x"}}
    outcomes = [StreamOutcome(True, 1.0, 0.1, "a", 10, "stop", guard), StreamOutcome(False, 2.0, error="HTTP 502"),
                StreamOutcome(True, 1.0, None, "", 0, "content_filter", failed)]
    row = summarize_wave(outcomes, 2.0, monitor_forwards=9)
    assert row["errors"] == 1 and row["completion_tokens"] == 10 and row["tokens_per_s"] == 5.0
    assert row["first_error"] == "HTTP 502" and row["ttft_ms_p50"] == 100.0
    assert row["classifier_calls_per_stream"] == 1 and row["input_checks_per_stream"] == 0.5
    assert row["monitor_forwards_per_stream"] == 3.0
    assert row["statuses"] == {"completed": 1, "held": 1} and row["guard_errors"] == {"classifier_failed": 1}


def test_rounds_are_averaged_and_counts_summed(lm, engine):
    guard = remote_guard(lm, engine[0], classifier=ZyxClassifier(), retries=0)
    options = UpstreamBenchOptions(concurrencies=(2,), max_tokens=64, prompts=("Hi",), harmful_prompts=(),
                                   requests_per_stream=2, rounds=2)
    report = bench_upstream(guard, options)
    assert report["detection"] is None
    guarded = report["results"][0]["guarded"]
    assert guarded["streams"] == 8 and guarded["statuses"] == {"completed": 8} and len(guarded["rounds"]) == 2
    rates = [r["tokens_per_s"] for r in guarded["rounds"]]
    assert guarded["tokens_per_s"] == pytest.approx(sum(rates) / 2, abs=0.01)


@pytest.mark.parametrize("unique", [True, False], ids=["unique", "repeated"])
def test_every_request_asks_a_new_prompt_unless_told_to_repeat(lm, engine, unique):
    guard = remote_guard(lm, engine[0], classifier=ZyxClassifier(), retries=0)
    options = UpstreamBenchOptions(concurrencies=(1, 2), max_tokens=64, prompts=("Hi", "Hello"), harmful_prompts=(),
                                   requests_per_stream=2, rounds=2, unique_prompts=unique)
    seen = len(engine[1].requests)
    report = bench_upstream(guard, options)
    assert report["options"]["unique_prompts"] is unique
    sent = engine[1].requests[seen:]
    guarded = [r["messages"][-1]["content"] for r in sent if "top_p" in r][1:]  # the guard's requests, warm-up apart
    raw = [r["messages"][-1]["content"] for r in sent if "top_p" not in r][1:]
    assert len(guarded) == len(raw) == 12 and sorted(guarded) == sorted(raw)
    assert {p.split(") ")[-1] for p in guarded} == {"Hi", "Hello"}
    assert len(set(guarded)) == (12 if unique else 2)


def test_bad_options_are_refused():
    for bad in ({"concurrencies": ()}, {"concurrencies": (0,)}, {"max_tokens": 0}, {"prompts": ()}):
        with pytest.raises(ValueError):
            UpstreamBenchOptions(**bad)


def test_cli_writes_the_report(tiny_lm_dir, engine, tmp_path):
    from typer.testing import CliRunner

    from constitutional_guard.cli.app import app

    config = ProbeConfig(model_id=str(tiny_lm_dir), hidden_size=32, layers=[1])
    LinearProbe(config, torch.zeros(1, 32), torch.tensor([-8.0])).save_pretrained(tmp_path / "probe")
    bundle = build_bundle(tmp_path / "bundle", tmp_path / "probe")
    out = tmp_path / "bench.json"
    ran = CliRunner().invoke(app, ["bench", "upstream", "--guard", str(bundle), "--upstream", engine[0],
                                   "--concurrency", "2", "--max-tokens", "32", "--num-harmful", "1",
                                   "--monitor-chunk-tokens", "4", "--device", DEVICE, "--out", str(out)])
    assert ran.exit_code == 0, ran.output
    report = json.loads(out.read_text())
    assert [row["concurrency"] for row in report["results"]] == [2]
    assert report["guard"]["bundle"] == str(bundle) and report["model"] == "scripted-model"
    assert report["detection"]["prompts"] == 1 and report["guard"]["monitor_chunk_tokens"] == 4
    assert "2 streams: raw" in ran.stdout


def test_cli_needs_an_upstream(tiny_lm_dir, tmp_path):
    from typer.testing import CliRunner

    from constitutional_guard.cli.app import app

    config = ProbeConfig(model_id=str(tiny_lm_dir), hidden_size=32, layers=[1])
    LinearProbe(config, torch.zeros(1, 32), torch.tensor([-8.0])).save_pretrained(tmp_path / "probe")
    bundle = build_bundle(tmp_path / "bundle", tmp_path / "probe")
    ran = CliRunner().invoke(app, ["bench", "upstream", "--guard", str(bundle)])
    assert ran.exit_code == 2 and "no upstream: section" in " ".join(ran.output.replace("│", " ").split())
