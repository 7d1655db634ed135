"""Streaming activation probes: the cheap first stage of the cascade, scored on every token."""

from constitutional_guard.probes.probe import LinearProbe, ProbeCompatibilityError, ProbeConfig
from constitutional_guard.probes.smoothing import make_smoother

__all__ = ["LinearProbe", "ProbeCompatibilityError", "ProbeConfig", "make_smoother"]
