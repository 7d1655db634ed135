#!/usr/bin/env bash
# Harmful requests in everyday words, generated from the constitution, measured under the every-family
# leave-source-out of the input check (mpnet beside SmolLM2's layer-18 states).
# From the repository root. before/ is ../organisations/lso-after (the same command on the corpus without the file);
# prev holds ../organisations/run.sh's e2e folder (input-states and prompt files), prev-demo the demo bundle
# shipped before.
set -euo pipefail
D=docs/results/guard_quality/everyday
cguard data build --out corpus --seed 0
cguard data synthesize --out src/constitutional_guard/data/shipped/synthetic-qwen2.5-coder-1.5b-instruct-everyday.jsonl \
  --harmful-lists 0 --benign-lists 0 --everyday-lists 8 --exclude corpus --dtype bfloat16         # 20 min
cguard data build --out corpus --seed 0
cguard classifier leave-source-out --data corpus --inputs prompts --base-model mpnet-base \
  --states-model smollm2-135m-instruct --states-layers 18 --output lso-everyday                   # 48 min
cp lso-everyday/report.md lso-everyday/results.json lso-everyday/families.png $D/lso/
python $D/compare.py before=$D/../organisations/lso-after after=lso-everyday > $D/compare.md
python $D/donotanswer.py corpus before=lso-before after=lso-everyday > $D/donotanswer.md           # lso-before: scores of ../organisations
