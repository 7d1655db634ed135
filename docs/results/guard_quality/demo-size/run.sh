#!/usr/bin/env bash
# The demo's input-check recipe (9,000 sampled train prompts, 3,000 validation, thresholds from 3 cross-source
# folds) against the full one (every train prompt, 5 folds), three sample draws, on the held-out end-to-end
# prompts. From the repository root, with ../everyday/run.sh's e2e folder (corpus, input-states, prompt files).
set -euo pipefail
D=docs/results/guard_quality/demo-size
for seed in 0 1 2; do
  cguard classifier train --kind embedding --base-model mpnet-base --data e2e/corpus --out e2e-9k-s$seed --max-train 9000 \
    --seed $seed --set inputs=prompts --set states_model=smollm2-135m-instruct --set states_layers=18 \
    --set max_validation=3000 --set head=linear+mlp
  cguard classifier calibrate --classifier e2e-9k-s$seed --data e2e/corpus --block-fpr 0.05 --hold-rate 0.01 --cross-source-prompts 3
done
cp -r e2e/input-states e2e-full-cs3
cguard classifier calibrate --classifier e2e-full-cs3 --data e2e/corpus --block-fpr 0.05 --hold-rate 0.01 --cross-source-prompts 3
cguard eval -s full5=e2e/input-states -s full3=e2e-full-cs3 -s s0=e2e-9k-s0 -s s1=e2e-9k-s1 -s s2=e2e-9k-s2 \
  -d harmful=e2e/harmful.jsonl -d benign=e2e/benign.jsonl -d handwritten=benchmarks/handwritten_prompts.jsonl --out eval-size
cp -r eval-size/report.md eval-size/results.json eval-size/plots eval-size/scores $D/
python docs/results/guard_quality/e2e-states/summarise.py eval-size e2e/benign.jsonl full5=e2e/input-states \
  full3=e2e-full-cs3 s0=e2e-9k-s0 s1=e2e-9k-s1 s2=e2e-9k-s2 > $D/summary.json
# the same three heads with thresholds from five folds of sources (folds.json; the scores above, new thresholds)
for seed in 0 1 2; do
  cp -r e2e-9k-s$seed e2e-9k-s$seed-cs5
  cguard classifier calibrate --classifier e2e-9k-s$seed-cs5 --data e2e/corpus --block-fpr 0.05 --hold-rate 0.01 --cross-source-prompts 5
done
python $D/folds_rates.py > $D/folds.json
