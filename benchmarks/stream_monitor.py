"""Stream-monitor cost per token against the local guarded loop, on the same model and text.

Variants: the local loop (every layer and the LM head, one token per forward, as ``token_loop``) and the
monitor reading the text teacher-forced with ``--chunk`` tokens per forward, with the probe at ``--layer``
(a truncated stack below the last layer) and at the last layer. Variants alternate per round so machine
load hits them alike; CPU seconds per token are reported with ratios to the local loop.

    OMP_NUM_THREADS=1 python benchmarks/stream_monitor.py --model smollm2-135m-instruct --layer 18 --chunk 8
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from constitutional_guard.guard.monitor import StreamMonitor
from constitutional_guard.models.embedded import materialize
from constitutional_guard.models.generation import Greedy, token_loop
from constitutional_guard.models.loading import LoadedModel, load_causal_lm, new_kv_cache
from constitutional_guard.probes import LinearProbe, ProbeConfig

TEXT = "Vaccines train the immune system to recognise a pathogen without causing the disease it brings. " * 8


def local_loop(lm: LoadedModel, prompt: list[int], ids: list[int]) -> None:
    for _ in token_loop(lm.model, prompt, Greedy(len(ids)), forced_ids=ids):
        pass


def monitored(monitor: StreamMonitor, prompt: list[int], ids: list[int], chunk: int) -> None:
    cache = new_kv_cache(monitor.base)
    monitor.hidden_states(prompt, cache)
    for start in range(0, len(ids), chunk):
        monitor.probe.score_hidden_states(monitor.hidden_states(ids[start : start + chunk], cache))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="Embedded alias or model folder.")
    parser.add_argument("--layer", type=int, default=18, help="Probe layer of the truncated variant.")
    parser.add_argument("--chunk", type=int, default=8, help="Monitor tokens per forward.")
    parser.add_argument("--tokens", type=int, default=96, help="Response tokens per round.")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path = args.model if "/" in args.model else str(materialize(args.model))
    lm = load_causal_lm(path, device="cpu", dtype="float32")
    prompt = lm.encode_messages([{"role": "user", "content": "How do vaccines work?"}])
    ids = lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"][: args.tokens]

    def probe(layer: int) -> LinearProbe:
        config = ProbeConfig(model_id=path, hidden_size=lm.hidden_size, layers=[layer])
        return LinearProbe(config, torch.zeros(1, lm.hidden_size), torch.zeros(1))

    truncated = StreamMonitor(lm, probe(args.layer), args.chunk)
    full = StreamMonitor(lm, probe(lm.num_layers), args.chunk)
    variants: dict[str, Callable[[], None]] = {
        "local_loop": lambda: local_loop(lm, prompt, ids),
        f"monitor_layer{args.layer}_chunk{args.chunk}": lambda: monitored(truncated, prompt, ids, args.chunk),
        f"monitor_layer{lm.num_layers}_chunk{args.chunk}": lambda: monitored(full, prompt, ids, args.chunk),
    }
    seconds = dict.fromkeys(variants, 0.0)
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, run in variants.items():
                tick = time.process_time()
                run()
                seconds[name] += time.process_time() - tick
    per_token = {name: 1000.0 * s / (args.rounds * len(ids)) for name, s in seconds.items()}
    report = {
        "model": args.model,
        "tokens": len(ids),
        "rounds": args.rounds,
        "cpu_ms_per_token": {k: round(v, 2) for k, v in per_token.items()},
        "ratio_to_local_loop": {k: round(v / per_token["local_loop"], 3) for k, v in per_token.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
