"""The ``cguard`` command line: a thin layer over the library API."""

from constitutional_guard.cli.app import app, main

__all__ = ["app", "main"]
