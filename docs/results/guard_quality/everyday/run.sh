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
# inputs-eval/, demo-handwritten/, report-*.md, summary-*.json: the input check retrained on this corpus against
# the one trained without the file; guarded generation with everything else as in ../organisations/ (prev's bundle
# with its input check swapped, the same judge and prompt files)
bash docs/results/guard_quality/input-check-swap.sh $D prev/input-states prev/bundle/probe prev/bundle/classifier \
  prev-judge prev-prompts prev-demo
