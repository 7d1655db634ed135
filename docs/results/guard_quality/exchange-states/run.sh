#!/usr/bin/env bash
# The exchange check beside SmolLM2's layer-18 states: under leave-source-out, then end to end against the exchange
# check of ../target-answers/ ("before"), everything else the same, so the rows are paired.
# From the repository root: bash docs/results/guard_quality/exchange-states/run.sh W BEFORE JUDGE PROMPTS
# W: a work folder holding W/corpus (`cguard data build --out W/corpus --seed 0`); BEFORE: ../target-answers/run.sh's
# W/before (its e2e/corpus, clf, bundle and out-* folders); JUDGE and PROMPTS: the judge and prompt files of that run.
set -euo pipefail
W=$1 BEFORE=$2 JUDGE=$3 PROMPTS=$4
D=docs/results/guard_quality/exchange-states
# 1. leave-source-out, the exchange check's recipe (15 min of states on the 2 shared cores, then 6 min)
cguard classifier leave-source-out --data "$W/corpus" --inputs all --max-per-split 6000 \
  --states-model smollm2-135m-instruct --states-layers 18 --output "$W/lso"
cp "$W/lso"/{report.md,results.json,families.png} "$D/lso/"
# 2. trained and calibrated as BEFORE's exchange check (20 min training, 29 min calibration)
cguard classifier train --kind embedding --data "$BEFORE/e2e/corpus" --out "$W/clf" \
  --set states_model=smollm2-135m-instruct --set states_layers=18
cguard classifier calibrate --classifier "$W/clf" --data "$BEFORE/e2e/corpus" --block-fpr 0.01 --hold-rate 0.01
# 3. guarded generation with BEFORE's probe, input check, judge and prompt files (see ../target-answers/run.sh)
cguard guard build --out "$W/bundle" --probe "$BEFORE/bundle/probe" --classifier "$W/clf" \
  --input-classifier "$BEFORE/bundle/input_classifier" --model smollm2-135m-instruct
for half in benign harmful; do   # 13 and 6 min
  if [ $half = benign ]; then n="--n-harmful 0 --n-jailbreak 0 --n-benign 200"; else n="--n-harmful 100 --n-jailbreak 100 --n-benign 0"; fi
  cguard bench jailbreak --guard "$W/bundle" --judge "$JUDGE" --harmful "$PROMPTS/harmful.jsonl" \
    --benign "$PROMPTS/benign.jsonl" $n --max-new-tokens 48 --batch-size 8 --out "$W/out-$half"
  cp "$W/out-$half/report.md" "$D/report-$half.md"; cp "$W/out-$half/summary.json" "$D/summary-$half.json"
done
P=docs/results/guard_quality/target-answers
python $P/paired.py "$BEFORE/out-benign/items.jsonl" "$W/out-benign/items.jsonl"
python $P/paired.py "$BEFORE/out-harmful/items.jsonl" "$W/out-harmful/items.jsonl"
# 4. the final check alone on BEFORE's raw answers, each exchange check at its own thresholds
python $P/final_check.py "$BEFORE/out-benign/items.jsonl" "$BEFORE/out-harmful/items.jsonl" -- \
  before="$BEFORE/clf" after="$W/clf"
