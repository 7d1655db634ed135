"""Configs and settings saved with the package version; unknown keys (from newer versions) load with a warning.

``save_config`` / ``load_config`` handle the JSON configs of artifacts (dataclasses beside weights);
``SettingsModel`` is the base of the pydantic settings models (policy, serve, training, corpus build), saved
to and loaded from YAML or JSON the same way.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from constitutional_guard import __version__
from constitutional_guard.atomic import write_json_atomic, write_text_atomic
from constitutional_guard.errors import InputError, Problem, format_loc

T = TypeVar("T")
S = TypeVar("S", bound="SettingsModel")
VERSION_KEY = "cguard_version"
YAML_SUFFIXES = (".yaml", ".yml")


def known_keys(data: dict[str, Any], names: set[str], source: str | Path) -> dict[str, Any]:
    """``data`` without the version stamp and without keys that are not in ``names`` (warned about)."""
    data = {k: v for k, v in data.items() if k != VERSION_KEY}
    unknown = sorted(set(data) - names)
    if unknown:
        warnings.warn(f"{source}: ignoring unknown config keys {unknown} (written by a newer version?)", stacklevel=3)
    return {k: v for k, v in data.items() if k in names}


def save_config(config: Any, path: str | Path) -> None:
    """Write a config dataclass as JSON (atomically), stamped with the package version."""
    data = dataclasses.asdict(config)
    data[VERSION_KEY] = __version__
    write_json_atomic(path, data)


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a config dataclass from JSON; unknown keys (from newer versions) are ignored with a warning."""
    file = Path(path)
    known = known_keys(read_mapping(file, yaml_too=False), {f.name for f in dataclasses.fields(cls)}, file)  # type: ignore[arg-type]
    try:
        return cls(**known)
    except (TypeError, ValueError) as exc:
        raise InputError.one(file, str(exc)) from exc


def read_mapping(path: str | Path, yaml_too: bool = True) -> dict[str, Any]:
    """The mapping a JSON file holds, or with ``yaml_too`` a YAML or JSON file (an empty one: an empty mapping)."""
    file = Path(path)
    if not file.exists():
        raise InputError.one(file, f"{'settings' if yaml_too else 'config'} file not found")
    try:
        text = file.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if yaml_too else json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError.one(file, f"invalid JSON: {exc.msg}", line=exc.lineno) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError.one(file, f"not valid YAML or JSON ({exc})", line=mark.line + 1 if mark else None) from exc
    except UnicodeDecodeError as exc:
        raise InputError.one(file, f"not UTF-8 text (byte {exc.start})") from exc
    if data is None and yaml_too:
        return {}
    if not isinstance(data, dict):
        expected = "a mapping of settings" if yaml_too else "a JSON object"
        raise InputError.one(file, f"expected {expected}, got {type(data).__name__}")
    return data


class SettingsModel(BaseModel):
    """Base of the settings models: ``save`` writes YAML (``.yaml`` / ``.yml``) or JSON stamped with the
    package version; ``load`` / ``from_mapping`` read it back, ignoring the stamp and, with a warning, keys
    that name no field (a file from a newer version). Built directly, a model still refuses unknown fields."""

    def to_mapping(self) -> dict[str, Any]:
        """The fields as plain JSON values, then the version stamp."""
        return {**self.model_dump(mode="json"), VERSION_KEY: __version__}

    def save(self, path: str | Path) -> Path:
        """Write the settings atomically; the suffix picks YAML or JSON."""
        file = Path(path)
        if file.suffix.lower() in YAML_SUFFIXES:
            write_text_atomic(file, yaml.safe_dump(self.to_mapping(), sort_keys=False, allow_unicode=True))
        else:
            write_json_atomic(file, self.to_mapping())
        return file

    @classmethod
    def from_mapping(cls: type[S], data: dict[str, Any], source: str | Path = "settings") -> S:
        """Validate ``data`` as read from a file; errors name the field and the value given."""
        known = known_keys(data, set(cls.model_fields), source)
        try:
            return cls.model_validate(known)
        except ValidationError as exc:
            problems = [Problem(str(source), None, format_loc(e["loc"]), _describe(e)) for e in exc.errors()]
            raise InputError(problems) from exc

    @classmethod
    def load(cls: type[S], path: str | Path) -> S:
        """Read settings saved by ``save`` (or written by hand) from YAML or JSON."""
        return cls.from_mapping(read_mapping(path), path)


def _describe(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{message} (got {error['input']!r})" if error["loc"] and "input" in error else message
