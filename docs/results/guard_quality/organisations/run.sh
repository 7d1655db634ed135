#!/usr/bin/env bash
# Do-Not-Answer's questions about organisations labelled by the constitution (safe), measured under the
# every-family leave-source-out of the input check (mpnet beside SmolLM2's layer-18 states).
# From the repository root. lso-before/ is the same command on the corpus before the change (git checkout 8f92a0d);
# prev holds ../neighbours/run.sh's e2e folder (input-states, clf, bundle-clf, prompt files), prev-judge its judge,
# prev-demo the demo bundle shipped before.
set -euo pipefail
D=docs/results/guard_quality/organisations
cguard data build --out corpus --seed 0
cguard classifier leave-source-out --data corpus --inputs prompts --base-model mpnet-base \
  --states-model smollm2-135m-instruct --states-layers 18 --output lso-after      # 48 min
python $D/relabel.py lso-after corpus > $D/lso-after/labels.json                    # both labellings, same scores
# the demo's classifiers, re-exported on this corpus (40 min)
cguard demo --export-classifiers src/constitutional_guard/demo_assets
# inputs-eval/: the end-to-end input check (held-out sources of ../neighbours/run.sh) trained on this corpus,
# against the one trained on the corpus before the change (prev/input-states)
python benchmarks/heldout_sources.py --corpus corpus --out e2e
cguard classifier train --kind embedding --base-model mpnet-base --data e2e/corpus --out e2e/input-states \
  --set inputs=prompts --set states_model=smollm2-135m-instruct --set states_layers=18
cguard classifier calibrate --classifier e2e/input-states --data e2e/corpus --block-fpr 0.05 --hold-rate 0.01 --cross-source-prompts 5
cguard eval -s after=e2e/input-states -s before=prev/input-states -d harmful=e2e/harmful.jsonl -d benign=e2e/benign.jsonl \
  --out $D/inputs-eval
python docs/results/guard_quality/e2e-states/summarise.py $D/inputs-eval e2e/benign.jsonl after=e2e/input-states \
  before=prev/input-states > $D/inputs-eval/summary.json
# demo-handwritten/: the demo's input check shipped before (prev-demo) and now
cguard eval -s before=prev-demo/input_classifier -s after="$(cguard demo --print-bundle-dir)/input_classifier" \
  -d handwritten=benchmarks/handwritten_prompts.jsonl --out $D/demo-handwritten
# report-*.md, summary-*.json: guarded generation with this input check, everything else as in ../neighbours/
# (prev's exchange check, probe, judge and prompt files), so the rows are paired
cguard guard build --out e2e/bundle --probe prev/bundle-clf/probe --classifier prev/clf \
  --input-classifier e2e/input-states --model smollm2-135m-instruct
cguard bench jailbreak --guard e2e/bundle --judge prev-judge --harmful prev/harmful.jsonl --benign prev/benign.jsonl \
  --n-harmful 0 --n-jailbreak 0 --n-benign 200 --max-new-tokens 48 --batch-size 8 --out e2e/out-benign   # 14 min
cguard bench jailbreak --guard e2e/bundle --judge prev-judge --harmful prev/harmful.jsonl --benign prev/benign.jsonl \
  --n-harmful 100 --n-jailbreak 100 --n-benign 0 --max-new-tokens 48 --batch-size 8 --out e2e/out-harmful  # 6 min
