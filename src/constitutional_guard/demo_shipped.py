"""The demo's classifiers, trained once and shipped, so that a first run fits its budget on any 2-core CPU.

Training them reads about 24,000 records with MiniLM and the target model's states (the exchange classifier) and
17,000 prompts with all-mpnet-base-v2 and those states (the input check): on a 2-core CPU without AMX about two hours
and 20 minutes. Their heads (a few MB) and the scores of the calibration split they were calibrated on (cross-source
scores for the input check's prompts) therefore ship under ``demo_assets/<stage>/``, with what they were made from:
the settings that shape them and a fingerprint of the corpus splits that did (train, validation, calibration).
The demo uses them only when both match what it is about to build: it copies the encoder beside the head,
calibrates the thresholds from the shipped scores (the same code path as after training, with the demo's targets)
and measures the test split itself. Otherwise it trains, and says why. ``cguard demo --export-classifiers DIR``
trains both from scratch and writes these files.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from constitutional_guard.atomic import atomic_path, write_json_atomic
from constitutional_guard.data.corpus import split_path
from constitutional_guard.errors import InputError

if TYPE_CHECKING:
    from constitutional_guard.data.schema import Record

SHIPPED_DIR = Path(__file__).parent / "demo_assets"
SHIPPED_FILE = "shipped.json"
SCORES_FILE = "calibration_scores.json"
HEAD_FILE = "head.safetensors"
CONFIG_FILE = "classifier_config.json"
EXPORT_COMMAND = "cguard demo --export-classifiers DIR"
SPLITS = ("train", "validation", "calibration")


def corpus_fingerprint(corpus: str | Path) -> str:
    """SHA-256 over the binary train, validation and calibration split files (a built corpus is byte-stable)."""
    digest = hashlib.sha256()
    for split in SPLITS:
        path = split_path(corpus, split)
        digest.update(split.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def shipped_digests(root: Path | None = None) -> dict[str, str]:
    """A short SHA-256 of every shipped classifier file, by its path under ``root`` (default: what ships)."""
    root = root or SHIPPED_DIR
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for path in sorted(root.glob("*/*"))
        if path.is_file()
    }


def export_classifier(
    classifier_dir: str | Path,
    corpus: str | Path,
    recipe: dict[str, Any],
    calibration: Sequence[Record],
    scores: Sequence[float],
    scores_from: str,
    out: str | Path,
) -> Path:
    """Write a trained classifier's head, config and calibration scores, and what they were made from (``recipe``:
    the settings that shaped them; the corpus, by fingerprint), to ``out``."""
    from constitutional_guard import __version__

    if len(scores) != len(calibration):
        raise ValueError(f"{len(scores)} calibration scores for {len(calibration)} calibration records")
    source, target = Path(classifier_dir), Path(out)
    target.mkdir(parents=True, exist_ok=True)
    with atomic_path(target / HEAD_FILE) as tmp:
        shutil.copyfile(source / HEAD_FILE, tmp)
    config = json.loads((source / CONFIG_FILE).read_text(encoding="utf-8"))
    config["training"] = {**config.get("training", {}), "data_dir": ""}  # the user's corpus is set at install
    write_json_atomic(target / CONFIG_FILE, config)
    write_json_atomic(
        target / SCORES_FILE,
        {"scores_from": scores_from, "ids": [r.id for r in calibration], "scores": [float(s) for s in scores]},
    )
    write_json_atomic(
        target / SHIPPED_FILE,
        {
            "command": EXPORT_COMMAND,
            "created_with": __version__,
            "recipe": recipe,
            "corpus_fingerprint": corpus_fingerprint(corpus),
        },
    )
    return target


class ShippedClassifier:
    """A shipped classifier that matches the demo's recipe and corpus (``find``)."""

    def __init__(self, folder: Path, provenance: str):
        self.folder = folder
        self.provenance = provenance
        """How it was made, in words."""

    @classmethod
    def find(
        cls, stage: str, corpus: str | Path, recipe: dict[str, Any], root: Path | None = None
    ) -> tuple[ShippedClassifier | None, str]:
        """The classifier of demo stage ``stage`` under ``root`` (default: what ships) if it was made with these
        settings (``recipe``) and this corpus, else None; and why, in words."""
        folder = (root or SHIPPED_DIR) / stage
        path = folder / SHIPPED_FILE
        if not path.exists():
            return None, f"no {stage} ships with this installation"
        try:
            shipped = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError.one(path, f"not valid JSON: {exc}") from exc
        if not isinstance(shipped, dict) or not isinstance(shipped.get("recipe"), dict):
            raise InputError.one(path, "expected an object with a `recipe` object")
        made_with = shipped["recipe"]
        changed = sorted(key for key in set(recipe) | set(made_with) if made_with.get(key) != recipe.get(key))
        if changed:
            return None, f"the shipped one was made with other settings ({', '.join(changed)})"
        if shipped.get("corpus_fingerprint") != corpus_fingerprint(corpus):
            return None, "the shipped one was made from another corpus (other data wheels or shipped data)"
        command = shipped.get("command", EXPORT_COMMAND)
        return cls(folder, f"made by `{command}` from this corpus and recipe"), "it matches"

    def install(self, out: str | Path, corpus: str | Path, encoder_source: str | Path) -> Path:
        """A classifier directory: the shipped head and config (trained on ``corpus``) beside a copy of the encoder,
        and ``shipped.json``, which says where the head came from."""
        from constitutional_guard.classifiers.embedding import ENCODER_DIR

        target = Path(out)
        target.mkdir(parents=True, exist_ok=True)
        for name in (HEAD_FILE, SHIPPED_FILE):
            shutil.copyfile(self.folder / name, target / name)
        config = json.loads((self.folder / CONFIG_FILE).read_text(encoding="utf-8"))
        config["training"] = {**config.get("training", {}), "data_dir": str(corpus)}
        write_json_atomic(target / CONFIG_FILE, config)
        shutil.copytree(encoder_source, target / ENCODER_DIR, dirs_exist_ok=True)
        return target

    def calibration_scores(self, calibration: Sequence[Record]) -> tuple[list[float], str]:
        """The shipped scores of ``calibration``, in its order, and where they came from; errors name the file."""
        path = self.folder / SCORES_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            by_id = dict(zip(data["ids"], data["scores"], strict=True))
            scores = [float(by_id[r.id]) for r in calibration]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InputError.one(path, f"no usable score for every calibration record: {exc!r}") from exc
        if len(by_id) != len(calibration):
            raise InputError.one(path, f"{len(by_id)} scores for {len(calibration)} calibration records")
        if not all(math.isfinite(score) for score in scores):
            raise InputError.one(path, "a calibration score is not a finite number")
        return scores, str(data.get("scores_from", "shipped"))
