#!/usr/bin/env bash
# Counting the input check's false-block target over calibration sources (`--block-fpr-over`) against the pooled
# count. From the repository root. lso-everyday is ../everyday/run.sh's leave-source-out folder (scores.jsonl
# included) and e2e its end-to-end folder (input-states, corpus); prev, prev-prompts and prev-judge are as there
# (the earlier guard's bundle, the prompt files and the judge of its guarded generation); e2e-scores holds
# ../writingbench-train/'s "before" eval scores and ../demo-folds/instruction-sets-e2e/'s WritingBench scores, e2e-wb
# and wb-scores ../writingbench-train/'s input check and its eval scores; demo-scores ../demo-folds/'s score folders.
set -euo pipefail
D=docs/results/guard_quality/block-fpr-over
cguard data build --out corpus --seed 0          # the corpus of ../everyday/ (its four splits byte-identical)
# leave-source-out, every family, the input check's recipe, false blocks counted over sources (lso/)
cguard classifier leave-source-out --data corpus --inputs prompts --base-model mpnet-base \
  --states-model smollm2-135m-instruct --states-layers 18 --block-fpr-over sources --output lso-sources   # 91 min beside other jobs
cp lso-sources/report.md lso-sources/results.json lso-sources/families.png $D/lso/
# every rule on the pooled run's cross-source scores (exact: every family is held out, so each calibration record
# was scored by its own fold); its sources row matches lso/ to the last digit
python $D/lso_rules.py lso-everyday/scores.jsonl $D/lso-rules.json
# the end-to-end input check and the one trained with WritingBench: thresholds by each rule from five folds of
# cross-source scores, applied to their `cguard classifier eval` scores (run from the folder their corpus path is
# relative to; 10 min each)
python $D/rules_e2e.py e2e/input-states e2e/corpus e2e-scores $D/e2e-input-check.json
python $D/rules_e2e.py e2e-wb/input-states e2e-wb/corpus wb-scores $D/wb-input-check.json
# the demo's shipped input check on its shipped cross-source scores
python $D/rules_demo.py src/constitutional_guard/demo_assets "$(dirname "$(cguard demo --print-bundle-dir)")/corpus" \
  $D/demo-input-check.json demo-scores/instruction-sets demo-scores/demo-eval
# guarded generation with the end-to-end input check recalibrated this way, everything else as in ../everyday/
cp -r e2e/input-states input-sources
cguard classifier calibrate --classifier input-sources --data e2e/corpus --block-fpr 0.05 --hold-rate 0.01 \
  --cross-source-prompts 5 --block-fpr-over sources --report $D/e2e-calibration-report.json   # block 0.4941
cguard guard build --out bundle-sources --probe prev/bundle/probe --classifier prev/bundle/classifier \
  --input-classifier input-sources --model smollm2-135m-instruct
cguard bench jailbreak --guard bundle-sources --judge prev-judge --harmful prev-prompts/harmful.jsonl --benign prev-prompts/benign.jsonl \
  --n-harmful 0 --n-jailbreak 0 --n-benign 200 --max-new-tokens 48 --batch-size 8 --out out-benign
cguard bench jailbreak --guard bundle-sources --judge prev-judge --harmful prev-prompts/harmful.jsonl --benign prev-prompts/benign.jsonl \
  --n-harmful 100 --n-jailbreak 100 --n-benign 0 --max-new-tokens 48 --batch-size 8 --out out-harmful
for half in benign harmful; do cp out-$half/report.md $D/report-$half.md; cp out-$half/summary.json $D/summary-$half.json; done
