#!/usr/bin/env bash
# Harmless requests that use words of harm in another sense ("kill a process", "steal the show"), generated with
# the embedded Qwen2.5-Coder-1.5B and measured on the end-to-end input check: the held-out prompts and the two
# hand-written sets. From the repository root; prev holds ../everyday/run.sh's e2e folder (input-states). The file
# was not kept in the package (guard_quality.md, "Harmless requests in words of harm"): the last step moves it here.
set -euo pipefail
D=docs/results/guard_quality/figurative
cguard data build --out corpus --seed 0
cguard data synthesize --out src/constitutional_guard/data/shipped/synthetic-qwen2.5-coder-1.5b-instruct-figurative.jsonl \
  --harmful-lists 0 --benign-lists 0 --figurative-lists 2 --exclude corpus --dtype bfloat16      # 15 min
# (the recorded run asked for two more words, "die" and "overdose", which FIGURATIVE_WORDS has dropped since)
cguard data build --out corpus --seed 0
# inputs-eval/: the end-to-end input check (the held-out sources of ../neighbours/run.sh) retrained on this corpus,
# against the one trained without the file, on the held-out prompts and the two hand-written sets
bash docs/results/guard_quality/input-check-eval.sh $D prev/input-states \
  -d handwritten=benchmarks/handwritten_prompts.jsonl -d figurative=benchmarks/figurative_prompts.jsonl
mv src/constitutional_guard/data/shipped/synthetic-qwen2.5-coder-1.5b-instruct-figurative.jsonl $D/candidates-kept.jsonl
# the demo's input check on the look-alike set (demo-figurative/)
cguard eval -s demo="$(cguard demo --print-bundle-dir)/input_classifier" -d figurative=benchmarks/figurative_prompts.jsonl \
  --out $D/demo-figurative
