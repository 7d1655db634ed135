"""The demo's shipped classifiers: exported from trained ones, used only for the recipe and corpus they were made
from, calibrated on their shipped scores exactly as the trained ones were."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from constitutional_guard import demo, demo_shipped
from constitutional_guard.classifiers.base import load_classifier
from constitutional_guard.data.corpus import load_split, split_path
from constitutional_guard.errors import InputError


def tiny_settings(encoder: Path, lm: Path) -> demo.DemoSettings:
    return demo.DemoSettings(
        classifier_base=str(encoder), input_classifier_base=str(encoder), input_classifier_train_prompts=200,
        classifier_train_records=200,
        classifier_eval_records=100, classifier_test_records=30, classifier_head="linear",
        classifier_cross_source_folds=2, target_model=str(lm), input_classifier_states_layers="2",
        classifier_states_layers="2",
    )


def test_the_corpus_fingerprint_covers_what_shapes_the_head(tmp_path: Path) -> None:
    from test_exchange_classifier import write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    first = demo_shipped.corpus_fingerprint(corpus)
    test_split = split_path(corpus, "test")
    test_split.write_text(test_split.read_text() + "\n")
    assert demo_shipped.corpus_fingerprint(corpus) == first  # the test split shapes nothing
    for split in ("train", "validation", "calibration"):
        path = split_path(corpus, split)
        original = path.read_text()
        path.write_text(original.replace("Tell me", "Tell us", 1))
        assert demo_shipped.corpus_fingerprint(corpus) != first, split
        path.write_text(original)
    assert demo_shipped.corpus_fingerprint(corpus) == first


@pytest.mark.parametrize("stage", ["input-classifier", "classifier"])
def test_an_exported_classifier_serves_a_demo_of_the_same_recipe_and_corpus(
    stage: str, tiny_encoder_dir: Path, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_exchange_classifier import write_corpus

    monkeypatch.setenv("CGUARD_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "corpus", per_split=48)
    settings = tiny_settings(tiny_encoder_dir, tiny_lm_dir)
    ensure = demo.ensure_input_classifier if stage == "input-classifier" else demo.ensure_classifier
    recipe = demo.shipped_recipes(settings)[stage]
    logs: list[str] = []
    root = tmp_path / "shipped"
    trained = load_classifier(ensure(tmp_path / "work", corpus, settings, logs.append, export=root))
    assert any("head on 200" in line for line in logs)
    made = json.loads((root / stage / demo_shipped.SHIPPED_FILE).read_text())
    assert made["recipe"] == recipe
    assert made["corpus_fingerprint"] == demo_shipped.corpus_fingerprint(corpus)
    exported = json.loads((root / stage / demo_shipped.CONFIG_FILE).read_text())
    assert exported["training"]["data_dir"] == ""  # no path of the machine that made it

    # a new demo with the same recipe and corpus installs it: no training, same thresholds and scores
    monkeypatch.setattr(demo_shipped, "SHIPPED_DIR", root)

    def no_training(*args, **kwargs):
        raise AssertionError("the shipped classifier should have been used")

    monkeypatch.setattr("constitutional_guard.classifiers.embedding_training.train", no_training)
    logs.clear()
    installed_dir = ensure(tmp_path / "again", corpus, settings, logs.append)
    installed = load_classifier(installed_dir)
    assert any("the shipped linear head" in line for line in logs)
    assert installed.thresholds == trained.thresholds and installed.prompt_thresholds == trained.prompt_thresholds
    assert installed.config.calibration["calibration_scores"] == trained.config.calibration["calibration_scores"]
    assert ("cross-source" in installed.config.calibration["calibration_scores"]) == (stage == "input-classifier")
    assert installed.config.training["data_dir"] == str(corpus)
    assert (installed_dir / demo_shipped.SHIPPED_FILE).exists()  # says where the head came from
    records = load_split(corpus, "test")[:8]
    items = [(r.prompt_text, r.response) for r in records]
    np.testing.assert_allclose(installed.probabilities(items), trained.probabilities(items), rtol=1e-5)

    # asked to train, the demo drops the installed one
    monkeypatch.undo()
    monkeypatch.setenv("CGUARD_CACHE_DIR", str(tmp_path / "cache"))
    logs.clear()
    retrained = ensure(tmp_path / "again", corpus, settings, logs.append, train=True)
    assert not (retrained / demo_shipped.SHIPPED_FILE).exists()
    assert any("head on 200" in line for line in logs)


def test_a_shipped_classifier_of_another_recipe_or_corpus_is_not_used(tmp_path: Path) -> None:
    from test_exchange_classifier import write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    settings = demo.DemoSettings()
    recipe = demo.input_check_recipe(settings)
    found, why = demo_shipped.ShippedClassifier.find("input-classifier", corpus, recipe, tmp_path)
    assert found is None and "no input-classifier ships" in why
    folder = tmp_path / "input-classifier"
    folder.mkdir()
    made = {"command": "x", "recipe": recipe, "corpus_fingerprint": demo_shipped.corpus_fingerprint(corpus)}
    (folder / demo_shipped.SHIPPED_FILE).write_text(json.dumps(made))
    found, _ = demo_shipped.ShippedClassifier.find("input-classifier", corpus, recipe, tmp_path)
    assert found is not None
    other = demo.input_check_recipe(dataclasses.replace(settings, input_classifier_train_prompts=100, seed=3))
    found, why = demo_shipped.ShippedClassifier.find("input-classifier", corpus, other, tmp_path)
    assert found is None and "other settings (input_classifier_train_prompts, seed)" in why
    # thresholds come from the shipped scores at the demo's own targets: changing a target keeps the head
    targets = dataclasses.replace(settings, classifier_prompt_block_fpr=0.02, classifier_hold_rate=0.05)
    assert demo.input_check_recipe(targets) == recipe
    path = split_path(corpus, "calibration")
    path.write_text(path.read_text() + path.read_text().splitlines()[0] + "\n")
    found, why = demo_shipped.ShippedClassifier.find("input-classifier", corpus, recipe, tmp_path)
    assert found is None and "another corpus" in why
    for broken in ("{", "[]", '{"recipe": 3}'):
        (folder / demo_shipped.SHIPPED_FILE).write_text(broken)
        with pytest.raises(InputError, match=r"shipped\.json"):
            demo_shipped.ShippedClassifier.find("input-classifier", corpus, recipe, tmp_path)


def test_the_exchange_classifiers_recipe_names_its_prompt_calibration() -> None:
    settings = demo.DemoSettings()
    assert demo.classifier_recipe(settings)["cross_source_folds"] == 0  # the input check checks prompts
    alone = dataclasses.replace(settings, input_classifier_base="")
    assert demo.classifier_recipe(alone)["cross_source_folds"] == settings.classifier_cross_source_folds


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        ({"ids": ["calibration-0"], "scores": [0.5]}, "calibration-1"),
        ({"ids": ["a", "b"], "scores": [0.5]}, "no usable score"),
        (None, "finite"),
    ],
)
def test_shipped_calibration_scores_must_cover_the_calibration_split(
    tmp_path: Path, scores: dict | None, message: str
) -> None:
    from test_exchange_classifier import write_corpus

    calibration = load_split(write_corpus(tmp_path / "corpus", per_split=4), "calibration")
    if scores is None:
        scores = {"ids": [r.id for r in calibration], "scores": [0.1, math.nan, 0.2, 0.3]}
    (tmp_path / demo_shipped.SCORES_FILE).write_text(json.dumps({"scores_from": "x", **scores}))
    with pytest.raises(InputError, match=message) as error:
        demo_shipped.ShippedClassifier(tmp_path, "test").calibration_scores(calibration)
    assert demo_shipped.SCORES_FILE in str(error.value)


@pytest.mark.parametrize(
    ("stage", "encoder", "states"), [("input-classifier", 768, 576), ("classifier", 384, 576)]
)
def test_the_shipped_classifiers_were_made_with_the_demo_defaults(stage: str, encoder: int, states: int) -> None:
    """When the demo's settings that shape a classifier change, the shipped files must be made again
    (``cguard demo --export-classifiers DIR``); otherwise every first run trains for hours."""
    from constitutional_guard.classifiers.embedding import EmbeddingConfig, load_head
    from constitutional_guard.config_io import load_config

    folder = demo_shipped.SHIPPED_DIR / stage
    made = json.loads((folder / demo_shipped.SHIPPED_FILE).read_text())
    settings = demo.DemoSettings()
    assert made["recipe"] == demo.shipped_recipes(settings)[stage]
    config = load_config(EmbeddingConfig, folder / demo_shipped.CONFIG_FILE)
    inputs = "prompts" if stage == "input-classifier" else "all"
    assert config.training["inputs"] == inputs and config.head == settings.classifier_head
    assert config.states["model"] == settings.target_model and config.states["layers"] == [18]
    assert config.states["dtype"] == "auto"  # bfloat16 only where the hardware multiplies it natively
    assert config.prompt_weight == (settings.classifier_prompt_weight if stage == "classifier" else 0.0)
    head = load_head(folder / demo_shipped.HEAD_FILE)
    # prompt and answer (two pools of the encoder's hidden size each), a has-answer flag, two pools of states
    assert head.n_features == 2 * (2 * encoder) + 1 + 2 * states
    scores = json.loads((folder / demo_shipped.SCORES_FILE).read_text())
    assert len(scores["ids"]) == len(set(scores["ids"])) == len(scores["scores"]) > 1000
    assert all(0.0 <= s <= 1.0 for s in scores["scores"])
