"""Read and write records as JSONL, CSV or Parquet; bad rows fail with file:line and the reason."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from constitutional_guard.atomic import atomic_path
from constitutional_guard.data.schema import Record
from constitutional_guard.errors import InputError, Problem, format_loc

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
LFS_HEADER = b"version https://git-lfs.github.com/spec/v1"
JSON_COLUMNS = ("messages", "meta")  # nested fields, stored as JSON text in CSV and Parquet


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError.one(path, f"unsupported file type {path.suffix!r}; use one of {', '.join(FORMATS)}")
    return fmt


def check_readable(path: Path) -> None:
    """Fail clearly on a missing file or a Git LFS pointer standing in for the real data."""
    if not path.exists():
        raise InputError.one(path, "file not found")
    with path.open("rb") as fh:
        head = fh.read(len(LFS_HEADER))
    if head == LFS_HEADER:
        raise InputError.one(
            path, "this is a Git LFS pointer, not the data: run `git lfs pull` (or download the file)", line=1
        )


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    """Yield (line or row number, raw row) pairs; unparsable lines come back as a Problem."""
    file = Path(path)
    fmt = file_format(file)
    check_readable(file)
    if fmt == "jsonl":
        with file.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield lineno, Problem(str(file), lineno, None, f"invalid JSON: {exc.msg}")
                    continue
                if not isinstance(row, dict):
                    yield lineno, Problem(str(file), lineno, None, "each line must be a JSON object")
                    continue
                yield lineno, row
    elif fmt == "csv":
        with file.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            start = reader.line_num + 1
            for row in reader:
                yield start, _decode_flat(row, file, start)
                start = reader.line_num + 1
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(file)
        for index, row in enumerate(table.to_pylist(), start=1):
            yield index, _decode_flat(row, file, index)


def _decode_flat(row: dict[str, Any], file: Path, line: int) -> dict[str, Any] | Problem:
    """Turn a CSV / Parquet row into a record dict: blanks to None, JSON columns decoded."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key is None:
            return Problem(str(file), line, None, "row has more fields than the header")
        if value is None or (isinstance(value, str) and value == ""):
            continue
        if key in JSON_COLUMNS and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                return Problem(str(file), line, key, f"invalid JSON: {exc.msg}")
        out[key] = value
    return out


def read_records(path: str | Path, defaults: dict[str, Any] | None = None) -> list[Record]:
    """Read every record of a file, or raise InputError listing every bad row (none are dropped).

    Columns the schema does not know are kept in ``meta`` and written back as columns by ``write_records``.
    Every problem is reported in one pass: unparsable rows, invalid fields and repeated ids.
    """
    records: list[Record] = []
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    file = Path(path)
    for line, row in iter_rows(file):
        if isinstance(row, Problem):
            problems.append(row)
            continue
        data = {**(defaults or {}), **row}
        data.setdefault("id", f"{file.stem}-{line}")
        if isinstance(data["id"], str) and data["id"]:
            seen = first_line.setdefault(data["id"], line)
            if seen != line:
                problems.append(Problem(str(file), line, "id", f"duplicate id {data['id']!r} (first on line {seen})"))
        try:
            records.append(Record.from_row(data))
        except ValidationError as exc:
            for err in exc.errors():
                field = format_loc(err["loc"]) if err["loc"] else None
                problems.append(Problem(str(file), line, field, _clean_msg(err["msg"])))
        except ValueError as exc:
            field, _, reason = str(exc).partition(": ")
            problems.append(Problem(str(file), line, field, reason))
    if problems:
        raise InputError(problems)
    return records


def _clean_msg(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def write_records(records: Iterable[Record], path: str | Path) -> Path:
    """Write records atomically in the format given by the file suffix."""
    file = Path(path)
    fmt = file_format(file)
    rows = [r.to_row() for r in records]
    with atomic_path(file) as tmp:
        if fmt == "jsonl":
            with tmp.open("w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            flat = [_encode_flat(row) for row in rows]
            columns = list(dict.fromkeys([*Record.model_fields, *(key for row in rows for key in row)]))
            if fmt == "csv":
                with tmp.open("w", encoding="utf-8", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=columns)
                    writer.writeheader()
                    writer.writerows(flat)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.table({name: [row.get(name) for row in flat] for name in columns}), tmp)
    return file


def _encode_flat(row: dict[str, Any]) -> dict[str, Any]:
    """Nested values (``messages``, ``meta`` and any extra column holding a list or dict) as JSON text."""
    out = dict(row)
    for key in JSON_COLUMNS:
        value = out.get(key)
        out[key] = None if value in (None, {}, []) else json.dumps(value, ensure_ascii=False)
    for key, value in out.items():
        if isinstance(value, dict | list):
            out[key] = json.dumps(value, ensure_ascii=False)
    return out


def check_file(path: str | Path, categories: Iterable[str]) -> tuple[list[Record], list[Problem], list[Problem]]:
    """Read a record file for validation: (records, problems, warnings), never raising for bad content.

    A file without records is a problem; categories missing from ``categories`` (the constitution's) are warnings.
    """
    file = Path(path)
    try:
        records = read_records(file)
    except InputError as exc:
        return [], exc.problems, []
    if not records:
        return [], [Problem(str(file), None, None, "no records")], []
    known = set(categories)
    unknown = Counter(r.category for r in records if r.category is not None and r.category not in known)
    warnings = [
        Problem(str(file), None, "category", f"{name!r} is not a category of the constitution ({n} records)")
        for name, n in unknown.most_common()
    ]
    return records, [], warnings


def summarize(records: list[Record]) -> dict[str, dict[str, int]]:
    """Counts per label, split, source and category."""
    return {
        "label": dict(Counter(r.label for r in records).most_common()),
        "split": dict(Counter(r.split or "(none)" for r in records).most_common()),
        "source": dict(Counter(r.source for r in records).most_common()),
        "category": dict(Counter(r.category or "(none)" for r in records).most_common()),
    }
