"""Deterministic samples of records (or anything): a seeded uniform cap and a seeded stratified cap."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def sample_uniform(items: list[T], limit: int | None, seed: int) -> list[T]:
    """At most ``limit`` items drawn uniformly with ``seed`` (in the drawn order); all of them, as given, when they
    fit."""
    if limit is None or len(items) <= limit:
        return items
    return random.Random(seed).sample(items, limit)


def sample_stratified(items: Sequence[T], limit: int | None, seed: int, key: Callable[[T], Hashable]) -> list[T]:
    """At most ``limit`` items in their original order, each group of ``key`` keeping its share (rounded).

    Groups are drawn from in sorted order of their keys, one seeded generator for all, so a sample is
    reproducible; all items, as given, when they fit."""
    if limit is None or len(items) <= limit:
        return list(items)
    groups: dict[Hashable, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(key(item), []).append(index)
    rng = random.Random(seed)
    keep: list[int] = []
    for name in sorted(groups):  # type: ignore[type-var]
        indices = groups[name]
        keep += rng.sample(indices, min(len(indices), round(limit * len(indices) / len(items))))
    return [items[i] for i in sorted(keep)]
