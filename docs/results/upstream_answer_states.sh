#!/usr/bin/env bash
# The exchange check in front of vLLM, before (it reads the answer's states itself) and after (it takes the stream
# monitor's), alternating, two rounds. From the repository root, with vLLM serving SmolLM2 on port 8011 (upstream.md;
# here --dtype float32, this CPU has no native bfloat16) and BEFORE=the src folder of a checkout of 75c32df:
#   BEFORE=/tmp/before/src bash docs/results/upstream_answer_states.sh "$(cguard demo --print-bundle-dir)"
set -u
B=${1:?bundle}
for round in 1 2; do
  for v in before after; do
    if [ $v = before ]; then export PYTHONPATH=${BEFORE:?a checkout of the revision before, its src}; else export PYTHONPATH=$PWD/src; fi
    echo "== $v round $round load $(cut -d' ' -f1 /proc/loadavg) $(date +%T)"
    OMP_NUM_THREADS=1 python benchmarks/upstream_stages.py --guard $B \
      --upstream http://127.0.0.1:8011/v1 --concurrency 1,4,16 --out docs/results/upstream_answer_states_${v}_${round}.json 2>&1 | grep -v "Loading weights" | tail -12
  done
done
