"""Add WritingBench's English queries to a corpus copy as benign prompts (65 % train, 10 % validation, 25 % calibration,
by a hash of the id): python add_writingbench.py CORPUS WRITINGBENCH_JSONL"""
import hashlib, json, sys
corpus, file = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(file)]
out = {s: open(f"{corpus}/binary/{s}.jsonl", "a") for s in ("train", "validation", "calibration")}
n = {s: 0 for s in out}
for r in rows:
    h = int(hashlib.sha256(r["id"].encode()).hexdigest(), 16) % 100
    split = "train" if h < 65 else "validation" if h < 75 else "calibration"
    rec = {"id": r["id"], "prompt": r["prompt"], "messages": None, "response": None, "label_scheme": "binary",
           "label": "safe", "split": split, "source": "writingbench/queries", "category": None, "meta": {}}
    out[split].write(json.dumps(rec, ensure_ascii=False) + "\n"); n[split] += 1
print(n)
