"""What made a result: package versions, seeds, model ids, data hashes and the code revision."""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from constitutional_guard import __version__
from constitutional_guard.data.schema import Record

PACKAGES = ("torch", "transformers", "peft", "scikit-learn", "numpy")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"constitutional-guard": __version__, "python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(path: str | Path | None = None) -> str | None:
    """The commit of the source tree (with ``-dirty`` when it has local changes), or None outside git."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def records_sha256(records: Iterable[Record]) -> str:
    """Order-sensitive hash of the records' canonical JSON, independent of the file format they came from."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record.model_dump(mode="json"), sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def provenance(
    command: str | None = None,
    seed: int | None = None,
    models: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One block to store beside every result: enough to know what produced it and to rerun it."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join(sys.argv),
        "seed": seed,
        "versions": package_versions(),
        "git_revision": git_revision(),
        "platform": platform.platform(),
        "models": dict(models or {}),
        "data_sha256": dict(data or {}),
        **(extra or {}),
    }
