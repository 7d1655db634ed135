"""Deduplication and leakage-free splits: every prompt (and every template family) lives in one split."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from constitutional_guard.data.schema import SPLITS, Record, stable_id

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.65, "validation": 0.1, "calibration": 0.15, "test": 0.1}
"""Calibration gets 15 %: benign exchanges are the scarce kind, and a hold-rate target of 1 % needs at least
1,000 of them (and of benign prompts) to be set to within a fraction of a point."""
_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")


def normalize_text(text: str) -> str:
    """Case-, whitespace- and edge-punctuation-insensitive form of a text, for equality tests."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _EDGE_PUNCT.sub("", _SPACE.sub(" ", folded).strip())


def prompt_key(record: Record) -> str:
    """The group a record is split by: its base prompt (before any augmentation), normalised."""
    return normalize_text(str(record.meta.get("base_prompt") or record.prompt_text))


@dataclass
class DedupReport:
    kept: int = 0
    duplicates: int = 0
    conflicting: int = 0
    conflicting_keys: list[str] = field(default_factory=list)


def deduplicate(records: Sequence[Record]) -> tuple[list[Record], DedupReport]:
    """Drop repeated (scheme, prompt, response) items; drop every copy whose copies disagree on the label."""
    by_key: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for record in records:
        key = (record.label_scheme, prompt_key(record), normalize_text(record.response or ""))
        by_key[key].append(record)
    report = DedupReport()
    kept = []
    for key, group in by_key.items():
        if len({r.label for r in group}) > 1:
            report.conflicting += len(group)
            report.conflicting_keys.append(key[1][:80])
            continue
        kept.append(group[0])
        report.duplicates += len(group) - 1
    report.kept = len(kept)
    return kept, report


def _allocate(n: int, fractions: dict[str, float]) -> list[str]:
    """Split names for ``n`` ordered groups: proportional, and at least one per split when n allows."""
    names = list(fractions)
    counts = {s: int(n * fractions[s]) for s in names}
    if n >= len(names):
        for s in names:
            counts[s] = max(counts[s], 1)
    while sum(counts.values()) > n:
        largest = max(names, key=lambda s: counts[s])
        counts[largest] -= 1
    rest = n - sum(counts.values())
    counts[names[0]] += rest
    return [s for s in names for _ in range(counts[s])]


def assign_splits(
    records: Sequence[Record],
    seed: int,
    fractions: dict[str, float] | None = None,
    key: Callable[[Record], str] = prompt_key,
) -> list[Record]:
    """Copies of ``records`` with ``split`` set, grouped by ``key`` and stratified by the labels a group holds.

    All records sharing a key land in one split; within each stratum (the set of labels a group
    carries) groups are ordered by a seeded hash and cut by ``fractions``, so every split receives
    every label whenever a stratum has at least as many groups as there are splits.
    """
    fractions = fractions or DEFAULT_FRACTIONS
    if set(fractions) != set(SPLITS) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ValueError(f"fractions must cover {SPLITS} and sum to 1, got {fractions}")
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[key(record)].append(record)
    strata: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for group_key, members in groups.items():
        strata[tuple(sorted({r.label for r in members}))].append(group_key)
    split_of: dict[str, str] = {}
    for _, keys in sorted(strata.items()):
        ordered = sorted(keys, key=lambda k: stable_id(str(seed), k))
        for group_key, split in zip(ordered, _allocate(len(ordered), fractions), strict=True):
            split_of[group_key] = split
    return [r.model_copy(update={"split": split_of[key(r)]}) for r in records]


def assign_families(families: Sequence[str], seed: int, fractions: dict[str, float] | None = None) -> dict[str, str]:
    """The split each jailbreak-template family belongs to: seeded order, cut by ``fractions``."""
    ordered = sorted(set(families), key=lambda f: stable_id(str(seed), "family", f))
    return dict(zip(ordered, _allocate(len(ordered), fractions or DEFAULT_FRACTIONS), strict=True))


NEAR_DUPLICATE_JACCARD = 0.8
_WORD = re.compile(r"\w+")


def shingles(text: str, size: int = 3) -> set[str]:
    """Word ``size``-grams of the normalised text (the words themselves for shorter texts)."""
    words = _WORD.findall(normalize_text(text))
    if len(words) <= size:
        return {" ".join(words)}
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def near_duplicate_groups(
    texts: Sequence[str], threshold: float = NEAR_DUPLICATE_JACCARD, num_perm: int = 64
) -> list[int]:
    """A group index per text: texts whose word-shingle Jaccard similarity reaches ``threshold`` share one.

    Candidates come from MinHash LSH; every candidate pair is confirmed on the exact shingle sets, and
    groups are the connected components of confirmed pairs (index of the group's first text).
    """
    from datasketch import MinHash, MinHashLSH

    sets = [shingles(t) for t in texts]
    hashes = MinHash.bulk([[s.encode("utf-8") for s in group] for group in sets], num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, minhash in enumerate(hashes):
        for j in lsh.query(minhash):
            if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
        lsh.insert(i, minhash)
    return [find(i) for i in range(len(texts))]


def merge_near_duplicates(
    records: Sequence[Record], threshold: float = NEAR_DUPLICATE_JACCARD
) -> tuple[list[Record], DedupReport]:
    """Drop near copies that agree on the label; keep near copies that disagree, grouped into one split.

    Texts are compared per label scheme as prompt (+ response). A group whose copies carry different labels
    is a minimal pair (a benign and a harmful request that read alike): every copy stays, and each records
    the group's first prompt as ``base_prompt`` so splitting keeps them together.
    """
    report = DedupReport()
    kept: list[Record] = []
    by_scheme: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_scheme[record.label_scheme].append(record)
    for members in by_scheme.values():
        groups: dict[int, list[Record]] = defaultdict(list)
        for record, group in zip(
            members, near_duplicate_groups([f"{r.prompt_text} {r.response or ''}" for r in members], threshold),
            strict=True,
        ):
            groups[group].append(record)
        for group in groups.values():
            if len({r.label for r in group}) == 1:
                kept.append(group[0])
                report.duplicates += len(group) - 1
                continue
            report.conflicting += len(group)
            report.conflicting_keys.append(prompt_key(group[0])[:80])
            anchor = group[0].meta.get("base_prompt") or group[0].prompt_text
            kept += [r.model_copy(update={"meta": {**r.meta, "base_prompt": anchor}}) for r in group]
    report.kept = len(kept)
    return kept, report
