"""JSON configs for artifacts: saved with the package version, newer unknown keys load with a warning."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, TypeVar

from constitutional_guard import __version__
from constitutional_guard.atomic import write_json_atomic
from constitutional_guard.errors import InputError

T = TypeVar("T")
VERSION_KEY = "cguard_version"


def save_config(config: Any, path: str | Path) -> None:
    """Write a config dataclass as JSON (atomically), stamped with the package version."""
    data = dataclasses.asdict(config)
    data[VERSION_KEY] = __version__
    write_json_atomic(path, data)


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a config dataclass from JSON; unknown keys (from newer versions) are ignored with a warning."""
    file = Path(path)
    if not file.exists():
        raise InputError.one(file, "config file not found")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError.one(file, f"invalid JSON: {exc.msg}", line=exc.lineno) from exc
    except UnicodeDecodeError as exc:
        raise InputError.one(file, f"not UTF-8 text (byte {exc.start})") from exc
    if not isinstance(data, dict):
        raise InputError.one(file, f"expected a JSON object, got {type(data).__name__}")
    data.pop(VERSION_KEY, None)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        warnings.warn(f"{file}: ignoring unknown config keys {unknown} (written by a newer version?)", stacklevel=2)
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except (TypeError, ValueError) as exc:
        raise InputError.one(file, str(exc)) from exc
