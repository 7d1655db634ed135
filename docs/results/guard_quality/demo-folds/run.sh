#!/usr/bin/env bash
# The demo's input check with thresholds from five folds of sources (DemoSettings.classifier_cross_source_folds).
set -euo pipefail
D=docs/results/guard_quality/demo-folds
# re-export the shipped classifiers (9 min 18 s with features cached; export.log)
cguard demo --export-classifiers src/constitutional_guard/demo_assets | tee $D/export.log
# the demo's input check on the hand-written and look-alike sets (demo-eval/)
cguard eval -s demo="$(cguard demo --print-bundle-dir)/input_classifier" -d handwritten=benchmarks/handwritten_prompts.jsonl \
  -d figurative=benchmarks/figurative_prompts.jsonl --out $D/demo-eval
# the cascade on the demo bundle's benign prompts (full length: 256 of 256 tokens)
cguard bench latency --guard "$(cguard demo --print-bundle-dir)" --num-prompts 2 --new-tokens 128 --json /tmp/latency.json
