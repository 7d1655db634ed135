"""The input and exchange checks with the states their token source kept, against reading them again.

Reads prompts of a corpus split with the bundle's target model (the local source's prefill, keeping the prompt's
states) and scores each with the input check twice: with the kept states and without them. Then generates the
answers (keeping the states the exchange check reads) and scores every ``--every``-th prefix of each answer with the
exchange check twice, the same way (without them the check reads prompt and answer through the model itself).
Reports the score differences, the verdicts that differ and the time per check of each path, in the same run.

    python benchmarks/answer_states.py --guard BUNDLE --data CORPUS/binary/test.jsonl --answers 24 \\
        --out answer_states.json
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np

from constitutional_guard.classifiers.lm_states import forget_recent_prompts
from constitutional_guard.guard.events import GenerationConfig
from constitutional_guard.guard.guard import Guard


def verdict(score: float, allow: float, block: float) -> str:
    return "block" if score >= block else "uncertain" if score >= allow else "allow"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guard", required=True, help="Guard bundle directory (local target model).")
    parser.add_argument("--data", required=True, help="A corpus split (JSONL records with prompt and label).")
    parser.add_argument("--answers", type=int, default=24, help="Prompts answered.")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--every", type=int, default=16, help="Check every this many answer tokens (and the end).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="answer_states.json")
    args = parser.parse_args()

    guard = Guard.from_pretrained(args.guard)
    if not guard.shares_answer_states:
        raise SystemExit("this bundle's exchange check reads no states its target model keeps")
    classifier, input_classifier = guard.classifier, guard.input_classifier
    reads_prompt = guard.shares_prompt_states and input_classifier is not None
    with open(args.data, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    random.Random(args.seed).shuffle(rows)
    prompts, seen = [], set()
    for row in rows:
        if row.get("messages") is None and row["prompt"] not in seen:
            seen.add(row["prompt"])
            prompts.append((row["label"], row["prompt"]))
        if len(prompts) == args.answers:
            break
    checks, inputs, seconds = [], [], {"kept": 0.0, "read": 0.0, "input_kept": 0.0, "input_read": 0.0}
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    for label, prompt in prompts:
        stream = guard.source.open([{"role": "user", "content": prompt}], config, {})
        if reads_prompt and stream.read_prompt is not None:
            stream.read_prompt()  # the generator's prefill, as before the input check
            forget_recent_prompts()
            tick = time.perf_counter()
            kept = input_classifier.score(prompt, None, answer_states=stream.answer_states).score
            seconds["input_kept"] += time.perf_counter() - tick
            forget_recent_prompts()
            tick = time.perf_counter()
            read = input_classifier.score(prompt).score
            seconds["input_read"] += time.perf_counter() - tick
            inputs.append({"label": label, "kept": kept, "read": read})
        for _ in stream.steps:
            pass
        length = len(stream.text)
        for cut in sorted({*range(args.every, length, args.every), length}):
            response = stream.text.text_through(cut, True)
            if not response:
                continue
            tick = time.perf_counter()
            kept = classifier.score(prompt, response, answer_states=stream.answer_states).score
            seconds["kept"] += time.perf_counter() - tick
            tick = time.perf_counter()
            read = classifier.score(prompt, response).score
            seconds["read"] += time.perf_counter() - tick
            checks.append({"label": label, "tokens": cut, "kept": kept, "read": read})
    diffs = np.array([abs(c["kept"] - c["read"]) for c in checks])
    allow, block = classifier.thresholds.allow, classifier.thresholds.block
    changed = [c for c in checks if verdict(c["kept"], allow, block) != verdict(c["read"], allow, block)]
    summary = {
        "answers": len(prompts),
        "checks": len(checks),
        "abs_diff_mean": float(diffs.mean()),
        "abs_diff_p95": float(np.quantile(diffs, 0.95)),
        "abs_diff_max": float(diffs.max()),
        "verdicts_changed": len(changed),
        "ms_per_check_kept": 1000 * seconds["kept"] / len(checks),
        "ms_per_check_read": 1000 * seconds["read"] / len(checks),
    }
    if inputs:
        diffs = np.array([abs(c["kept"] - c["read"]) for c in inputs])
        allow, block = input_classifier.prompt_thresholds.allow, input_classifier.prompt_thresholds.block
        summary["input_checks"] = {
            "checks": len(inputs),
            "abs_diff_mean": float(diffs.mean()),
            "abs_diff_max": float(diffs.max()),
            "verdicts_changed": sum(verdict(c["kept"], allow, block) != verdict(c["read"], allow, block)
                                    for c in inputs),
            "ms_per_check_kept": 1000 * seconds["input_kept"] / len(inputs),
            "ms_per_check_read": 1000 * seconds["input_read"] / len(inputs),
        }
    print(json.dumps(summary, indent=1))
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump({"guard": args.guard, "data": args.data, "summary": summary, "changed": changed,
                   "checks": checks, "input_checks": inputs}, fh, indent=1)


if __name__ == "__main__":
    main()
