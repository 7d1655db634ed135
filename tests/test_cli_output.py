"""CLI output meant for pipes: untruncated tables and ``--json`` on listing commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from constitutional_guard.cli import app
from constitutional_guard.data.sources import HUB_ADAPTERS, OFFLINE_SOURCES
from constitutional_guard.models.embedded import EMBEDDED_MODELS


def test_tables_are_not_truncated_when_piped():
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    proc = subprocess.run(
        [sys.executable, "-m", "constitutional_guard.cli", "data", "sources"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    for name, source in OFFLINE_SOURCES.items():
        assert name in proc.stdout and source.package.pip_spec in proc.stdout


def test_listing_commands_print_json():
    runner = CliRunner()
    models = runner.invoke(app, ["models", "list", "--json"])
    assert models.exit_code == 0, models.output
    rows = json.loads(models.stdout)
    assert [row["alias"] for row in rows] == list(EMBEDDED_MODELS)
    assert {"hub_id", "package", "size_mb", "installed", "materialised", "path"} <= set(rows[0])
    sources = runner.invoke(app, ["data", "sources", "--json"])
    assert sources.exit_code == 0, sources.output
    listed = json.loads(sources.stdout)
    assert [row["name"] for row in listed["offline"]] == list(OFFLINE_SOURCES)
    assert [row["name"] for row in listed["hub"]] == list(HUB_ADAPTERS)
