"""Constitution-driven prompts: the policy's own examples, and new benign prompts written by an LM.

The constitution's harmless categories (history, medicine, security education, chemistry, fiction,
self-defence, …) are the scarce side of safety data: prompts that look dangerous but are fine.
An embedded LM writes new questions for each harmless category from its description, its examples
and a persona; the category fixes the label (``safe``), and every record names the generating model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from constitutional_guard import __version__
from constitutional_guard.constitution import Constitution
from constitutional_guard.data.generate import GenerationSettings, Progress, generate_responses
from constitutional_guard.data.refusal import is_refusal
from constitutional_guard.data.schema import CONSTITUTION_SOURCE, Record, stable_id
from constitutional_guard.data.splits import normalize_text

PERSONAS: tuple[str, ...] = (
    "a high-school student",
    "a nurse",
    "a novelist",
    "a worried parent",
    "a security analyst",
    "a history teacher",
    "a journalist",
    "a university researcher",
)
_NOT_A_REQUEST = re.compile(
    r"^(?:I(?:'m| am| will| can)?\b|Sure\b|Here\b|Of course\b|Questions? that\b)", re.IGNORECASE
)
_IMPERATIVE = re.compile(
    r"^(?:write|explain|describe|tell|list|give|suggest|compare|summari[sz]e|outline|help)\b", re.IGNORECASE
)
_LEAD = re.compile(r"^\s*(?:\d+[.)]\s*|[-*•]\s*|(?:new )?question\s*:\s*|q\s*:\s*)", re.IGNORECASE)


def constitution_examples(constitution: Constitution, origin: str = "constitution") -> list[Record]:
    """The constitution's examples as prompts: ``allowed`` ones safe, ``disallowed`` ones unsafe."""
    records = []
    for group in ("harmful", "harmless"):
        for cat in getattr(constitution, group):
            for field, label in (("allowed", "safe"), ("disallowed", "unsafe")):
                for index, prompt in enumerate(getattr(cat, field)):
                    records.append(
                        Record(
                            id=f"constitution-{stable_id(prompt)}",
                            prompt=prompt,
                            label=label,
                            source=CONSTITUTION_SOURCE,
                            category=cat.name,
                            meta={
                                "source_file": origin,
                                "package": "constitutional-guard",
                                "version": __version__,
                                "row": f"{group}.{cat.name}.{field}[{index}]",
                                "constitution": constitution.name,
                            },
                        )
                    )
    return records


def synthesis_requests(constitution: Constitution, per_category: int) -> list[tuple[str, str]]:
    """(category, instruction) pairs: each harmless category's examples, asking for more like them."""
    requests = []
    for cat in constitution.harmless:
        for i in range(per_category):
            persona = PERSONAS[i % len(PERSONAS)]
            shift = i % len(cat.allowed)
            examples = "\n".join(f"- {e}" for e in cat.allowed[shift:] + cat.allowed[:shift])
            instruction = (
                f"Here are questions {persona} asked about {cat.description.strip().rstrip('.').lower()}:\n"
                f"{examples}\nWrite five more different questions on the same topic, one per line."
            )
            requests.append((cat.name, instruction))
    return requests


def clean_question(line: str) -> str | None:
    """One generated list item as a prompt, or None when it is not a usable request."""
    candidate = _LEAD.sub("", line).strip().strip("\"“”'").strip()
    if not 15 <= len(candidate) <= 300 or is_refusal(candidate) or _NOT_A_REQUEST.match(candidate):
        return None
    if candidate.endswith("?") or (_IMPERATIVE.match(candidate) and candidate.endswith(".")):
        return candidate
    return None  # a statement, an answer, or an item cut off by the token limit


def synthesize_benign_prompts(
    constitution: Constitution,
    lm: Any,
    model_name: str,
    per_category: int = 4,
    progress: Progress | None = None,
    batch_size: int = 8,
    exclude: Sequence[str] = (),
) -> list[Record]:
    """New ``safe`` prompts for the constitution's harmless categories, written by ``lm`` (cached)."""
    requests = synthesis_requests(constitution, per_category)
    settings = GenerationSettings(max_new_tokens=80, batch_size=batch_size)
    answers = generate_responses(lm, model_name, [instruction for _, instruction in requests], settings, progress)
    seen = {normalize_text(p) for p in exclude}
    records = []
    for index, (category, instruction) in enumerate(requests):
        for question in filter(None, map(clean_question, answers[instruction].splitlines())):
            if normalize_text(question) in seen:
                continue
            seen.add(normalize_text(question))
            records.append(
                Record(
                    id=f"synthetic/{model_name}-{stable_id(question)}",
                    prompt=question,
                    label="safe",
                    source="synthetic/constitution",
                    category=category,
                    meta={
                        "source_file": "constitution",
                        "package": "constitutional-guard",
                        "version": __version__,
                        "row": index,
                        "generated_by": model_name,
                        "constitution": constitution.name,
                        "instruction": instruction,
                    },
                )
            )
    return records
