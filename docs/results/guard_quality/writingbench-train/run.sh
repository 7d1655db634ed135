#!/usr/bin/env bash
# WritingBench's English queries as benign training and calibration data for the end-to-end input check, tested on
# the other instruction sets (measured, not kept). From the repository root; prev holds ../everyday/run.sh's e2e
# folder, sets the files of ../demo-folds/instruction_sets.py.
set -euo pipefail
D=docs/results/guard_quality/writingbench-train
cp -r prev/corpus e2e-wb
python $D/add_writingbench.py e2e-wb sets/writingbench.jsonl     # 358 train, 61 validation, 126 calibration
cguard classifier train --kind embedding --base-model mpnet-base --data e2e-wb --out e2e-wb-input \
  --set inputs=prompts --set states_model=smollm2-135m-instruct --set states_layers=18
cguard classifier calibrate --classifier e2e-wb-input --data e2e-wb --block-fpr 0.05 --hold-rate 0.01 --cross-source-prompts 5
cguard eval -s after=e2e-wb-input -s before=prev/input-states -d harmful=prev/harmful.jsonl -d benign=prev/benign.jsonl \
  -d persistbench=sets/persistbench.jsonl -d healthbench=sets/healthbench.jsonl -d mtbench=sets/mtbench.jsonl \
  -d handwritten=benchmarks/handwritten_prompts.jsonl -d figurative=benchmarks/figurative_prompts.jsonl --out eval-wb
python $D/summarise.py eval-wb after=e2e-wb-input before=prev/input-states > $D/summary.json
