"""Latency of guarded generation, side by side in one run on the same model, prompts and token counts.

Modes: (a) plain ``generate`` with KV cache, (b) guarded probe-only, (c) the full cascade (input check, probe,
second stage, final check), (d) the reference loop that recomputes the whole sequence with every hidden state
for each new token. Detection latency replays held-out unsafe exchanges through (b) and (c) (output side only).

Modes (a) and (d) are the yardsticks, so they keep their own loops on purpose: (a) is Hugging Face's own
``generate`` (what the guard's ``models.generation.token_loop`` is measured against) and (d) is the quadratic
loop the guard replaced. Both still score with the probe's one scorer, ``score_hidden_states``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from constitutional_guard.data.schema import Record
from constitutional_guard.guard.events import GenerationConfig, GenerationStatus
from constitutional_guard.guard.guard import REFUSAL_SEPARATOR, Guard
from constitutional_guard.models.loading import LoadedModel
from constitutional_guard.sampling import sample_uniform

BENIGN_PROMPTS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how vaccines train the immune system, for a high-school student.",
    "What are good strategies for learning a new language as an adult?",
    "Describe the water cycle and why it matters for agriculture.",
    "Give me a weekly meal plan for a vegetarian on a budget.",
    "How did the printing press change European society?",
    "Explain the difference between weather and climate with examples.",
    "What should I pack for a three-day hiking trip in the mountains?",
)
MODES = ("baseline", "probe", "cascade", "reference")
ProgressFn = Callable[[str], None]


@dataclass
class ModeStats:
    """Timings of one mode over all prompts: wall clock, and this process's CPU time (stable on shared cores)."""

    tokens: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    first_token_s: list[float] = field(default_factory=list)
    classifier_calls: list[int] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def timed(self, run: Callable[[], tuple[int, float | None]]) -> None:
        """Run one generation, which returns (new tokens, seconds to first released token)."""
        wall, cpu = time.perf_counter(), time.process_time()
        tokens, first = run()
        self.seconds += time.perf_counter() - wall
        self.cpu_seconds += time.process_time() - cpu
        self.tokens += tokens
        if first is not None:
            self.first_token_s.append(first)

    def summary(self) -> dict[str, Any]:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        out: dict[str, Any] = {
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "tok_s": round(rate, 3),
            "cpu_tok_s": round(self.tokens / self.cpu_seconds, 3) if self.cpu_seconds else 0.0,
            "ms_per_token": round(1000.0 / rate, 2) if rate else None,
            "first_release_ms": round(1000.0 * statistics.mean(self.first_token_s), 1) if self.first_token_s else None,
        }
        if self.classifier_calls:
            out["classifier_calls_per_prompt"] = round(statistics.mean(self.classifier_calls), 2)
        if self.statuses:
            out["statuses"] = dict(self.statuses)
        return out


class _FirstToken:
    """A ``generate`` streamer that records when the first new token arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:  # the first call carries the prompt
            self.first = time.perf_counter()

    def end(self) -> None:
        return None


@torch.inference_mode()
def plain_generate(lm: LoadedModel, messages: list[dict[str, str]], new_tokens: int) -> tuple[int, float]:
    """(new tokens, seconds to first token) of Hugging Face ``generate``, greedy with KV cache."""
    start = time.perf_counter()
    ids = torch.tensor([lm.encode_messages(messages)], device=lm.device)
    streamer = _FirstToken()
    out = lm.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=lm.tokenizer.pad_token_id,
        streamer=streamer,
    )
    return int(out.shape[1] - ids.shape[1]), (streamer.first or time.perf_counter()) - start


@torch.inference_mode()
def reference_loop(guard: Guard, messages: list[dict[str, str]], new_tokens: int) -> tuple[int, float]:
    """The quadratic loop: the whole sequence recomputed without cache, with every hidden state, per token."""
    lm = guard.lm
    start = time.perf_counter()
    ids = lm.encode_messages(messages)
    first = 0.0
    for step in range(new_tokens):
        out = lm.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False, output_hidden_states=True)
        guard.probe.score_hidden_states(out.hidden_states)
        ids.append(int(out.logits[0, -1].argmax()))
        if step == 0:
            first = time.perf_counter() - start
    return new_tokens, first


def probe_only(guard: Guard) -> Guard:
    """The same guard without second stage, input or final check: the probe alone decides (escalation blocks)."""
    policy = guard.policy.model_copy(update={"input_check": False, "final_check": False})
    return Guard(guard.lm, guard.probe, guard.constitution, classifier=None, policy=policy, refusal=guard.refusal)


def _guarded(guard: Guard, messages: list[dict[str, str]], config: GenerationConfig, stats: ModeStats) -> None:
    def run() -> tuple[int, float | None]:
        result = guard.generate(messages, config)
        stats.classifier_calls.append(result.classifier_calls)
        stats.statuses[result.status.value] = stats.statuses.get(result.status.value, 0) + 1
        return result.completion_tokens, result.timings.get("first_release")

    stats.timed(run)


def unsafe_exchanges(data_dir: str | Path, limit: int, seed: int = 0) -> list[Record]:
    """Complete (not cut) unsafe exchanges of a corpus's held-out test split, a deterministic sample."""
    from constitutional_guard.data.io import read_records
    from constitutional_guard.probes.pipeline import split_file

    records = [
        r
        for r in read_records(split_file(data_dir, "test"))
        if r.label in ("unsafe", "unsafe_compliance") and r.response and r.prompt and "cut" not in r.meta
    ]
    records.sort(key=lambda r: r.id)
    return sample_uniform(records, limit, seed)


