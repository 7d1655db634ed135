#!/usr/bin/env bash
# End to end on held-out sources with the exchange check weighing its prompt (its default, prompt_weight 0.5).
# From the repository root, with a corpus built by `cguard data build --out corpus --seed 0` and the demo built.
set -euo pipefail
C=cguard; E=e2e
python benchmarks/heldout_sources.py --corpus corpus --out $E
$C classifier train --kind embedding --data $E/corpus --out $E/clf
$C classifier calibrate --classifier $E/clf --data $E/corpus --block-fpr 0.01 --hold-rate 0.01
$C classifier train --kind embedding --base-model mpnet-base --data $E/corpus --out $E/input-states \
  --set inputs=prompts --set states_model=smollm2-135m-instruct --set states_layers=18
$C classifier calibrate --classifier $E/input-states --data $E/corpus --block-fpr 0.05 --hold-rate 0.01 --cross-source-prompts 5
$C classifier train --kind embedding --data corpus --out $E/judge --set head=mlp --set prompt_weight=0
$C classifier calibrate --classifier $E/judge --data corpus --block-fpr 0.05
$C guard build --out $E/bundle-clf --probe "$($C demo --print-bundle-dir)/probe" --classifier $E/clf \
  --input-classifier $E/input-states --model smollm2-135m-instruct
$C bench jailbreak --guard $E/bundle-clf --judge $E/judge --harmful $E/harmful.jsonl --benign $E/benign.jsonl \
  --n-harmful 0 --n-jailbreak 0 --n-benign 200 --max-new-tokens 48 --batch-size 8 --out $E/out-clf-benign
$C bench jailbreak --guard $E/bundle-clf --judge $E/judge --harmful $E/harmful.jsonl --benign $E/benign.jsonl \
  --n-harmful 100 --n-jailbreak 100 --n-benign 0 --max-new-tokens 48 --batch-size 8 --out $E/out-clf-harmful
