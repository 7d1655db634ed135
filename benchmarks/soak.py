"""Soak test of the guarded server: many concurrent streaming clients for minutes, some hanging up mid-stream.

Serves the real ``Guard`` on the tiny random model with the stand-in checks of ``scripted_guard.py`` in this
process, on a free port of 127.0.0.1 only. Each client streams completions back to back until the time is up;
a share of the prompts is harmful (must end in ``content_filter``) and a share of the streams is dropped by
the client after a few chunks. Reports errors (a client's own disconnect is not one), requests completed,
RSS over the run and the server's in-flight gauges once the load stops, as JSON; exits 1 on any error (a
generation the server counts as ``failed`` included), on gauges that do not return to 0, or on RSS growth
beyond ``--max-rss-growth``.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/soak.py --seconds 300 --out /tmp/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_models: test support
from load_test import HARMFUL_PROMPTS, SAFE_PROMPTS, rss_mb, serve_in_thread, server_metrics
from scripted_guard import scripted_guard
from tiny_models import build_tiny_causal_lm

from constitutional_guard.atomic import write_text_atomic
from constitutional_guard.serve import ServeSettings, create_app


@dataclass
class Tally:
    """What the clients saw, summed over all of them."""

    completed: int = 0
    disconnected: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    finish_reasons: Counter = field(default_factory=Counter)
    completion_tokens: int = 0

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(message)


async def one_stream(http: httpx.AsyncClient, tally: Tally, rng: random.Random, args: argparse.Namespace) -> None:
    """One streamed completion: read it to ``[DONE]`` and check its outcome, or hang up after a few chunks."""
    harmful = rng.random() < args.harmful_share
    prompt = rng.choice(HARMFUL_PROMPTS if harmful else SAFE_PROMPTS)
    hang_up_after = rng.randint(1, 4) if rng.random() < args.disconnect_share else None
    body = {"model": "guarded", "messages": [{"role": "user", "content": prompt}], "stream": True,
            "max_tokens": args.max_tokens, "stream_options": {"include_usage": True}}
    finish = None
    done = False
    chunks = 0
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                tally.error(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[len("data: "):])
                if "error" in chunk:
                    tally.error(f"error chunk: {chunk['error']}")
                    return
                chunks += 1
                for choice in chunk.get("choices", []):
                    finish = choice.get("finish_reason") or finish
                if chunk.get("usage"):
                    tally.completion_tokens += chunk["usage"]["completion_tokens"]
                if hang_up_after is not None and chunks >= hang_up_after:
                    tally.disconnected += 1
                    return  # leaving the block closes the connection mid-stream
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        tally.error(f"{type(exc).__name__}: {exc}")
        return
    if not done or finish is None:
        tally.error(f"stream ended without a finish and [DONE] (finish={finish!r}, done={done})")
    elif (finish == "content_filter") != harmful:
        tally.error(f"unexpected finish_reason {finish!r} (harmful={harmful})")
    else:
        tally.completed += 1
        tally.finish_reasons[finish] += 1


async def soak(base_url: str, key: str, args: argparse.Namespace, tally: Tally) -> None:
    """``args.clients`` clients streaming back to back until ``args.seconds`` have passed."""
    deadline = time.monotonic() + args.seconds
    limits = httpx.Limits(max_connections=args.clients * 2, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=httpx.Timeout(args.request_timeout)) as http:

        async def client(i: int) -> None:
            rng = random.Random(args.seed * 1000 + i)
            while time.monotonic() < deadline:
                await one_stream(http, tally, rng, args)

        await asyncio.gather(*(client(i) for i in range(args.clients)))


def sample_rss(samples: list[tuple[float, float | None]], start: float, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        samples.append((round(time.monotonic() - start, 1), rss_mb()))


def settled_gauges(base_url: str, key: str, wait_s: float) -> tuple[dict[str, float], float]:
    """The in-flight gauges once they read 0 (or after ``wait_s``), and how long that took."""
    start = time.monotonic()
    while True:
        gauges = server_metrics(base_url, key)
        idle = gauges.get("cguard_running") == 0 and gauges.get("cguard_queued") == 0
        if idle or time.monotonic() - start > wait_s:
            return gauges, time.monotonic() - start
        time.sleep(0.2)


def generations_by_status(base_url: str, key: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    prefix = 'cguard_generations_total{status="'
    return {line[len(prefix):].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(prefix)}


async def warm_up(base_url: str, key: str, args: argparse.Namespace, tally: Tally) -> None:
    """One safe and one harmful stream read to the end, before the clock starts."""
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=httpx.Timeout(args.request_timeout)) as http:
        for share in (0.0, 1.0):
            settings = argparse.Namespace(**{**vars(args), "disconnect_share": 0.0, "harmful_share": share})
            await one_stream(http, tally, random.Random(0), settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="How long the clients keep streaming.")
    parser.add_argument("--clients", type=int, default=32, help="Concurrent streaming clients (≤ 256).")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--harmful-share", type=float, default=0.125, help="Share of harmful prompts.")
    parser.add_argument("--disconnect-share", type=float, default=0.2,
                        help="Share of streams the client drops after 1 to 4 chunks.")
    parser.add_argument("--max-concurrent", type=int, default=2, help="Server worker threads.")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="Per-request limit, seconds.")
    parser.add_argument("--rss-every", type=float, default=30.0, help="Seconds between RSS samples.")
    parser.add_argument("--max-rss-growth", type=float, default=10.0, help="Largest acceptable RSS growth, %%.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="Also write the JSON report here.")
    args = parser.parse_args()
    if not (0 < args.clients <= 256 and 0 < args.seconds <= 3600):
        parser.error("keep the load bounded: clients ≤ 256, seconds ≤ 3600")

    key = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory() as tmp:
        guard = scripted_guard(str(build_tiny_causal_lm(Path(tmp) / "tiny-lm")))
    settings = ServeSettings(api_keys=(key,), max_concurrent=args.max_concurrent, max_queued=args.clients * 2,
                             request_timeout_s=args.request_timeout, max_tokens=args.max_tokens,
                             default_max_tokens=args.max_tokens)
    app = create_app(guard, settings)
    base, stop_server = serve_in_thread(app)
    tally, samples, stop_sampling = Tally(), [], threading.Event()
    try:
        warm = Tally()
        asyncio.run(warm_up(base, key, args, warm))
        if warm.errors:
            raise SystemExit(f"warm-up failed: {warm.error_samples}")
        rss_start, threads_start, start = rss_mb(), threading.active_count(), time.monotonic()
        sampler = threading.Thread(target=sample_rss, args=(samples, start, stop_sampling, args.rss_every),
                                   daemon=True)
        sampler.start()
        asyncio.run(soak(base, key, args, tally))
        wall_s = time.monotonic() - start
        stop_sampling.set()
        gauges, settle_s = settled_gauges(base, key, wait_s=30.0)
        generations = generations_by_status(base, key)
        rss_end, threads_end = rss_mb(), threading.active_count()
        worker = app.state.worker
        app_state = {"running": worker.running, "queued": worker.queued}
    finally:
        stop_sampling.set()
        stop_server()
    growth = 100.0 * (rss_end - rss_start) / rss_start if rss_start and rss_end else None
    report = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "load_average_1m_after": os.getloadavg()[0]},
        "wall_s": round(wall_s, 1),
        "requests_completed": tally.completed,
        "client_disconnects": tally.disconnected,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "finish_reasons": dict(tally.finish_reasons),
        "completion_tokens": tally.completion_tokens,
        "requests_per_s": round((tally.completed + tally.disconnected) / wall_s, 2),
        "server_generations": generations,
        "rss_mb": {"start": rss_start, "end": rss_end, "growth_pct": growth, "samples": samples},
        "threads": {"start": threads_start, "end": threads_end},
        "gauges_after": {**gauges, "settled_in_s": round(settle_s, 2), "app_state": app_state},
    }
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, text + "\n")
    idle = gauges.get("cguard_running") == 0 and gauges.get("cguard_queued") == 0 and app_state == {
        "running": 0, "queued": 0}
    if tally.errors or generations.get("failed") or not idle or growth is None or growth > args.max_rss_growth:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
