"""Server settings, API key loading and the ``cguard serve`` command's refusal to start without keys."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from constitutional_guard.cli.app import app
from constitutional_guard.errors import InputError
from constitutional_guard.serve.auth import bearer_token
from constitutional_guard.serve.settings import API_KEYS_ENV, ServeSettings, load_api_keys


def test_auth_needs_keys_unless_disabled():
    with pytest.raises(ValueError, match="no API key"):
        ServeSettings()
    assert ServeSettings(auth=False).api_keys == ()
    with pytest.raises(ValueError, match="whitespace"):
        ServeSettings(api_keys=(" padded",))
    with pytest.raises(ValueError, match="max_concurrent"):
        ServeSettings(api_keys=("k",), max_concurrent=0)


def test_time_limits_must_be_positive():
    for name in ("request_timeout_s", "body_timeout_s"):
        with pytest.raises(ValueError, match=name):
            ServeSettings(api_keys=("k",), **{name: 0})
    with pytest.raises(ValueError, match="drain_grace_s"):
        ServeSettings(api_keys=("k",), drain_grace_s=float("nan"))
    assert ServeSettings(api_keys=("k",), drain_grace_s=0).drain_grace_s == 0


def test_load_api_keys_from_env_and_file(tmp_path):
    file = tmp_path / "keys.txt"
    file.write_text("# team keys\nkey-b\n\nkey-c  # ops\nkey-a\n", encoding="utf-8")
    keys = load_api_keys(file, environ={API_KEYS_ENV: " key-a, ,key-z"})
    assert keys == ("key-a", "key-z", "key-b", "key-c")
    assert load_api_keys(environ={}) == ()
    with pytest.raises(InputError, match="not found"):
        load_api_keys(tmp_path / "missing.txt", environ={})


def test_bearer_token_parsing():
    assert bearer_token([(b"authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([(b"authorization", b"bearer  abc ")]) == "abc"
    assert bearer_token([(b"authorization", b"Basic abc")]) is None
    assert bearer_token([(b"authorization", b"Bearer ")]) is None
    assert bearer_token([]) is None


def test_serve_refuses_to_start_without_keys(tmp_path, monkeypatch):
    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    result = CliRunner().invoke(app, ["serve", "--guard", str(tmp_path)])
    assert result.exit_code == 2
    assert "no API key" in result.output
