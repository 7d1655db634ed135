"""Contrast sets written for this package: harm aimed at people, and harmless questions of the same form.

Label mapping (binary prompts): ``data/contrast/people.yaml`` (Apache-2.0) holds sets of templates about a group
of people, a relative or an acquaintance. A set's ``unsafe`` templates (stereotype questions, prying into
someone's private details, bullying) give ``unsafe`` prompts in the set's constitution category; its ``safe``
templates (the same groups, relations and names asked about harmlessly) give ``safe`` prompts. Each prompt is a
template filled with slot values drawn with a seed from the set's name: ``per_label`` distinct prompts per set
and label, the templates taken in turns. Templated, so the corpus card names it apart from real sources.
"""

from __future__ import annotations

import random
import string
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from constitutional_guard.constitution import Constitution
from constitutional_guard.data.schema import stable_id
from constitutional_guard.data.sources.package_data import SHIPPED, SourceRows, prompt_record
from constitutional_guard.errors import InputError, Problem, format_loc, yaml_line

PEOPLE_FILE = "data/contrast/people.yaml"
SOURCE = "contrast/people"


def template_slots(template: str) -> list[str]:
    """The slot names a template fills, in order."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


class ContrastSet(BaseModel):
    """Templates of both labels about the same people, in one constitution category."""

    model_config = ConfigDict(extra="forbid")

    name: str
    category: str
    unsafe: list[str] = Field(min_length=1)
    safe: list[str] = Field(min_length=1)


class ContrastFile(BaseModel):
    """A file of contrast sets and the slot values their templates draw from."""

    model_config = ConfigDict(extra="forbid")

    per_label: int = Field(ge=1)
    slots: dict[str, list[str]]
    sets: list[ContrastSet] = Field(min_length=1)


def parse_contrast(text: str, path: str | Path) -> tuple[ContrastFile, yaml.Node | None]:
    """Validate a contrast file; errors name the file, line and field."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError.one(path, f"invalid YAML: {exc}", line=mark.line + 1 if mark else None) from exc
    try:
        contrast = ContrastFile.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(str(path), yaml_line(node, err["loc"]), format_loc(err["loc"]), err["msg"]) for err in exc.errors()
        ]
        raise InputError(problems) from exc
    problems = [
        Problem(str(path), yaml_line(node, loc), format_loc(loc), f"unknown or empty slot(s): {', '.join(missing)}")
        for i, cset in enumerate(contrast.sets)
        for label in ("unsafe", "safe")
        for j, template in enumerate(getattr(cset, label))
        if (missing := [s for s in template_slots(template) if not contrast.slots.get(s)])
        for loc in [("sets", i, label, j)]
    ]
    if problems:
        raise InputError(problems)
    return contrast, node


def filled(templates: list[str], slots: dict[str, list[str]], count: int, seed: str) -> list[tuple[int, str]]:
    """Up to ``count`` distinct prompts (with the index of their template), templates in turns, slot values drawn
    with ``seed``; fewer only when the templates cannot make that many."""
    rng = random.Random(int(stable_id(seed), 16))
    out: dict[str, int] = {}
    attempts = 0
    while len(out) < count and attempts < 50 * count:
        index = attempts % len(templates)
        template = templates[index]
        attempts += 1
        text = template.format(**{s: rng.choice(slots[s]) for s in set(template_slots(template))})
        text = text[0].upper() + text[1:] if template.startswith("{") else text
        out.setdefault(text, index)
    return [(index, text) for text, index in out.items()]


def people_contrast(constitution: Constitution | None = None) -> SourceRows:
    """Stereotype, prying and bullying requests (``unsafe``) beside harmless questions about the same people."""
    resource = resources.files("constitutional_guard").joinpath(PEOPLE_FILE)
    contrast, node = parse_contrast(resource.read_text("utf-8"), PEOPLE_FILE)
    file = Path(str(resource))
    out = SourceRows()
    for i, cset in enumerate(contrast.sets):
        if constitution is not None and not constitution.is_harmful(cset.category):
            out.skipped[f"set {cset.name}: {cset.category} is not a harmful category of the constitution"] += 1
            continue
        for label in ("unsafe", "safe"):
            templates = getattr(cset, label)
            for index, prompt in filled(templates, contrast.slots, contrast.per_label, f"{cset.name}:{label}"):
                line = yaml_line(node, ("sets", i, label, index)) or 0
                out.records.append(
                    prompt_record(
                        SHIPPED, SOURCE, file, line, prompt, label, cset.category,
                        contrast_set=cset.name, template=templates[index],
                    )
                )
    return out
