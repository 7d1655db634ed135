"""Read a corpus built by ``cguard data build``: ``DIR/{binary,three_class}/{split}.jsonl``."""

from __future__ import annotations

from pathlib import Path

from constitutional_guard.data.io import read_records
from constitutional_guard.data.schema import SPLITS, Record
from constitutional_guard.errors import InputError

SCHEMES: tuple[str, ...] = ("binary", "three_class")


def split_path(corpus_dir: str | Path, split: str, scheme: str = "binary") -> Path:
    """Where one split of one label scheme lives inside a corpus directory."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown label scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return Path(corpus_dir) / scheme / f"{split}.jsonl"


def load_split(corpus_dir: str | Path, split: str, scheme: str = "binary") -> list[Record]:
    """The records of one split (``train``, ``validation``, ``calibration``, ``test``) of a built corpus."""
    path = split_path(corpus_dir, split, scheme)
    if not path.exists():
        raise InputError.one(path, "no such corpus file: build one with `cguard data build --out DIR`")
    return read_records(path)
