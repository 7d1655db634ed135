#!/usr/bin/env bash
# The target's own answers to the constitution's generated prompts as exchange-check training data, measured end to
# end against the same exchange check trained without them (everything else the same, so the rows are paired).
# From the repository root: bash docs/results/guard_quality/target-answers/run.sh W PREV JUDGE PROMPTS
# W: a work folder holding W/corpus, `cguard data build --out W/corpus --seed 0` without the file; PREV: ../everyday/'s
# end-to-end folder (input-states, bundle/probe); JUDGE and PROMPTS: the judge and prompt files of that run.
set -euo pipefail
W=$1 PREV=$2 JUDGE=$3 PROMPTS=$4
D=docs/results/guard_quality/target-answers
# 1. SmolLM2's answers to every generated prompt of the corpus (1,207: 797 benign, 410 harmful; 38 min on the
#    2 shared cores, answers cached per prompt)
cguard data generate --data "$W/corpus" --out "$W/smollm2-135m-instruct-constitution.jsonl" --source 'synthetic/*' \
  --safe 989 --unsafe 449
# 2. before: the exchange check trained and calibrated on the end-to-end corpus without the file
python benchmarks/heldout_sources.py --corpus "$W/corpus" --out "$W/before/e2e"
# 3. after: the same with the file among the shipped generations
cp "$W/smollm2-135m-instruct-constitution.jsonl" src/constitutional_guard/data/shipped/
cguard data build --out "$W/after/corpus" --seed 0
rm src/constitutional_guard/data/shipped/smollm2-135m-instruct-constitution.jsonl
python benchmarks/heldout_sources.py --corpus "$W/after/corpus" --out "$W/after/e2e"   # the same 558 + 2,583 test prompts
for run in before after; do   # 5 min training, 15 min calibration each
  cguard classifier train --kind embedding --data "$W/$run/e2e/corpus" --out "$W/$run/clf"
  cguard classifier calibrate --classifier "$W/$run/clf" --data "$W/$run/e2e/corpus" --block-fpr 0.01 --hold-rate 0.01
done
# 4. guarded generation, one guard at a time (two at once on 2 cores ran four times slower)
for run in before after; do
  cguard guard build --out "$W/$run/bundle" --probe "$PREV/bundle/probe" --classifier "$W/$run/clf" \
    --input-classifier "$PREV/input-states" --model smollm2-135m-instruct
  for half in benign harmful; do
    if [ $half = benign ]; then n="--n-harmful 0 --n-jailbreak 0 --n-benign 200"; else n="--n-harmful 100 --n-jailbreak 100 --n-benign 0"; fi
    cguard bench jailbreak --guard "$W/$run/bundle" --judge "$JUDGE" --harmful "$PROMPTS/harmful.jsonl" \
      --benign "$PROMPTS/benign.jsonl" $n --max-new-tokens 48 --batch-size 8 --out "$W/$run/out-$half"
    cp "$W/$run/out-$half/report.md" "$D/report-$half-$run.md"
    cp "$W/$run/out-$half/summary.json" "$D/summary-$half-$run.json"
  done
done
python $D/paired.py "$W/before/out-benign/items.jsonl" "$W/after/out-benign/items.jsonl"
python $D/paired.py "$W/before/out-harmful/items.jsonl" "$W/after/out-harmful/items.jsonl"
# the final check alone on the same items' raw answers (each exchange check at its own thresholds)
python $D/final_check.py "$W/before/out-benign/items.jsonl" "$W/before/out-harmful/items.jsonl" -- \
  before="$W/before/clf" after="$W/after/clf"
# 5. the exchange check's recipe under leave-source-out, on the whole corpus without and with the file (4 min each)
cguard classifier leave-source-out --data "$W/corpus" --inputs all --max-per-split 6000 --output "$W/lso-before"
cguard classifier leave-source-out --data "$W/after/corpus" --inputs all --max-per-split 6000 --output "$W/lso-after"
for run in before after; do cp "$W/lso-$run"/{report.md,results.json,families.png} "$D/lso-$run/"; done
