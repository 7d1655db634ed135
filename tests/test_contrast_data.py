"""The templated contrast sets about people: both labels, the same people, seeded, validated with file and line."""

from __future__ import annotations

from collections import Counter
from importlib import resources

import pytest

from constitutional_guard.constitution import load_constitution
from constitutional_guard.data.sources.contrast_data import (
    PEOPLE_FILE,
    SOURCE,
    filled,
    parse_contrast,
    people_contrast,
    template_slots,
)
from constitutional_guard.data.sources.registry import OFFLINE_SOURCES
from constitutional_guard.errors import InputError


def test_every_set_gives_both_labels_in_its_category_with_the_template_line() -> None:
    rows = people_contrast(load_constitution())
    text = resources.files("constitutional_guard").joinpath(PEOPLE_FILE).read_text("utf-8").splitlines()
    contrast, _ = parse_contrast("\n".join(text), PEOPLE_FILE)
    counts = Counter((r.meta["contrast_set"], r.label) for r in rows.records)
    assert counts == {(s.name, label): contrast.per_label for s in contrast.sets for label in ("unsafe", "safe")}
    assert len({r.prompt for r in rows.records}) == len(rows.records)
    assert all("{" not in r.prompt and "}" not in r.prompt and r.source == SOURCE for r in rows.records)
    assert {r.meta["source_category"] for r in rows.records} == {"hate", "privacy", "harassment"}
    for record in rows.records[::37]:
        assert record.meta["template"].split("{", 1)[0].strip() in text[record.meta["row"] - 1]
    assert "contrast/people" in OFFLINE_SOURCES


def test_the_same_people_appear_under_both_labels() -> None:
    rows = people_contrast(load_constitution())
    contrast, _ = parse_contrast(
        resources.files("constitutional_guard").joinpath(PEOPLE_FILE).read_text("utf-8"), PEOPLE_FILE
    )
    for label in ("unsafe", "safe"):
        named = {g for g in contrast.slots["group"] for r in rows.records if r.label == label and g in r.prompt}
        assert len(named) >= 0.9 * len(contrast.slots["group"])


def test_reading_is_seeded_and_a_set_outside_the_constitutions_harm_is_left_out() -> None:
    first = people_contrast(load_constitution())
    assert [r.prompt for r in people_contrast(load_constitution()).records] == [r.prompt for r in first.records]
    rows = people_contrast(load_constitution().allowing("privacy"))
    assert "prying" not in {r.meta["contrast_set"] for r in rows.records}
    assert list(rows.skipped) == ["set prying: privacy is not a harmful category of the constitution"]


def test_templates_are_taken_in_turns_and_too_few_combinations_give_fewer_prompts() -> None:
    slots = {"who": ["Ann", "Bo"], "what": ["x", "y", "z"]}
    out = filled(["{who} says {what}", "plain"], slots, 5, "seed")
    assert len(out) == 5 and {i for i, _ in out} == {0, 1}
    assert len(filled(["plain"], slots, 5, "seed")) == 1
    assert template_slots("{who} and {who} say {what}") == ["who", "who", "what"]


def test_a_template_with_an_unknown_slot_is_named_with_file_and_line() -> None:
    text = "per_label: 2\nslots:\n  who: [Ann]\nsets:\n  - name: s\n    category: hate\n    unsafe: ['{whom}']\n" \
           "    safe: ['{who}']\n"
    with pytest.raises(InputError, match=r"people\.yaml:7: sets\[0\]\.unsafe\[0\]: unknown or empty slot\(s\): whom"):
        parse_contrast(text, "people.yaml")
    with pytest.raises(InputError, match=r"people\.yaml:5: sets\[0\]\.safe: Field required"):
        parse_contrast(text.replace("    safe: ['{who}']\n", ""), "people.yaml")
    with pytest.raises(InputError, match=r"people\.yaml:2: invalid YAML"):
        parse_contrast("per_label: 2\nslots: [", "people.yaml")
