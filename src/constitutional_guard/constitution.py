"""The constitution: a YAML policy of harmful categories and their harmless neighbours.

It drives synthetic data, names the categories in every report and API answer, and is
rendered into the prompt that constitutional LM classifiers read.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from constitutional_guard.errors import InputError, Problem, format_loc, yaml_line

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
DEFAULT_HOLD_NOTICE = (
    "I can't give this answer: a safety check could not confirm it is within policy. "
    "Please rephrase the request or try again."
)


class Category(BaseModel):
    """One category of the policy, harmful or harmless, with examples on both sides of its line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Identifier used in data, reports and API answers (snake_case).")
    description: str = Field(min_length=1, description="What the category covers.")
    disallowed: list[str] = Field(default_factory=list, description="Examples that must be refused.")
    allowed: list[str] = Field(default_factory=list, description="Close examples that are fine to answer.")
    neighbours: list[str] = Field(
        default_factory=list, description="Categories on the other side of the line that this one borders."
    )

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(f"{value!r} must be snake_case: lowercase letters, digits and underscores")
        return value

    @field_validator("disallowed", "allowed")
    @classmethod
    def _examples_not_blank(cls, value: list[str]) -> list[str]:
        for i, example in enumerate(value):
            if not example.strip():
                raise ValueError(f"example {i} is blank")
        return value


class Constitution(BaseModel):
    """A safety policy: what is harmful, what is harmless but looks close, and how to refuse."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    version: str = "1"
    description: str = Field(min_length=1, description="One paragraph stating the policy's intent.")
    label_scheme: Literal["binary", "three_class"] = "binary"
    refusal: str = Field(min_length=1, description="Text returned to the user when content is blocked.")
    hold_notice: str = Field(
        default=DEFAULT_HOLD_NOTICE, min_length=1,
        description="Text returned instead of an answer that was held before any of it reached the user.",
    )
    harmful: list[Category] = Field(min_length=1)
    harmless: list[Category] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_categories(self) -> Constitution:
        names = [c.name for c in self.harmful + self.harmless]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"category names must be unique; repeated: {', '.join(duplicates)}")
        for i, cat in enumerate(self.harmful):
            if not cat.disallowed:
                raise ValueError(f"harmful[{i}] ({cat.name}) needs at least one disallowed example")
        for i, cat in enumerate(self.harmless):
            if not cat.allowed:
                raise ValueError(f"harmless[{i}] ({cat.name}) needs at least one allowed example")
        known = set(names)
        for group, cats in (("harmful", self.harmful), ("harmless", self.harmless)):
            for i, cat in enumerate(cats):
                unknown = [n for n in cat.neighbours if n not in known]
                if unknown:
                    raise ValueError(f"{group}[{i}].neighbours names unknown categories: {', '.join(unknown)}")
        return self

    @property
    def category_names(self) -> list[str]:
        return [c.name for c in self.harmful + self.harmless]

    @property
    def harmful_names(self) -> list[str]:
        return [c.name for c in self.harmful]

    def category(self, name: str) -> Category:
        for cat in self.harmful + self.harmless:
            if cat.name == name:
                return cat
        raise KeyError(f"no category {name!r} in constitution {self.name!r}")

    def is_harmful(self, name: str) -> bool:
        return name in self.harmful_names

    def allowing(self, name: str) -> Constitution:
        """A copy in which harmful category ``name`` is harmless: its disallowed examples become allowed."""
        if not self.is_harmful(name):
            raise KeyError(f"no harmful category {name!r} in constitution {self.name!r}")
        if len(self.harmful) == 1:
            raise ValueError(f"{name!r} is the only harmful category of {self.name!r}; it cannot be allowed")
        cat = self.category(name)
        moved = cat.model_copy(update={"allowed": cat.disallowed + cat.allowed, "disallowed": []})
        return self.model_copy(
            update={"harmful": [c for c in self.harmful if c.name != name], "harmless": [*self.harmless, moved]}
        )

    def fingerprint(self) -> str:
        """Stable SHA-256 of the policy content (key order and YAML formatting do not matter).

        The hold notice is left out: it is what users see, not what classifiers judge by.
        """
        blob = json.dumps(self.model_dump(mode="json", exclude={"hold_notice"}), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def render(self, max_examples: int = 2) -> str:
        """The policy as plain text for a classifier prompt."""
        lines = [f"# Safety policy: {self.name}", self.description.strip(), "", "## Unsafe content"]
        for cat in self.harmful:
            lines.append(f"- {cat.name}: {cat.description.strip()}")
            lines += [f"  - not allowed: {e}" for e in cat.disallowed[:max_examples]]
            lines += [f"  - allowed: {e}" for e in cat.allowed[:max_examples]]
        if self.harmless:
            lines += ["", "## Safe content that may look close"]
            for cat in self.harmless:
                lines.append(f"- {cat.name}: {cat.description.strip()}")
                lines += [f"  - allowed: {e}" for e in cat.allowed[:max_examples]]
        return "\n".join(lines)


def parse_constitution(text: str, path: str | Path = "<string>") -> Constitution:
    """Parse and validate constitution YAML; errors name the file, line and field."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError.one(path, f"invalid YAML: {getattr(exc, 'problem', exc)}", line=line) from exc
    if not isinstance(data, dict):
        raise InputError.one(path, "a constitution must be a YAML mapping", line=1)
    try:
        return Constitution.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(str(path), yaml_line(node, err["loc"]), format_loc(err["loc"]), err["msg"])
            for err in exc.errors()
        ]
        raise InputError(problems) from exc


def load_constitution(path: str | Path | None = None) -> Constitution:
    """Load a constitution file, or the shipped default when ``path`` is None or ``"default"``."""
    if path is None or str(path) == "default":
        text = resources.files("constitutional_guard").joinpath("constitutions/default.yaml").read_text("utf-8")
        return parse_constitution(text, "constitutions/default.yaml")
    file = Path(path)
    if not file.exists():
        raise InputError.one(file, "file not found")
    return parse_constitution(file.read_text(encoding="utf-8"), file)
