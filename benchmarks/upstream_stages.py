"""Where a guarded request's time goes in front of an upstream engine, at each concurrency.

Runs ``cguard bench upstream``'s waves (raw and guarded, the guarded server in this process) and records, per
guarded request, the guard's own stage timings: the input check, the classifier checks, the waits on the stream
monitor, the upstream's stream, the first released text and the whole request. Reports their p50 / p95 beside the
wave's throughput ratio and the requests' statuses (a check that fails ends its request ``held``).

    OMP_NUM_THREADS=1 python benchmarks/upstream_stages.py --guard BUNDLE --upstream http://127.0.0.1:8011/v1 \\
        --concurrency 1,4,16 --out upstream_stages.json
"""

from __future__ import annotations

import argparse
import json
import threading
from typing import Any

from constitutional_guard.evaluation.bench_upstream import UpstreamBenchOptions, bench_upstream, percentile
from constitutional_guard.guard.guard import Guard
from constitutional_guard.guard.upstream import UpstreamSettings

STAGES = ("input_check", "classifier", "monitor", "generation", "first_release", "total")


def record_timings(guard: Guard) -> list[dict[str, float]]:
    """Every stream the guard opens from now on fills one dict of the returned list with its stage timings."""
    records: list[dict[str, float]] = []
    lock = threading.Lock()
    stream = guard.stream

    def timed(messages: Any, config: Any = None, timings: dict[str, float] | None = None) -> Any:
        timings = {} if timings is None else timings
        with lock:
            records.append(timings)
        return stream(messages, config, timings)

    guard.stream = timed  # type: ignore[method-assign]
    return records


def summary(records: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": len(records)}
    for stage in STAGES:
        values = [r[stage] * 1000 for r in records if stage in r]
        if values:
            out[stage] = {f"p{q}_ms": round(percentile(values, q), 1) for q in (50, 95)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guard", required=True, help="Guard bundle directory.")
    parser.add_argument("--upstream", required=True, help="OpenAI-compatible base URL.")
    parser.add_argument("--concurrency", default="1,4,16", help="Comma-separated numbers of concurrent streams.")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests-per-stream", type=int, default=2)
    parser.add_argument("--out", default="upstream_stages.json")
    args = parser.parse_args()

    guard = Guard.from_pretrained(args.guard, upstream=UpstreamSettings(base_url=args.upstream))
    records = record_timings(guard)
    rows = []
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        options = UpstreamBenchOptions(concurrencies=(concurrency,), max_tokens=args.max_tokens,
                                       requests_per_stream=args.requests_per_stream, harmful_prompts=())
        start = len(records)
        report = bench_upstream(guard, options)
        row = report["results"][0]
        guarded = records[start + 1 :]  # the first is the guarded path's warm-up request
        rows.append({
            "concurrency": concurrency,
            "raw_tokens_per_s": row["raw"]["tokens_per_s"],
            "guarded_tokens_per_s": row["guarded"]["tokens_per_s"],
            "throughput_ratio": row["throughput_ratio"],
            "ttft_p50_extra_ms": row["ttft_p50_extra_ms"],
            "statuses": row["guarded"]["statuses"],
            "load_average_before": report["machine"]["load_average_before"],
            "stages": summary(guarded),
        })
        stages = rows[-1]["stages"]
        print(f"{concurrency:3d} streams: {row['raw']['tokens_per_s']} / {row['guarded']['tokens_per_s']} tok/s raw / "
              f"guarded, ratio {row['throughput_ratio']}, statuses {row['guarded']['statuses']}, "
              + ", ".join(f"{s} {stages[s]['p50_ms']:.0f} ms" for s in STAGES if s in stages))
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump({"guard": args.guard, "upstream": args.upstream, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
