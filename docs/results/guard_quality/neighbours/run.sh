#!/usr/bin/env bash
# The generated neighbour questions, measured: the corpus with them, the end-to-end recipe of
# ../e2e-prompt-weight/run.sh on it (same held-out sources, prompt files and judge), and the demo's input check.
# From the repository root, with `prev` holding the e2e-prompt-weight run (its input-states and judge).
set -euo pipefail
C=cguard; E=e2e
$C data build --out corpus --seed 0        # reads data/shipped/synthetic-*-neighbours.jsonl like the other shipped files
python benchmarks/heldout_sources.py --corpus corpus --out $E   # the same 558 harmful / 2,583 benign prompts as prev
$C classifier train --kind embedding --data $E/corpus --out $E/clf
$C classifier calibrate --classifier $E/clf --data $E/corpus --block-fpr 0.01 --hold-rate 0.01
$C classifier train --kind embedding --base-model mpnet-base --data $E/corpus --out $E/input-states \
  --set inputs=prompts --set states_model=smollm2-135m-instruct --set states_layers=18
$C classifier calibrate --classifier $E/input-states --data $E/corpus --block-fpr 0.05 --hold-rate 0.01 --cross-source-prompts 5
# inputs-eval/: the input check alone on every held-out prompt, against the previous one
$C eval -s new=$E/input-states -s old=prev/input-states -d harmful=$E/harmful.jsonl -d benign=$E/benign.jsonl --out inputs-eval
python docs/results/guard_quality/e2e-states/summarise.py inputs-eval $E/benign.jsonl new=$E/input-states \
  old=prev/input-states > inputs-eval/summary.json
# guarded generation (report-*.md, summary-*.json), judged by prev's judge
$C guard build --out $E/bundle-clf --probe "$($C demo --print-bundle-dir)/probe" --classifier $E/clf \
  --input-classifier $E/input-states --model smollm2-135m-instruct
$C bench jailbreak --guard $E/bundle-clf --judge prev/judge --harmful $E/harmful.jsonl --benign $E/benign.jsonl \
  --n-harmful 0 --n-jailbreak 0 --n-benign 200 --max-new-tokens 48 --batch-size 8 --out $E/out-clf-benign
$C bench jailbreak --guard $E/bundle-clf --judge prev/judge --harmful $E/harmful.jsonl --benign $E/benign.jsonl \
  --n-harmful 100 --n-jailbreak 100 --n-benign 0 --max-new-tokens 48 --batch-size 8 --out $E/out-clf-harmful
# demo-handwritten/: the demo's input check, shipped before (prev-demo) and now
$C eval -s old=prev-demo/input_classifier -s new="$($C demo --print-bundle-dir)/input_classifier" \
  -d handwritten=benchmarks/handwritten_prompts.jsonl --out demo-handwritten
