#!/usr/bin/env bash
# The end-to-end input check (the held-out sources of neighbours/run.sh) retrained on ./corpus and scored against
# the one before it on the same held-out prompts, so the rows are paired. From the repository root:
#   bash docs/results/guard_quality/input-check-eval.sh OUT PREV_INPUT [-d NAME=FILE ...]
# OUT: results folder (OUT/inputs-eval); PREV_INPUT: the end-to-end input check before; further arguments go to
# `cguard eval` (more prompt sets to score both on).
set -euo pipefail
OUT=$1 PREV_INPUT=$2
shift 2
python benchmarks/heldout_sources.py --corpus corpus --out e2e
cguard classifier train --kind embedding --base-model mpnet-base --data e2e/corpus --out e2e/input-states \
  --set inputs=prompts --set states_model=smollm2-135m-instruct --set states_layers=18
cguard classifier calibrate --classifier e2e/input-states --data e2e/corpus --block-fpr 0.05 --hold-rate 0.01 --cross-source-prompts 5
cguard eval -s after=e2e/input-states -s before="$PREV_INPUT" -d harmful=e2e/harmful.jsonl -d benign=e2e/benign.jsonl \
  "$@" --out "$OUT/inputs-eval"
python docs/results/guard_quality/e2e-states/summarise.py "$OUT/inputs-eval" e2e/benign.jsonl after=e2e/input-states \
  before="$PREV_INPUT" > "$OUT/inputs-eval/summary.json"
