"""The CLI starts fast: help, version and option errors import none of the heavy libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "fastapi", "sklearn", "datasets", "matplotlib")

# Runs in a fresh interpreter: every invocation goes through the real entry point, then sys.modules is read.
PROBE = """
import json, sys
import typer
from constitutional_guard.cli import app, main

def paths(command, prefix=()):
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():
        yield from paths(sub, prefix + (name,))

heavy, out, extra = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
invocations = [[*path, "--help"] for path in paths(typer.main.get_command(app))] + [["version"], *extra]
results = []
for args in invocations:
    sys.argv = ["cguard", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    results.append({"args": args, "code": code, "heavy": sorted(m for m in heavy if m in sys.modules)})
with open(out, "w") as f:
    json.dump(results, f)
"""


def test_help_version_and_option_errors_import_no_heavy_library(tmp_path: Path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    bad_options = [
        ["generate", "--guard", str(bundle), "-p", "hi", "--top-p", "5"],
        ["generate", "--guard", str(bundle), "-p", "hi", "--top-p", "0"],
        ["generate", "--guard", str(bundle), "-p", "hi", "--stop", ""],
        ["serve", "--guard", str(bundle), "--log-level", "loud"],
        ["serve", "--guard", str(bundle), "--port", "70000"],
    ]
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), str(out), json.dumps(bad_options)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert len(results) > 30, "every command and group should be covered"
    for result in results:
        assert result["heavy"] == [], f"cguard {' '.join(result['args'])} imported {result['heavy']}"
        expected = 2 if result["args"] in bad_options else 0
        assert result["code"] == expected, result
    assert "Traceback" not in proc.stderr
    for message in ("'--top-p': must be in (0, 1], got 5.0", "stop strings must not be empty", "'loud' is not one of"):
        assert message in " ".join(proc.stderr.split()), message