def detection_latency(guard: Guard, exchanges: Sequence[Record], max_tokens: int) -> dict[str, Any]:
    """Replay unsafe exchanges (unsafe from their first response token) with the input check off: tokens
    generated until the block, and how much of the response reached the user before it."""
    policy = guard.policy.model_copy(update={"input_check": False})
    output_side = Guard(guard.lm, guard.probe, guard.constitution, guard.classifier, policy=policy)
    latencies: list[int] = []
    leaked: list[int] = []
    statuses: dict[str, int] = {}
    for record in exchanges:
        config = GenerationConfig(max_new_tokens=max_tokens)
        result = output_side.replay(record.prompt or "", record.response or "", config)
        statuses[result.status.value] = statuses.get(result.status.value, 0) + 1
        if result.status is GenerationStatus.BLOCKED:
            latencies.append(result.completion_tokens)
            shown = result.response[: -len(output_side.refusal)].removesuffix(REFUSAL_SEPARATOR)
            leaked.append(len(shown))
    return {
        "exchanges": len(exchanges),
        "statuses": statuses,
        "tokens_to_block_mean": round(statistics.mean(latencies), 2) if latencies else None,
        "tokens_to_block_median": statistics.median(latencies) if latencies else None,
        "released_chars_before_block_mean": round(statistics.mean(leaked), 1) if leaked else None,
    }


def _ratios(summary: dict[str, dict[str, Any]], key: str, prefix: str) -> dict[str, float | None]:
    def ratio(a: str, b: str, digits: int) -> float | None:
        return round(summary[a][key] / summary[b][key], digits) if summary[b][key] else None

    return {
        f"{prefix}probe_vs_baseline": ratio("probe", "baseline", 4),
        f"{prefix}cascade_vs_baseline": ratio("cascade", "baseline", 4),
        f"{prefix}probe_vs_reference": ratio("probe", "reference", 2),
    }


def run_latency_benchmark(
    guard: Guard,
    prompts: Sequence[str] = BENIGN_PROMPTS,
    new_tokens: int = 256,
    unsafe_exchanges: Sequence[Record] = (),
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Time the four modes on each prompt (rotating their order against drift) and summarise."""
    lm = guard.lm
    probe_guard = probe_only(guard)
    config = GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True)
    stats = {mode: ModeStats() for mode in MODES}
    warm = [{"role": "user", "content": "Hello"}]
    plain_generate(lm, warm, 4)
    guard.generate(warm, GenerationConfig(max_new_tokens=4, ignore_eos=True))
    runners: dict[str, Callable[[list[dict[str, str]]], None]] = {
        "baseline": lambda m: stats["baseline"].timed(lambda: plain_generate(lm, m, new_tokens)),
        "probe": lambda m: _guarded(probe_guard, m, config, stats["probe"]),
        "cascade": lambda m: _guarded(guard, m, config, stats["cascade"]),
        "reference": lambda m: stats["reference"].timed(lambda: reference_loop(guard, m, new_tokens)),
    }
    for i, prompt in enumerate(prompts):
        order = MODES[i % len(MODES) :] + MODES[: i % len(MODES)]
        for mode in order:
            if progress is not None:
                progress(f"prompt {i + 1}/{len(prompts)}: {mode}")
            runners[mode]([{"role": "user", "content": prompt}])
    summary = {mode: s.summary() for mode, s in stats.items()}
    report: dict[str, Any] = {
        "baseline_tok_s": summary["baseline"]["tok_s"],
        "probe_tok_s": summary["probe"]["tok_s"],
        "cascade_tok_s": summary["cascade"]["tok_s"],
        "reference_tok_s": summary["reference"]["tok_s"],
        "new_tokens": new_tokens,
        "num_prompts": len(prompts),
        **_ratios(summary, "tok_s", ""),
        **_ratios(summary, "cpu_tok_s", "cpu_"),
        "modes": summary,
        "environment": {
            "model": lm.name,
            "device": str(lm.device),
            "dtype": str(lm.dtype).removeprefix("torch."),
            "torch_threads": torch.get_num_threads(),
            "probe_layers": list(guard.probe.layers),
            "classifier": getattr(guard.classifier, "kind", None),
            "policy": guard.policy.model_dump(),
        },
    }
    if unsafe_exchanges:
        if progress is not None:
            progress(f"detection latency on {len(unsafe_exchanges)} unsafe exchanges")
        report["detection"] = {
            "probe": detection_latency(probe_guard, unsafe_exchanges, new_tokens),
            "cascade": detection_latency(guard, unsafe_exchanges, new_tokens),
        }
    return report
