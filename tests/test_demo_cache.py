"""The demo's cache: reused while the recipe is unchanged, rebuilt when version, settings, constitution or data move."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from constitutional_guard import demo
from constitutional_guard.guard.bundle import BUNDLE_FILE

STAGES = ["corpus", "probe", "classifier", "input-classifier"]


@pytest.fixture
def fake_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stages that only record that they ran and leave a marker file behind."""
    monkeypatch.setenv("CGUARD_CACHE_DIR", str(tmp_path / "cache"))
    ran: list[str] = []

    def stage(name: str):
        def run(work: Path, *args, **kwargs) -> Path:
            ran.append(name)
            (work / name).mkdir(parents=True, exist_ok=True)
            return work / name

        return run

    monkeypatch.setattr(demo, "ensure_corpus", stage("corpus"))
    monkeypatch.setattr(demo, "ensure_probe", stage("probe"))
    monkeypatch.setattr(demo, "ensure_classifier", stage("classifier"))
    monkeypatch.setattr(demo, "ensure_input_classifier", stage("input-classifier"))

    def bundle(out_dir: Path, *args, **kwargs) -> Path:
        ran.append("bundle")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / BUNDLE_FILE).write_text("stub", encoding="utf-8")
        return Path(out_dir)

    monkeypatch.setattr("constitutional_guard.guard.bundle.build_bundle", bundle)
    return ran


def test_a_cached_demo_is_reused_until_its_recipe_changes(fake_stages: list[str], tmp_path: Path) -> None:
    logs: list[str] = []
    first = demo.ensure_demo_bundle(log=logs.append)
    assert fake_stages == [*STAGES, "bundle"]
    assert demo.ensure_demo_bundle(log=logs.append) == first and len(fake_stages) == 5  # cached
    leftover = first.parent / "corpus" / "old-artifact"
    leftover.write_text("from the previous recipe", encoding="utf-8")

    demo.ensure_demo_bundle(settings=demo.DemoSettings(classifier_train_records=100), log=logs.append)
    assert fake_stages[5:] == [*STAGES, "bundle"]
    assert not leftover.exists() and any("another recipe" in line for line in logs)


def test_a_different_set_of_data_wheels_rebuilds_the_demo(
    fake_stages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from constitutional_guard.data.sources.package_data import TEMAQ, DataPackage

    demo.ensure_demo_bundle(log=lambda _: None)
    assert demo.demo_recipe(demo.DemoSettings())["data_packages"]["temaq-abliterated"] == TEMAQ.installed_version()
    monkeypatch.setattr(DataPackage, "installed_version", lambda self: "0+other")  # other versions installed
    demo.ensure_demo_bundle(log=lambda _: None)
    assert fake_stages == [*STAGES, "bundle", *STAGES, "bundle"]


def test_a_bundle_without_a_recipe_is_rebuilt(fake_stages: list[str]) -> None:
    bundle = demo.default_bundle_dir()
    bundle.mkdir(parents=True)
    (bundle / BUNDLE_FILE).write_text("from an older version", encoding="utf-8")
    demo.ensure_demo_bundle(log=lambda _: None)
    assert fake_stages == [*STAGES, "bundle"]


def test_without_an_input_encoder_the_exchange_classifier_checks_prompts(fake_stages: list[str]) -> None:
    demo.ensure_demo_bundle(settings=demo.DemoSettings(input_classifier_base=""), log=lambda _: None)
    assert fake_stages == ["corpus", "probe", "classifier", "bundle"]
    recipe = demo.demo_recipe(demo.DemoSettings())
    assert recipe["shipped"]  # the shipped data files are part of the recipe, and so are the shipped classifiers
    shipped = {"classifier/head.safetensors", "input-classifier/calibration_scores.json"}
    assert shipped <= set(recipe["shipped_classifiers"])


def test_a_new_shipped_classifier_rebuilds_the_demo(fake_stages: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    demo.ensure_demo_bundle(log=lambda _: None)
    new_head = {"classifier/head.safetensors": "new"}
    monkeypatch.setattr("constitutional_guard.demo_shipped.shipped_digests", lambda: new_head)
    demo.ensure_demo_bundle(log=lambda _: None)
    assert fake_stages == ["corpus", "probe", "classifier", "input-classifier", "bundle"] * 2


def test_the_demo_trains_and_calibrates_its_two_classifiers(
    tiny_encoder_dir: Path, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_exchange_classifier import write_corpus

    from constitutional_guard.classifiers.base import load_classifier

    monkeypatch.setenv("CGUARD_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "corpus", per_split=48)
    settings = demo.DemoSettings(
        classifier_base=str(tiny_encoder_dir), input_classifier_base=str(tiny_encoder_dir),
        classifier_train_records=200, input_classifier_train_prompts=200, classifier_eval_records=100,
        classifier_test_records=30,
        classifier_head="linear", classifier_cross_source_folds=2,
        target_model=str(tiny_lm_dir), input_classifier_states_layers="2", classifier_states_layers="2",
    )
    logs: list[str] = []
    work = tmp_path / "work"
    exchanges = load_classifier(demo.ensure_classifier(work, corpus, settings, logs.append))
    prompts = load_classifier(demo.ensure_input_classifier(work, corpus, settings, logs.append))
    assert exchanges.config.prompt_block is not None and prompts.config.prompt_block is None  # prompts alone: one pair
    assert exchanges.config.training["inputs"] == "all" and prompts.config.training["inputs"] == "prompts"
    assert exchanges.config.calibration["test_records"] == prompts.config.calibration["test_records"] == 30
    assert "cross-source" in prompts.config.calibration["calibration_scores"]
    # the input check reads the target model's states beside its encoder; the exchange classifier does not
    assert prompts.config.states["model"] == str(tiny_lm_dir) and prompts.config.states["layers"] == [2]
    assert exchanges.config.states["model"] == str(tiny_lm_dir) and exchanges.config.states["layers"] == [2]
    # the exchange classifier's prompt pair is unused beside an input check: no refits for it
    assert "cross-source" not in exchanges.config.calibration["calibration_scores"]
    assert prompts.config.calibration["block_fpr_target"] == settings.classifier_prompt_block_fpr
    assert any(line.startswith("input check: calibrated block threshold") and "(prompts)" not in line for line in logs)
    assert any(line.startswith("classifier: calibrated block threshold") and "(prompts)" in line for line in logs)
    assert not (work / "input-classifier-training").exists()
    demo.ensure_input_classifier(work, corpus, settings, logs.append)
    assert logs[-1].startswith("input check: cached")

    alone = dataclasses.replace(settings, input_classifier_base="")  # the exchange classifier checks prompts
    exchanges = load_classifier(demo.ensure_classifier(tmp_path / "alone", corpus, alone, logs.append))
    assert "cross-source" in exchanges.config.calibration["calibration_scores"]
