"""The zero-shot Qwen2.5-Coder-1.5B judge (constitution prompt, P(unsafe) of the next token) on exchanges of the
two families the exchange check ranks worst and of the target's own answers. It was never trained, so every record
is unseen: 60 of each label per family, seeded, originals only (no response prefixes or augmented copies).
python run.py CORPUS 120 results.json   # 42 min on the 2-core CPU, beside another job"""
import json, random, sys, time
import numpy as np
from sklearn.metrics import roc_auc_score
from constitutional_guard.classifiers.constitutional import ConstitutionalClassifier
from constitutional_guard.constitution import load_constitution

corpus, n_per, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fams = ["pyrit/harm_scored", "pyrit/objective_scored", "generated/smollm2-135m-instruct"]
rows = {f: [] for f in fams}
for split in ["train", "validation", "calibration", "test"]:
    for line in open(f"{corpus}/binary/{split}.jsonl"):
        r = json.loads(line)
        if r["source"] in rows and r["response"] and "~" not in r["id"]:
            rows[r["source"]].append(r)
rng = random.Random(0)
sample = []
for f in fams:
    by = {l: [r for r in rows[f] if r["label"] == l] for l in ("safe", "unsafe")}
    for l, rs in by.items():
        rng.shuffle(rs); sample += rs[: n_per // 2]
print({f: sum(r["source"] == f for r in sample) for f in fams}, flush=True)
clf = ConstitutionalClassifier.zero_shot("qwen2.5-coder-1.5b-instruct", load_constitution(None), dtype="bfloat16")
t = time.time(); scores = []
for i in range(0, len(sample), 8):
    chunk = sample[i:i+8]
    scores += list(clf.probabilities([(r["prompt"], r["response"]) for r in chunk]))
    print(i, round(time.time() - t), flush=True)
res = {}
for f in fams:
    idx = [i for i, r in enumerate(sample) if r["source"] == f]
    y = [sample[i]["label"] == "unsafe" for i in idx]; s = [float(scores[i]) for i in idx]
    res[f] = {"n": len(idx), "auroc": roc_auc_score(y, s)}
print(res)
json.dump({"results": res, "records": [{"id": r["id"], "label": r["label"], "source": r["source"], "score": float(s)} for r, s in zip(sample, scores)]}, open(out, "w"), indent=1)
