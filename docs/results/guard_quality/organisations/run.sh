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
# inputs-eval/, demo-handwritten/, report-*.md, summary-*.json: the input check retrained on this corpus against
# the one before the change; guarded generation with everything else as in ../neighbours/ (prev's exchange check,
# probe, judge and prompt files)
bash docs/results/guard_quality/input-check-swap.sh $D prev/input-states prev/bundle-clf/probe prev/clf prev-judge \
  prev prev-demo
