"""The guard in front of a real vLLM (CPU build) serving SmolLM2, with SmolLM2 as the stream monitor.

Marked ``engine``: ``make engine-test`` sets up vLLM in its own venv and runs these; without
``CGUARD_VLLM_PYTHON`` (that venv's python) they are skipped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from serve_fakes import quiet_probe, running_server
from tiny_models import DEVICE
from upstream_fakes import TokenIdProbe

from constitutional_guard.guard.events import GenerationConfig, GenerationStatus, TextReleased
from constitutional_guard.guard.guard import Guard
from constitutional_guard.guard.monitor import StreamMonitor
from constitutional_guard.guard.upstream import RemoteSource, UpstreamSettings
from constitutional_guard.models.loading import LoadedModel, load_causal_lm
from constitutional_guard.serve import ServeSettings, create_app

VLLM_PYTHON = os.environ.get("CGUARD_VLLM_PYTHON")
ENGINE_START_S = 900.0
SERVED_NAME = "smollm2"
PROMPT = "Explain in a few sentences how vaccines train the immune system."
MAX_TOKENS = 48

pytestmark = [pytest.mark.engine,
              pytest.mark.skipif(not VLLM_PYTHON, reason="needs CGUARD_VLLM_PYTHON (run `make engine-test`)")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def engine(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's OpenAI server on 127.0.0.1 serving SmolLM2; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    cmd = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2_dir),
           "--served-model-name", SERVED_NAME, "--dtype", "bfloat16", "--max-model-len", "2048",
           "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + ENGINE_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"vLLM exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not ready after {ENGINE_START_S:g}s:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def lm(smollm2_dir: Path) -> LoadedModel:
    return load_causal_lm(str(smollm2_dir), device=DEVICE, dtype="float32")


@pytest.fixture(scope="module")
def reference(engine: str) -> str:
    """The engine's own greedy answer, unguarded."""
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS,
            "temperature": 0.0}
    answer = httpx.post(f"{engine}/chat/completions", json=body, timeout=120).json()
    return answer["choices"][0]["message"]["content"]


def monitored_guard(lm: LoadedModel, engine: str, probe) -> Guard:
    source = RemoteSource(UpstreamSettings(base_url=engine, model=SERVED_NAME), StreamMonitor(lm, probe))
    return Guard(lm, probe, source=source)


def test_engine_answer_passes_through_the_monitor_unchanged(lm, engine, reference):
    guard = monitored_guard(lm, engine, quiet_probe(str(lm.path), 18, lm.hidden_size))
    result = guard.generate(PROMPT, GenerationConfig(max_new_tokens=MAX_TOKENS))
    assert result.status is GenerationStatus.COMPLETED
    assert result.response == reference
    assert len(result.trace) == len(lm.tokenizer(reference, add_special_tokens=False)["input_ids"])


def test_engine_zero_leak_at_a_flagged_token(lm, engine, reference):
    encoded = lm.tokenizer(reference, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    at = next(i for i in range(len(ids) // 2, len(ids)) if ids[i] not in ids[:i])
    probe = TokenIdProbe(lm.model.get_input_embeddings().weight, {ids[at]})
    events = list(monitored_guard(lm, engine, probe).stream(PROMPT, GenerationConfig(max_new_tokens=MAX_TOKENS)))
    assert events[-1].status is GenerationStatus.BLOCKED
    shown = "".join(e.text for e in events if isinstance(e, TextReleased) and not e.is_refusal)
    assert reference[: offsets[at][0]].startswith(shown)


def test_guarded_server_proxies_the_engine(lm, engine, reference):
    guard = monitored_guard(lm, engine, quiet_probe(str(lm.path), 18, lm.hidden_size))
    with running_server(create_app(guard, ServeSettings(auth=False))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list().data] == [SERVED_NAME]
        stream = client.chat.completions.create(model=SERVED_NAME, messages=[{"role": "user", "content": PROMPT}],
                                                max_tokens=MAX_TOKENS, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == reference
