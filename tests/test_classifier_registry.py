"""The classifier registry: every kind's parts resolve and agree with each other, and the CLI asks it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from constitutional_guard.classifiers import base
from constitutional_guard.classifiers.registry import CLASSIFIER_KINDS, classifier_kind, load_classifier
from constitutional_guard.cli.app import app
from constitutional_guard.cli.common import PIPE_WIDTH, console

runner = CliRunner()


@pytest.mark.parametrize("name", list(CLASSIFIER_KINDS))
def test_every_kind_resolves_and_names_itself(name: str) -> None:
    kind = classifier_kind(name)
    assert kind.name == name and kind.default_base_model and kind.label_schemes
    assert kind.classifier_class().kind == name
    assert callable(kind.classifier_class().from_pretrained) and callable(kind.train_function())
    config = kind.config_class()
    assert dataclasses.is_dataclass(config)
    assert {f.name: f.default for f in dataclasses.fields(config)}["kind"] == name


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: exchange, constitutional, embedding"):
        classifier_kind("magic")


def test_base_reexports_the_registry_loader() -> None:
    assert base.load_classifier is load_classifier and base.CONFIG_NAME == "classifier_config.json"


def test_constitutional_default_comes_from_the_registry() -> None:
    from constitutional_guard.classifiers import constitutional

    assert CLASSIFIER_KINDS["constitutional"].default_base_model == constitutional.DEFAULT_BASE_MODEL


@pytest.mark.parametrize("name", list(CLASSIFIER_KINDS))
def test_train_uses_the_kind_default_base_model(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    module = CLASSIFIER_KINDS[name].trainer.split(":")[0]
    monkeypatch.setattr(f"{module}.train", lambda options: seen.append(options) or Path(options.out_dir))
    args = ["classifier", "train", "--kind", name, "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen[0].base_model == CLASSIFIER_KINDS[name].default_base_model


def test_kinds_lists_every_kind_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["classifier", "kinds", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == list(CLASSIFIER_KINDS)
    assert {r["name"] for r in rows if r["reads_constitution"]} == {"constitutional"}
    monkeypatch.setattr(console, "width", PIPE_WIDTH)  # a COLUMNS set by the terminal would wrap the names
    table = runner.invoke(app, ["classifier", "kinds"])
    assert table.exit_code == 0 and "ModernBERT" in table.output
