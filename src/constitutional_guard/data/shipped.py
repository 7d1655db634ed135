"""Generated data that ships with the package: the target model's own answers, made once and versioned.

Generation on a CPU is slow, so ``cguard data generate`` writes its exchanges to a JSONL file of records
(with the generator, its settings and the label rule in each record's ``meta``), and the files under
``data/shipped/`` are read by ``cguard data build`` like any other offline source. Each file's first line
is a header: ``{"format": ..., "command": ..., "generator": ..., "created_with": ...}``.

Prompt choice: per source, an equal share of plain prompts (no jailbreak preambles), benign sources
first served, so the target's benign answers cover everyday and safety-adjacent questions alike.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from constitutional_guard import __version__
from constitutional_guard.atomic import atomic_path
from constitutional_guard.data.schema import Record, stable_id
from constitutional_guard.data.sources.package_data import SourceRows
from constitutional_guard.errors import InputError

SHIPPED_DIR = Path(__file__).parent / "shipped"
FORMAT = "constitutional-guard-generated-v1"


def shipped_files() -> list[Path]:
    return sorted(SHIPPED_DIR.glob("*.jsonl"))


def pick_prompts(
    records: Sequence[Record],
    safe: int,
    unsafe: int,
    seed: int,
    max_chars: int = 600,
    sources: Sequence[str] = (),
) -> list[Record]:
    """``safe`` benign and ``unsafe`` harmful plain prompts, spread evenly over their sources (seeded).

    ``sources``: glob patterns; when given, only prompts of a source that matches one are chosen.
    """
    chosen: list[Record] = []
    for label, count in (("safe", safe), ("unsafe", unsafe)):
        by_source: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            plain = record.response is None and "augmentation" not in record.meta
            wanted = not sources or any(fnmatchcase(record.source, pattern) for pattern in sources)
            if plain and wanted and len(record.prompt_text) <= max_chars and record.binary_label == label:
                by_source[record.source].append(record)
        queues = {s: sorted(m, key=lambda r: stable_id(str(seed), "pick", r.id)) for s, m in sorted(by_source.items())}
        picked: list[Record] = []
        while len(picked) < count and any(queues.values()):
            for source in list(queues):
                if queues[source] and len(picked) < count:
                    picked.append(queues[source].pop(0))
        chosen += picked
    return chosen


def write_generated(path: str | Path, records: Sequence[Record], header: dict[str, Any]) -> None:
    """The header line, then one record per line (atomic)."""
    with atomic_path(path) as tmp, Path(tmp).open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"format": FORMAT, "created_with": __version__, **header}, ensure_ascii=False) + "\n")
        for record in records:
            fh.write(record.model_dump_json(exclude_none=True) + "\n")


def read_generated(path: str | Path) -> tuple[dict[str, Any], list[Record]]:
    """Header and records of a generated file; errors name the file and line."""
    from pydantic import ValidationError

    file = Path(path)
    lines = file.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError as exc:
        raise InputError.one(file, f"invalid header: {exc.msg}", line=1) from exc
    if header.get("format") != FORMAT:
        raise InputError.one(file, f"not a generated-data file (format {header.get('format')!r}, expected {FORMAT})",
                             line=1, field="format")
    records = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            records.append(Record.model_validate_json(line))
        except ValidationError as exc:
            error = exc.errors()[0]
            raise InputError.one(file, error["msg"], line=number, field=".".join(map(str, error["loc"]))) from exc
    return header, records


def shipped_generations(constitution: Any = None) -> SourceRows:
    """Every shipped generated file's records."""
    out = SourceRows()
    for file in shipped_files():
        out.records += read_generated(file)[1]
    return out
