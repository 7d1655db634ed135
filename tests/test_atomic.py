"""Atomic writes: complete or absent, the old content kept on failure, permissions as a plain write gives them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from constitutional_guard.atomic import atomic_dir, atomic_path, write_json_atomic, write_text_atomic


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_files_and_folders_get_the_umask_permissions(tmp_path: Path, umask_027: None) -> None:
    write_json_atomic(tmp_path / "report" / "results.json", {"auroc": 0.9})
    assert json.loads((tmp_path / "report" / "results.json").read_text()) == {"auroc": 0.9}
    assert (tmp_path / "report" / "results.json").stat().st_mode & 0o777 == 0o640
    with atomic_dir(tmp_path / "bundle") as folder:
        (folder / "guard.yaml").write_text("x", encoding="utf-8")
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o750


def test_a_failed_write_keeps_the_old_content_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new", encoding="utf-8")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "bundle") as folder:
        (folder / "half").write_text("x", encoding="utf-8")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
