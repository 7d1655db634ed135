"""``cguard serve`` and ``cguard guard build`` take every field of their pydantic settings, from options,
``--config`` / ``--policy`` files and ``--set``, validated by the model with errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from constitutional_guard.cli.app import app
from constitutional_guard.guard.policy import PolicySettings
from constitutional_guard.serve.settings import ServeSettings

runner = CliRunner()


def flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())  # the error box wraps long lines


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Capture the settings ``cguard serve`` would serve with, loading and serving nothing."""
    seen: list[Any] = []
    monkeypatch.setattr("constitutional_guard.guard.guard.Guard.from_pretrained", lambda *a, **k: object())
    monkeypatch.setattr("constitutional_guard.serve.app.create_app", lambda guard, settings: seen.append(settings))
    monkeypatch.setattr("constitutional_guard.serve.drain.serve_app", lambda *a, **k: None)
    return seen


def test_serve_has_an_option_for_every_setting(tmp_path: Path) -> None:
    help_text = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "300"}).output
    for name in set(ServeSettings.model_fields) - {"api_keys", "auth"}:
        assert "--" + name.replace("_", "-") in help_text, name
    for old in ("--timeout", "--body-timeout", "--drain-grace", "--no-auth", "--api-key-file", "--config", "--set"):
        assert old in help_text


def test_serve_reads_options_file_and_set(served: list[Any], tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("max_messages: 7\nmax_moderation_inputs: 3\nmax_concurrent: 5\n")
    args = ["serve", "--guard", str(tmp_path), "--no-auth", "--config", str(config)]
    result = runner.invoke(app, [*args, "--set", "max_concurrent=4", "--max-queued", "9", "--timeout", "12"])
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert (settings.max_messages, settings.max_moderation_inputs) == (7, 3)
    assert (settings.max_concurrent, settings.max_queued, settings.request_timeout_s) == (4, 9, 12.0)
    assert settings.auth is False and settings.body_timeout_s == ServeSettings.model_fields["body_timeout_s"].default


def test_serve_lowers_the_default_completion_with_a_lower_cap(served: list[Any], tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--guard", str(tmp_path), "--no-auth", "--max-tokens", "100"])
    assert result.exit_code == 0, result.output
    assert (served[0].max_tokens, served[0].default_max_tokens) == (100, 100)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-messages", "0"], "max_messages: Input should be greater than or equal to 1"),
        (["--set", "max_moderation_inputs=-1"], "max_moderation_inputs: Input should be greater than or equal to 1"),
        (["--set", "max_concurent=3"], "unknown settings ['max_concurent']"),
        (["--set", "auth=false"], "unknown settings ['auth']"),
        (["--set", "noequals"], "expected key=value"),
        (["--default-max-tokens", "900", "--max-tokens", "800"], "default_max_tokens (900) exceeds max_tokens (800)"),
    ],
)
def test_serve_errors_name_the_field(served: list[Any], tmp_path: Path, extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["serve", "--guard", str(tmp_path), "--no-auth", *extra])
    assert result.exit_code == 2 and message in flat(result.output)
    assert not served


def test_serve_config_must_be_a_mapping(served: list[Any], tmp_path: Path) -> None:
    config = tmp_path / "serve.json"
    config.write_text("[1, 2]")
    result = runner.invoke(app, ["serve", "--guard", str(tmp_path), "--no-auth", "--config", str(config)])
    assert result.exit_code == 2 and "expected a mapping of settings" in flat(result.output)


def test_a_saved_file_is_a_config_file(served: list[Any], tmp_path: Path) -> None:
    saved = ServeSettings(auth=False, max_messages=9, max_queued=3).save(tmp_path / "serve.yaml")
    with pytest.warns(UserWarning, match="api_keys"):  # set by their own options, not from the file
        result = runner.invoke(app, ["serve", "--guard", str(tmp_path), "--no-auth", "--config", str(saved)])
    assert result.exit_code == 0, result.output
    assert (served[0].max_messages, served[0].max_queued) == (9, 3)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    monkeypatch.setattr("constitutional_guard.guard.bundle.build_bundle", lambda *args: seen.append(args[6]))
    return seen


def test_guard_build_reaches_every_policy_field(built: list[Any], tmp_path: Path) -> None:
    help_text = runner.invoke(app, ["guard", "build", "--help"], env={"COLUMNS": "300"}).output
    for name in PolicySettings.model_fields:
        assert "--" + name.replace("_", "-") in help_text, name
    policy = tmp_path / "policy.yaml"
    policy.write_text("suspicious_fraction: 0.25\nrelease_lag: 9\n")
    args = ["guard", "build", "--out", str(tmp_path / "b"), "--probe", str(tmp_path), "--policy", str(policy)]
    result = runner.invoke(app, [*args, "--max-held-tokens", "8", "--release-lag", "2", "--no-final-check"])
    assert result.exit_code == 0, result.output
    assert built == [PolicySettings(suspicious_fraction=0.25, release_lag=2, max_held_tokens=8, final_check=False)]


def test_guard_build_defaults_and_errors(built: list[Any], tmp_path: Path) -> None:
    args = ["guard", "build", "--out", str(tmp_path / "b"), "--probe", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0 and built == [PolicySettings()]
    bad = runner.invoke(app, [*args, "--set", "suspicious_fraction=0"])
    assert bad.exit_code == 2 and "suspicious_fraction: Input should be greater than 0" in flat(bad.output)
