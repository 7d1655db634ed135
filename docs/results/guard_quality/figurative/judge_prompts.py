"""The zero-shot Qwen2.5-Coder-1.5B judge (the second check of `cguard data synthesize`) scoring prompt files alone:
python judge_prompts.py benchmarks/figurative_prompts.jsonl benchmarks/handwritten_prompts.jsonl > judge-prompts.log"""
import json, sys
from sklearn.metrics import roc_auc_score
from constitutional_guard.classifiers.constitutional import ConstitutionalClassifier
from constitutional_guard.constitution import load_constitution
clf = ConstitutionalClassifier.zero_shot("qwen2.5-coder-1.5b-instruct", load_constitution(None), dtype="bfloat16")
out = {}
for name in sys.argv[1:]:
    rows = [json.loads(l) for l in open(name)]
    s = [float(x) for x in clf.probabilities([(r["prompt"], None) for r in rows])]
    y = [r["label"] == "unsafe" for r in rows]
    print(name, "AUROC", roc_auc_score(y, s))
    for r, x in sorted(zip(rows, s), key=lambda t: -t[1]): print(f"  {x:.3f} {r['label']:6} {r['prompt'][:90]}")
    out[name] = [{"id": r["id"], "label": r["label"], "score": x} for r, x in zip(rows, s)]
