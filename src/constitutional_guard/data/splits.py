"""Deduplication and leakage-free splits: every prompt (and every template family) lives in one split."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from constitutional_guard.data.schema import SPLITS, Record
from constitutional_guard.data.sources.package_data import stable_id

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.7, "validation": 0.1, "calibration": 0.1, "test": 0.1}
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
