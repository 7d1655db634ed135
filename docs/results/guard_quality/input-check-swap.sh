#!/usr/bin/env bash
# A retrained input check measured against the one before it, with nothing else changed: the end-to-end input
# check (the held-out sources of neighbours/run.sh) trained on ./corpus, the demo's input check on the hand-written
# set, and guarded generation with only the input check swapped, so the rows are paired.
# From the repository root, after `cguard data build --out corpus` and `cguard demo --export-classifiers ...`:
#   bash docs/results/guard_quality/input-check-swap.sh OUT PREV_INPUT PROBE EXCHANGE_CHECK JUDGE PROMPTS PREV_DEMO
# OUT: results folder; PREV_INPUT: the end-to-end input check before; PROBE, EXCHANGE_CHECK, JUDGE: the earlier
# guard's probe and exchange check, and its judge; PROMPTS: the folder of harmful.jsonl and benign.jsonl its
# guarded generation read; PREV_DEMO: the demo bundle shipped before.
set -euo pipefail
OUT=$1 PREV_INPUT=$2 PROBE=$3 EXCHANGE_CHECK=$4 JUDGE=$5 PROMPTS=$6 PREV_DEMO=$7
# inputs-eval/
bash docs/results/guard_quality/input-check-eval.sh "$OUT" "$PREV_INPUT"
# demo-handwritten/: the demo's input check shipped before and now
cguard eval -s before="$PREV_DEMO/input_classifier" -s after="$(cguard demo --print-bundle-dir)/input_classifier" \
  -d handwritten=benchmarks/handwritten_prompts.jsonl --out "$OUT/demo-handwritten"
# report-*.md, summary-*.json: guarded generation with this input check, everything else as before
cguard guard build --out e2e/bundle --probe "$PROBE" --classifier "$EXCHANGE_CHECK" \
  --input-classifier e2e/input-states --model smollm2-135m-instruct
cguard bench jailbreak --guard e2e/bundle --judge "$JUDGE" --harmful "$PROMPTS/harmful.jsonl" --benign "$PROMPTS/benign.jsonl" \
  --n-harmful 0 --n-jailbreak 0 --n-benign 200 --max-new-tokens 48 --batch-size 8 --out e2e/out-benign      # 14 min
cguard bench jailbreak --guard e2e/bundle --judge "$JUDGE" --harmful "$PROMPTS/harmful.jsonl" --benign "$PROMPTS/benign.jsonl" \
  --n-harmful 100 --n-jailbreak 100 --n-benign 0 --max-new-tokens 48 --batch-size 8 --out e2e/out-harmful    # 6 min
for half in benign harmful; do
  cp "e2e/out-$half/report.md" "$OUT/report-$half.md"
  cp "e2e/out-$half/summary.json" "$OUT/summary-$half.json"
done
