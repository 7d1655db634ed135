#!/usr/bin/env bash
# Benign prompts that use a word of harm kept first under the per-source cap (measured, not kept). From the
# repository root; prev holds ../everyday/run.sh's e2e folder (its input check and held-out prompt files).
set -euo pipefail
D=docs/results/guard_quality/harm-words-first
git apply $D/cap-preference.patch                # BoolQ, NQ-open, HealthSearchQA and S-Labs keep theirs first
cguard data build --out corpus --seed 0
python benchmarks/heldout_sources.py --corpus corpus --out e2e   # the same held-out sources; S-Labs' file changes
cguard classifier train --kind embedding --base-model mpnet-base --data e2e/corpus --out e2e/input-states \
  --set inputs=prompts --set states_model=smollm2-135m-instruct --set states_layers=18
cguard classifier calibrate --classifier e2e/input-states --data e2e/corpus --block-fpr 0.05 --hold-rate 0.01 --cross-source-prompts 5
# both input checks on the previous held-out prompts (paired), the rebuilt S-Labs file and the hand-written sets
cguard eval -s after=e2e/input-states -s before=prev/input-states -d harmful=prev/harmful.jsonl -d benign=prev/benign.jsonl \
  -d benign-new=e2e/benign.jsonl -d handwritten=benchmarks/handwritten_prompts.jsonl \
  -d figurative=benchmarks/figurative_prompts.jsonl --out $D/inputs-eval
python $D/summarise.py $D/inputs-eval prev/benign.jsonl e2e/benign.jsonl after=e2e/input-states \
  before=prev/input-states > $D/summary.json
git apply -R $D/cap-preference.patch
