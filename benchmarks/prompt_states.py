"""The input check in front of a remote engine: reading the prompt's states itself, or taking the stream monitor's.

For each of ``--prompts`` new prompts (numbered, so no check has read them before), one after another in this
process: (a) the bundle's input check alone, reading the target's states of the prompt itself (what it did before
the monitor's were shared); (b) the monitor's read of the prompt, then the check with its states (one after the
other); (c) the monitor's read sent first and the check's encoder running meanwhile, as the guard runs them now.
Reports the median milliseconds of each (the first two prompts are warm-up) and the largest score difference
against (a). No engine is contacted: only the monitor and the check run.

    OMP_NUM_THREADS=1 python benchmarks/prompt_states.py --guard BUNDLE --out prompt_states.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from constitutional_guard.classifiers.lm_states import forget_recent_prompts
from constitutional_guard.guard.guard import Guard
from constitutional_guard.guard.upstream import UpstreamSettings

PROMPT = "Question {}: how do vaccines work, and why do adults need boosters every few years?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guard", required=True, help="Guard bundle whose input check reads the target's states.")
    parser.add_argument("--prompts", type=int, default=14)
    parser.add_argument("--threads", type=int, default=1, help="Torch threads.")
    parser.add_argument("--out", default="prompt_states.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    guard = Guard.from_pretrained(args.guard, upstream=UpstreamSettings(base_url="http://127.0.0.1:9/v1"))
    monitor, check = guard.source.monitor, guard.input_classifier
    if monitor is None or check is None or not guard.shares_prompt_states:
        raise SystemExit("this bundle's input check reads no states its stream monitor keeps")
    ms: dict[str, list[float]] = {"check_reads_itself": [], "monitor_then_check": [], "monitor_read": [],
                                  "check_with_states": [], "overlapped": []}
    diffs = []
    for i in range(args.prompts):
        prompt = PROMPT.format(i)
        messages = [{"role": "user", "content": prompt}]
        forget_recent_prompts()
        tick = time.perf_counter()
        alone = check.score(prompt).score
        ms["check_reads_itself"].append(time.perf_counter() - tick)

        forget_recent_prompts()
        stream = monitor.start(messages, {})
        tick = time.perf_counter()
        stream.prefill()
        read = time.perf_counter()
        shared = check.score(prompt, None, answer_states=stream.answer_states).score
        done = time.perf_counter()
        stream.close()
        ms["monitor_then_check"].append(done - tick)
        ms["monitor_read"].append(read - tick)
        ms["check_with_states"].append(done - read)

        forget_recent_prompts()
        stream = monitor.start(messages, {})
        tick = time.perf_counter()
        stream.read_prompt()
        overlapped = check.score(prompt, None, answer_states=stream.answer_states).score
        ms["overlapped"].append(time.perf_counter() - tick)
        stream.close()
        diffs.append(max(abs(shared - alone), abs(overlapped - alone)))
    summary = {f"{key}_ms": round(1000 * statistics.median(values[2:]), 1) for key, values in ms.items()}
    summary |= {"prompts": args.prompts - 2, "threads": args.threads, "max_abs_score_diff": max(diffs[2:])}
    print(json.dumps(summary, indent=1))
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump({"guard": args.guard, "summary": summary}, fh, indent=1)


if __name__ == "__main__":
    main()
