#!/usr/bin/env bash
# Harmful requests in everyday words, generated from the constitution, measured under the every-family
# leave-source-out of the input check (mpnet beside SmolLM2's layer-18 states), end to end and in the demo.
# From the repository root. before is ../organisations/run.sh's lso-after folder (the same command on the corpus
# without the file; its results.json is ../organisations/lso-after/); prev holds ../organisations/run.sh's e2e
# folder (input-states, bundle), prev-prompts the prompt files its guarded generation read (../neighbours/run.sh's),
# prev-judge its judge, prev-demo the demo bundle shipped before.
set -euo pipefail
D=docs/results/guard_quality/everyday
cguard data build --out corpus --seed 0
cguard data synthesize --out src/constitutional_guard/data/shipped/synthetic-qwen2.5-coder-1.5b-instruct-everyday.jsonl \
  --harmful-lists 0 --benign-lists 0 --everyday-lists 8 --exclude corpus --dtype bfloat16         # 15 min
cguard data build --out corpus --seed 0
cguard classifier leave-source-out --data corpus --inputs prompts --base-model mpnet-base \
  --states-model smollm2-135m-instruct --states-layers 18 --output lso-everyday                   # 36 min (features cached)
cp lso-everyday/report.md lso-everyday/results.json lso-everyday/families.png $D/lso/
python $D/compare.py before=before after=lso-everyday > $D/compare.md
python $D/donotanswer.py corpus before=before after=lso-everyday > $D/donotanswer.md
# the demo's classifiers, re-exported on this corpus (features cached)
cguard demo --export-classifiers src/constitutional_guard/demo_assets
# inputs-eval/: the end-to-end input check (the held-out sources of ../neighbours/run.sh, the same prompt files)
# trained on this corpus, against the one trained on the corpus without the file (prev/input-states)
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
# report-*.md, summary-*.json: guarded generation with this input check, everything else as in ../organisations/
# (prev's bundle with its input check swapped, the same judge and prompt files), so the rows are paired
cguard guard build --out e2e/bundle --probe prev/bundle/probe --classifier prev/bundle/classifier \
  --input-classifier e2e/input-states --model smollm2-135m-instruct
cguard bench jailbreak --guard e2e/bundle --judge prev-judge --harmful prev-prompts/harmful.jsonl --benign prev-prompts/benign.jsonl \
  --n-harmful 0 --n-jailbreak 0 --n-benign 200 --max-new-tokens 48 --batch-size 8 --out e2e/out-benign   # 14 min
cguard bench jailbreak --guard e2e/bundle --judge prev-judge --harmful prev-prompts/harmful.jsonl --benign prev-prompts/benign.jsonl \
  --n-harmful 100 --n-jailbreak 100 --n-benign 0 --max-new-tokens 48 --batch-size 8 --out e2e/out-harmful  # 6 min
