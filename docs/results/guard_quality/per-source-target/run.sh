#!/usr/bin/env bash
# Block thresholds of the end-to-end input check from a pooled against a per-source false-block target, on the
# same cross-source calibration scores, applied to the scores of ../writingbench-train/ (its "before" check) and
# ../demo-folds/instruction-sets-e2e/ (WritingBench). From the folder the input check was trained in (it reads
# e2e/corpus for the fold refits); prev holds ../everyday/run.sh's e2e folder.
set -euo pipefail
D=docs/results/guard_quality/per-source-target
mkdir -p scores && cp eval-wb/scores/before-*/*.jsonl scores/ && cp $D/../demo-folds/instruction-sets-e2e/scores/*/writingbench-*.jsonl scores/
python $D/per_source.py prev/input-states prev/corpus scores $D/results.json   # 4 min: five head refits
