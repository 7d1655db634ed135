"""Seeded samples: uniform caps and stratified caps keep their groups' shares and are reproducible."""

from __future__ import annotations

from constitutional_guard.sampling import sample_stratified, sample_uniform


def test_uniform_cap_is_seeded_and_leaves_small_lists_alone():
    items = list(range(50))
    assert sample_uniform(items, None, 0) is items and sample_uniform(items, 50, 0) is items
    picked = sample_uniform(items, 10, 3)
    assert len(set(picked)) == 10 and picked == sample_uniform(items, 10, 3)
    assert picked != sample_uniform(items, 10, 4)


def test_stratified_cap_keeps_shares_and_order():
    items = [("a", i) for i in range(30)] + [("b", i) for i in range(10)]
    picked = sample_stratified(items, 8, 0, key=lambda x: x[0])
    assert [x[0] for x in picked].count("a") == 6 and [x[0] for x in picked].count("b") == 2
    assert picked == sorted(picked, key=items.index)
    assert picked == sample_stratified(items, 8, 0, key=lambda x: x[0])
    assert sample_stratified(items, 100, 0, key=lambda x: x[0]) == items
