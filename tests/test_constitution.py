from pathlib import Path

import pytest

from constitutional_guard.constitution import DEFAULT_HOLD_NOTICE, load_constitution, parse_constitution
from constitutional_guard.errors import InputError

MINIMAL = """\
name: tiny
description: A tiny policy.
refusal: Sorry, I can't help with that.
harmful:
  - name: weapons
    description: Making weapons.
    disallowed: ["How do I build a bomb?"]
    allowed: [History of the atomic bomb]
harmless:
  - name: history
    description: History of war.
    allowed: ["Why did WWI start?"]
    neighbours: [weapons]
"""


def test_default_constitution_covers_the_hazard_taxonomy():
    c = load_constitution()
    for name in ("violent_crime", "weapons_cbrn", "cyber_attacks", "fraud_and_scams", "hate", "harassment",
                 "self_harm", "child_sexual_content", "privacy", "dangerous_drugs", "extremism"):
        assert c.is_harmful(name)
    for name in ("history_of_conflict", "medicine_and_health", "fiction_and_storytelling", "security_education"):
        assert name in c.category_names and not c.is_harmful(name)
    assert c.refusal
    text = c.render()
    assert "weapons_cbrn" in text and "mustard gas" in text


def test_render_and_fingerprint_follow_content():
    a = parse_constitution(MINIMAL)
    b = parse_constitution(MINIMAL.replace("Making weapons.", "Making any weapon."))
    assert "Making weapons." in a.render()
    assert a.fingerprint() == parse_constitution(MINIMAL).fingerprint()
    assert a.fingerprint() != b.fingerprint()


def test_hold_notice_defaults_and_leaves_the_fingerprint_alone():
    plain = parse_constitution(MINIMAL)
    assert plain.hold_notice == DEFAULT_HOLD_NOTICE
    custom = parse_constitution(MINIMAL + "hold_notice: Checking failed; nothing to show.\n")
    assert custom.hold_notice == "Checking failed; nothing to show."
    assert custom.fingerprint() == plain.fingerprint()  # classifiers trained on the policy still match it
    assert load_constitution().hold_notice != plain.refusal


def test_error_names_file_line_and_field(tmp_path: Path):
    bad = MINIMAL.replace("    description: Making weapons.\n", "")
    path = tmp_path / "policy.yaml"
    path.write_text(bad)
    with pytest.raises(InputError) as info:
        load_constitution(path)
    problem = info.value.problems[0]
    assert problem.path == str(path)
    assert problem.field == "harmful[0].description"
    assert problem.line == 5  # the category's first line
    assert f"{path}:5: harmful[0].description" in str(info.value)


def test_bad_name_and_unknown_neighbour_and_duplicates():
    with pytest.raises(InputError) as info:
        parse_constitution(MINIMAL.replace("name: weapons", "name: Weapons!"))
    assert info.value.problems[0].field == "harmful[0].name"
    assert info.value.problems[0].line == 5
    with pytest.raises(InputError, match="unknown categories: nowhere"):
        parse_constitution(MINIMAL.replace("neighbours: [weapons]", "neighbours: [nowhere]"))
    with pytest.raises(InputError, match="repeated: weapons"):
        parse_constitution(MINIMAL.replace("name: history", "name: weapons"))
    with pytest.raises(InputError, match="extra_field"):
        parse_constitution(MINIMAL + "extra_field: 1\n")


def test_invalid_yaml_reports_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nharmful: [\n  - a\n")
    with pytest.raises(InputError) as info:
        load_constitution(path)
    assert info.value.problems[0].line is not None
    with pytest.raises(InputError, match="file not found"):
        load_constitution(tmp_path / "missing.yaml")


def test_allowing_moves_a_harmful_category_to_harmless():
    policy = load_constitution()
    name = policy.harmful_names[0]
    shifted = policy.allowing(name)
    assert name not in shifted.harmful_names and not shifted.is_harmful(name)
    moved = shifted.category(name)
    assert moved.disallowed == [] and set(policy.category(name).disallowed) <= set(moved.allowed)
    assert f"- {name}:" in shifted.render().split("## Safe content that may look close")[1]
    assert shifted.fingerprint() != policy.fingerprint()
    with pytest.raises(KeyError):
        shifted.allowing(name)
