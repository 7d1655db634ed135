"""Constitutional Guard: constitutional classifiers and guarded generation for open-weight LLMs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("constitutional-guard")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
