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
    """Read every record of a file, or raise InputError listing every bad row (none are dropped)."""
    records: list[Record] = []
    problems: list[Problem] = []
    file = Path(path)
    for line, row in iter_rows(file):
        if isinstance(row, Problem):
            problems.append(row)
            continue
        data = {**(defaults or {}), **row}
        data.setdefault("id", f"{file.stem}-{line}")
        try:
            records.append(Record.model_validate(data))
        except ValidationError as exc:
            for err in exc.errors():
                field = format_loc(err["loc"]) if err["loc"] else None
                problems.append(Problem(str(file), line, field, _clean_msg(err["msg"])))
    if problems:
        raise InputError(problems)
    ids = Counter(r.id for r in records)
    repeated = [i for i, n in ids.items() if n > 1]
    if repeated:
        raise InputError.one(file, f"duplicate record ids: {', '.join(repeated[:10])}", field="id")
    return records


def _clean_msg(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def write_records(records: Iterable[Record], path: str | Path) -> Path:
    """Write records atomically in the format given by the file suffix."""
    file = Path(path)
    fmt = file_format(file)
    rows = [r.model_dump(mode="json") for r in records]
    with atomic_path(file) as tmp:
        if fmt == "jsonl":
            with tmp.open("w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            flat = [_encode_flat(row) for row in rows]
            if fmt == "csv":
                columns = list(Record.model_fields)
                with tmp.open("w", encoding="utf-8", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=columns)
                    writer.writeheader()
                    writer.writerows(flat)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                columns = {name: [row.get(name) for row in flat] for name in Record.model_fields}
                pq.write_table(pa.table(columns), tmp)
    return file


def _encode_flat(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in JSON_COLUMNS:
        value = out.get(key)
        out[key] = None if value in (None, {}, []) else json.dumps(value, ensure_ascii=False)
    return out


def summarize(records: list[Record]) -> dict[str, dict[str, int]]:
    """Counts per label, split, source and category."""
    return {
        "label": dict(Counter(r.label for r in records).most_common()),
        "split": dict(Counter(r.split or "(none)" for r in records).most_common()),
        "source": dict(Counter(r.source for r in records).most_common()),
        "category": dict(Counter(r.category or "(none)" for r in records).most_common()),
    }
