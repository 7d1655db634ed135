"""Command-line options generated from a pydantic settings model, so no setting is declared twice.

``settings_options(Model)`` adds to a Typer command one option per field (``--field-name``, help from the
field's description, booleans as ``--x/--no-x``), plus ``--config FILE`` (YAML or JSON mapping) and
``--set key=value``. The command receives what was given as one dict; ``build_settings`` merges it (file,
then ``--set``, then the options) over fixed values and validates it with the model, turning validation
errors into usage errors that name the field. With ``rest_field``, keys that name no field go into that
(mapping) field instead of being refused: kind-specific settings, say.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
PARAM = "settings_given"
"""Name of the command parameter that receives the given settings."""
FILE_PARAM, SET_PARAM = "settings_file", "settings_pairs"


def parse_settings(pairs: Iterable[str], hint: str = "--set") -> dict[str, Any]:
    """``key=value`` strings to a dict; values are read as JSON when they parse (numbers, booleans), else text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint=hint)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def settings_options(
    model: type[BaseModel],
    *,
    exclude: Iterable[str] = (),
    aliases: dict[str, tuple[str, ...]] | None = None,
    file_option: str = "--config",
    rest_field: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Typer command whose last parameter is ``settings_given: dict``: replace it with one option per
    field of ``model`` (except ``exclude``; ``aliases`` adds older names) and ``file_option`` / ``--set``.

    ``rest_field`` names a mapping field (given no option) that collects the file's and ``--set``'s other keys."""
    skipped = set(exclude) | ({rest_field} if rest_field else set())
    set_help = "A setting as key=value (repeatable); any field above" + (
        f", or another key (kept in {rest_field})." if rest_field else "."
    )
    extra_names = aliases or {}

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func)
        signature = inspect.signature(func)
        params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
        params = [p for p in params if p.name != PARAM]
        taken = {p.name for p in params}
        fields: list[str] = []
        for name, info in model.model_fields.items():
            if name in skipped:
                continue
            if name in taken:
                raise TypeError(f"{func.__name__}: parameter {name!r} clashes with a settings field")
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            annotation = info.annotation
            if annotation is bool:
                decls = [f"{_option_name(name)}/--no-{name.replace('_', '-')}"]
            else:
                decls = [_option_name(name), *extra_names.get(name, ())]
            shown = str(default).lower() if isinstance(default, bool) else str(default)
            option = typer.Option(None, *decls, help=info.description, show_default=default is not None and shown)
            params.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation | None)
            )
            fields.append(name)
        params.append(
            inspect.Parameter(
                FILE_PARAM,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(
                    None,
                    file_option,
                    exists=True,
                    dir_okay=False,
                    help="YAML or JSON mapping of these settings (options given here win over it).",
                ),
                annotation=Path | None,
            )
        )
        params.append(
            inspect.Parameter(
                SET_PARAM,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option([], "--set", help=set_help),
                annotation=list[str],
            )
        )

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in fields}
            file, pairs = kwargs.pop(FILE_PARAM), kwargs.pop(SET_PARAM)
            layers = [
                (file_option, read_settings_file(file, set(fields), rest_field) if file is not None else {}),
                ("--set", parse_settings(pairs)),
                ("options", {name: value for name, value in given.items() if value is not None}),
            ]
            rest: dict[str, Any] = {}
            for source, values in layers:
                not_here = sorted(set(values) & skipped)
                unknown = sorted(set(values) - set(model.model_fields))
                if rest_field is not None:
                    rest |= {k: values.pop(k) for k in unknown}
                    unknown = []
                if unknown or not_here:
                    known = ", ".join(fields)
                    raise typer.BadParameter(
                        f"unknown settings {unknown + not_here}; known: {known}", param_hint=source
                    )
            merged = {k: v for _, values in layers for k, v in values.items()}
            if rest_field is not None:
                merged[rest_field] = rest
            return func(*args, **kwargs, **{PARAM: merged})

        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # type: ignore[attr-defined]
        return wrapper

    return decorate


def read_settings_file(path: Path, names: set[str] | None = None, rest_field: str | None = None) -> dict[str, Any]:
    """A YAML (or JSON) mapping of settings. A file saved by ``SettingsModel.save`` carries a version stamp:
    the stamp is dropped, the saved ``rest_field`` mapping is spread out again, and other keys that are not
    in ``names`` (a newer version's, or settings given by other options) are ignored with a warning. In a
    hand-written file such keys are errors."""
    from constitutional_guard.config_io import VERSION_KEY, known_keys, read_mapping
    from constitutional_guard.errors import InputError

    try:
        data = read_mapping(path)
    except InputError as exc:
        raise typer.BadParameter(str(exc.problems[0]) if exc.problems else str(exc)) from None
    if VERSION_KEY not in data:
        return data
    rest = data.pop(rest_field, None) if rest_field is not None else None
    if rest_field is None and names is not None:
        return known_keys(data, names, path)
    data.pop(VERSION_KEY)
    return {**(rest if isinstance(rest, dict) else {}), **data}


def build_settings(model: type[M], values: dict[str, Any], hint: str | None = None) -> M:
    """``model`` validated from ``values``; a validation error becomes a usage error naming the field."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            value = f" (got {error['input']!r})" if where and "input" in error else ""
            messages.append(f"{where}: {message}{value}" if where else message)
        raise typer.BadParameter("; ".join(messages), param_hint=hint) from None
