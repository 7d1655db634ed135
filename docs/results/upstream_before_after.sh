#!/usr/bin/env bash
# A change in front of vLLM, before and after, alternating, two rounds: benchmarks/upstream_stages.py at 1, 4 and 16
# streams, written to docs/results/upstream_NAME_{before,after}_{1,2}.json. From the repository root, with vLLM
# serving SmolLM2 on port 8011 (upstream.md; --dtype float32 on a CPU without native bfloat16) and BEFORE=the src
# folder of a checkout of the revision before the change:
#   BEFORE=/tmp/before/src bash docs/results/upstream_before_after.sh NAME "$(cguard demo --print-bundle-dir)"
set -u
NAME=${1:?name of the change}
B=${2:?bundle}
for round in 1 2; do
  for v in before after; do
    if [ $v = before ]; then export PYTHONPATH=${BEFORE:?a checkout of the revision before, its src}; else export PYTHONPATH=$PWD/src; fi
    echo "== $v round $round load $(cut -d' ' -f1 /proc/loadavg) $(date +%T)"
    OMP_NUM_THREADS=1 python benchmarks/upstream_stages.py --guard $B \
      --upstream http://127.0.0.1:8011/v1 --concurrency 1,4,16 --out docs/results/upstream_${NAME}_${v}_${round}.json 2>&1 | grep -v "Loading weights" | tail -12
  done
done
