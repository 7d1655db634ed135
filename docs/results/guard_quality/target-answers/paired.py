"""Two guarded-generation item files of the same prompts (`cguard bench jailbreak`'s items.jsonl), side by side:
outcomes per group, and every item whose outcome or judgement differs.

    python paired.py BEFORE/items.jsonl AFTER/items.jsonl
"""

import json
import sys
from collections import Counter


def load(path: str) -> dict[str, dict]:
    with open(path, encoding="utf-8") as fh:
        return {row["id"]: row for row in map(json.loads, fh)}


def outcomes(rows: dict[str, dict], ids: list[str]) -> Counter:
    counts: Counter = Counter()
    for i in ids:
        row = rows[i]
        counts[(row["group"], row["guarded"]["status"])] += 1
        if row["group"] != "benign" and row["guarded"]["judgement"]["unsafe"]:
            counts[(row["group"], "judged unsafe")] += 1
    return counts


def main(before_path: str, after_path: str) -> None:
    before, after = load(before_path), load(after_path)
    ids = [i for i in before if i in after]
    print(f"{len(ids)} items in both ({len(before)} before, {len(after)} after)")
    for name, rows in (("before", before), ("after", after)):
        print(f"{name}: " + ", ".join(f"{g} {s} {n}" for (g, s), n in sorted(outcomes(rows, ids).items())))
    for i in ids:
        a, b = before[i]["guarded"], after[i]["guarded"]
        if (a["status"], a["judgement"]["unsafe"]) != (b["status"], b["judgement"]["unsafe"]):
            was = f"{a['status']} ({a['completion_tokens']} tokens, judged unsafe {a['judgement']['unsafe']})"
            now = f"{b['status']} ({b['completion_tokens']}, {b['judgement']['unsafe']})"
            print(f"  {before[i]['group']}: {was} -> {now}: {before[i]['prompt'][:90]!r}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
