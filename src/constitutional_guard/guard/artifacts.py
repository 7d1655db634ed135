"""Load a bundle's artifacts so that a broken one fails at start with ``file: what is wrong``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from constitutional_guard.errors import InputError


def unreadable_safetensors(directory: Path) -> InputError | None:
    """The first ``*.safetensors`` file in ``directory`` whose header or data cannot be read, as an error."""
    for file in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):  # reading the header checks that the data covers the file
                pass
        except Exception as exc:  # truncated, empty or garbage files raise safetensors' own errors
            return InputError.one(file, f"not a readable safetensors file ({exc})")
    return None


def check_finite_parameters(model: Any, directory: Path) -> None:
    """Raise naming the weights file when a parameter of ``model`` (a torch module) holds NaN or infinity."""
    if not isinstance(model, torch.nn.Module):
        return
    for name, param in model.named_parameters():
        if param.is_floating_point() and not bool(torch.isfinite(param).all()):
            file = next(iter(sorted(directory.glob("*.safetensors"))), directory)
            raise InputError.one(file, f"parameter {name} holds NaN or infinite values")


def load_checked_classifier(directory: str | Path) -> Any:
    """``load_classifier(directory)``, with every failure reported as an ``InputError`` naming the file at fault."""
    from constitutional_guard.classifiers.base import CONFIG_NAME, load_classifier

    folder = Path(directory)
    broken = unreadable_safetensors(folder)
    if broken is not None:
        raise broken
    try:
        classifier = load_classifier(folder)
    except InputError:
        raise
    except json.JSONDecodeError as exc:
        raise InputError.one(folder / CONFIG_NAME, f"invalid JSON: {exc.msg}", line=exc.lineno) from exc
    except UnicodeDecodeError as exc:
        raise InputError.one(folder / CONFIG_NAME, f"not UTF-8 text (byte {exc.start})") from exc
    except Exception as exc:
        raise InputError.one(folder, f"cannot load the classifier: {type(exc).__name__}: {exc}") from exc
    check_finite_parameters(getattr(classifier, "model", None), folder)
    return classifier


HUB_CHECK_TIMEOUT_S = 5.0
OFFLINE_VALUES = ("1", "on", "yes", "true")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or the older ``TRANSFORMERS_OFFLINE``) is set."""
    return any(os.environ.get(name, "").strip().lower() in OFFLINE_VALUES
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def target_model_problem(name: str) -> str | None:
    """Why ``name`` (a hub id that is neither an embedded alias nor a local folder) cannot be loaded, if it cannot.

    Answers at once from the local cache or one short hub request, instead of the loader's retries.
    """
    from huggingface_hub import model_info, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError

    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None
    except HFValidationError:
        return f"{name!r} is not an embedded alias, an existing local folder or a valid hub model id"
    if hub_offline():
        return (f"{name!r} is not an embedded alias, a local folder or in the Hugging Face cache, and the hub is "
                "off (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set)")
    try:
        model_info(name, timeout=HUB_CHECK_TIMEOUT_S)
    except RepositoryNotFoundError:
        return f"{name!r} is not an embedded alias, a local folder or a model on the Hugging Face hub"
    except HfHubHTTPError:
        return None  # gated or rate-limited: the loader reports it with its own message
    except Exception as exc:  # no network, DNS failure, timeout
        return (f"{name!r} is not an embedded alias or a local folder, and the Hugging Face hub cannot be reached "
                f"({type(exc).__name__}: {exc})")
    return None


def load_target_model(name: str, bundle_file: Path, device: Any, dtype: Any) -> Any:
    """``load_causal_lm(name)`` with every failure reported against ``target_model`` in ``bundle_file``."""
    from constitutional_guard.models.embedded import EMBEDDED_MODELS, EmbeddedModelError
    from constitutional_guard.models.loading import load_causal_lm

    local = Path(name).expanduser()
    if name not in EMBEDDED_MODELS and not local.exists():
        problem = target_model_problem(name)
        if problem is not None:
            raise InputError.one(bundle_file, problem, field="target_model")
    if local.is_dir():
        broken = unreadable_safetensors(local)
        if broken is not None:
            raise broken
    try:
        return load_causal_lm(name, device=device, dtype=dtype)
    except (EmbeddedModelError, OSError, ValueError) as exc:
        message = f"cannot load target model {name!r}: {type(exc).__name__}: {exc}"
        raise InputError.one(bundle_file, message, field="target_model") from exc
