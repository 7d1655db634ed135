"""Shared fixtures: tiny random models by default, real embedded models for the `real` tier."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_models import DEVICE, build_tiny_causal_lm, build_tiny_encoder


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def sharp_model_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LM re-drawn with larger weights, so its next-token distribution depends on the whole input
    and LoRA updates move it."""
    import torch

    from constitutional_guard.models.loading import load_causal_lm

    lm = load_causal_lm(str(tiny_lm_dir), device=DEVICE)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in lm.model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.2)
    out = tmp_path_factory.mktemp("sharp-lm")
    lm.model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """A module's feature caches (tiny test encoders and LMs) go to a temporary cache, not the user's; a module
    opts in with ``pytestmark = pytest.mark.usefixtures("private_cache")``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CGUARD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2 dense copy, materialised once into the user cache."""
    from constitutional_guard.models.embedded import materialize

    return materialize("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from constitutional_guard.models.embedded import materialize

    return materialize("minilm-l6")


@pytest.fixture
def wheel_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], Path]:
    """Writes ``{path: text}`` files under a folder standing in for the installed data wheels (one folder per
    package module) and makes the wheel readers read from it; returns that folder."""
    from constitutional_guard.data.sources import package_data

    def write(files: dict[str, str]) -> Path:
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text, encoding="utf-8")
        monkeypatch.setattr(package_data, "_package_root", lambda package: tmp_path / package.module)
        return tmp_path

    return write
