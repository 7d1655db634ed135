"""Constitution-driven prompts: the policy's own examples, and new prompts of both labels written by an LM.

The constitution's categories and examples are what public sets cover least: harmful requests phrased as a
user would type them, and harmless questions that look close (history, medicine, security education,
chemistry, fiction, self-defence, …). An embedded LM writes lists of new ones per category (harmful from the
``disallowed`` examples, varied by angle, operational or in everyday words; hard benign from the ``allowed``
examples, varied by persona, and harmless requests that use a word of harm in another sense); the
instruction gives the label, every record names the generating model, and ``second_check`` keeps only those a
judge scores in agreement with their label, with cut-offs set on the constitution's own examples.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from constitutional_guard import __version__
from constitutional_guard.constitution import Constitution
from constitutional_guard.data.generate import GenerationSettings, Progress, generate_responses
from constitutional_guard.data.refusal import is_refusal
from constitutional_guard.data.schema import CONSTITUTION_SOURCE, SYNTHETIC_PREFIX, Record, stable_id
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
_QUESTION = re.compile(
    r"^(?:how|what|where|which|who|why|when|can|could|is|are|do|does|should|would|i need|i want)\b", re.IGNORECASE
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


def clean_question(line: str, whole: bool = False) -> str | None:
    """One generated list item as a prompt, or None when it is not a usable request.

    A question or request must close with ``?`` (or ``.`` for a request) unless ``whole`` says the line is
    known to be complete (a later line followed it), since the last item may be cut off by the token limit."""
    candidate = _LEAD.sub("", line).strip().strip("\"“”'").strip()
    if not 15 <= len(candidate) <= 300 or is_refusal(candidate) or _NOT_A_REQUEST.match(candidate):
        return None
    request = bool(_IMPERATIVE.match(candidate) or _QUESTION.match(candidate))
    if candidate.endswith("?") or (_IMPERATIVE.match(candidate) and candidate.endswith(".")):
        return candidate
    return candidate if whole and request else None  # a statement, an answer, or an item cut off


HARMFUL_INSTRUCTION = (
    "I am building a training set for a safety classifier that must learn to block harmful requests. "
    "Category: {name} ({description})\n\nExamples of requests it must block:\n{examples}\n\n"
    "Write a numbered list of 8 new, short, first-person requests of this kind, {angle}, as a user would type "
    "them. Output only the list."
)
EVERYDAY_HARMFUL_INSTRUCTION = (
    "I am building a training set for a safety classifier that must learn to block harmful requests, including "
    "those that sound harmless. Category: {name} ({description})\n\nExamples of requests it must block:\n"
    "{examples}\n\nWrite a numbered list of 8 new requests of this kind, {angle}. Each must still ask for what "
    "this category forbids. Output only the list."
)
HARD_BENIGN_INSTRUCTION = (
    "Topic area: {name} ({description})\n\nA cautious content filter might wrongly refuse questions that only "
    "touch this topic but are harmless: history, safety, medicine, defence, policy or fiction. Examples of such "
    "harmless questions:\n{examples}\n\nWrite a numbered list of 8 new, short, varied questions of this kind that "
    "{persona} might ask, different from the examples. Output only the list."
)
NAMED_BENIGN_INSTRUCTION = (
    "Topic area: {name} ({description})\n\nQuestions that name a dangerous thing of this area (a particular "
    "weapon, substance, attack, crime, atrocity, programme or incident) but ask about its history, effects, law, "
    "detection, treatment, prevention or portrayal in fiction are harmless, yet a cautious content filter might "
    "wrongly refuse them. Examples:\n{examples}\n\nWrite a numbered list of 8 new, short questions of this kind "
    "that {persona} might ask, each naming a specific real event, substance, weapon or case, different from the "
    "examples. Output only the list."
)
FIGURATIVE_BENIGN_INSTRUCTION = (
    "A cautious content filter might wrongly refuse harmless requests only because they contain a word like "
    "\"{word}\". Write a numbered list of 8 new, short, harmless questions or requests a user might type, each "
    "using the word \"{word}\" {angle}, in the way these use other such words:\n{examples}\n\n"
    "A full answer to each must hurt no one. Output only the list."
)
HARD_BENIGN_INSTRUCTIONS: tuple[str, ...] = (HARD_BENIGN_INSTRUCTION, NAMED_BENIGN_INSTRUCTION)
"""Taken in turns, two lists each: a category's first two lists ask for questions that touch the topic, the
next two for questions that name its dangerous things, and so on."""
HARMFUL_ANGLES: tuple[str, ...] = (
    "asking how to do it",
    "asking where or how to get what is needed",
    "with a made-up excuse for asking",
    "typed casually in lower case",
)

EVERYDAY_ANGLES: tuple[str, ...] = (
    "as short, plain questions in everyday words, with no technical or alarming terms",
    "as innocent-sounding questions that take a harmful belief or intention for granted",
    "as questions about a particular person, group or place the user has in mind",
    "as casual questions a curious or angry person might type",
)
"""Harm asked in everyday words: stereotype questions, prying into a named person's life, a bully's favour,
the kind of request public sets hold and the ``HARMFUL_ANGLES`` lists (technical, operational) miss."""


FIGURATIVE_ANGLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("in a figurative or idiomatic sense", (
        "How do I kill time on a long flight?", "My comedy set bombed; how do I win the crowd back?",
        "How can I make my cover letter a killer one?", "I bombed my exam; how do I recover my grade?",
    )),
    ("in their technical or everyday meaning (computing, cooking, photography, gardening, chores)", (
        "How do I kill a zombie process in Linux?", "How do I shoot a portrait in low light?",
        "How do I execute a shell script on startup?", "What's the best way to crush garlic?",
    )),
    ("about games, sport, competitions or fiction, where the harm is only played", (
        "How do I beat the final boss in Elden Ring?", "What's a good strategy to ambush players in paintball?",
        "How can my chess opening destroy my opponent's defence?", "How should I plan the heist in my board game?",
    )),
    ("about harmless targets: pests, weeds, stains, bugs in code, bad habits", (
        "How do I kill the weeds between my patio stones?", "What poison works on cockroaches but is safe for pets?",
        "How do I wipe out a bug that crashes my app?", "How can I destroy my habit of checking my phone?",
    )),
)
"""Harmless requests a filter that matches words refuses: a harmful word in another sense (idiom, technical
term, game, harmless target). Each angle's examples are rotated into the instruction."""
FIGURATIVE_WORDS: tuple[str, ...] = (
    "kill", "shoot", "murder", "bomb", "steal", "attack", "destroy", "poison", "blow up", "hack", "crack",
    "execute", "slaughter", "smash", "beat", "stab", "nuke", "trap", "ambush", "rob", "choke", "strangle", "gun",
    "knife", "drug", "high", "hit", "burn", "crush", "wipe out", "terminate", "hijack", "exploit", "torture",
    "target", "assault", "inject", "fire",
)
"""Words of harm that everyday requests use in other senses; one list per word and angle. Not "die" or
"overdose": asked for harmless uses of those, a generator writes questions about dying without pain, which the
self-harm policy covers."""


@dataclass(frozen=True)
class SynthesisRequest:
    """One instruction to the generator: a list of prompts for ``category`` (None: no one category), all labelled
    ``label``."""

    category: str | None
    label: str
    instruction: str


def _rotated(examples: Sequence[str], shift: int, count: int = 4) -> str:
    shift %= max(len(examples), 1)
    return "\n".join(f"- {e}" for e in (list(examples[shift:]) + list(examples[:shift]))[:count])


def labelled_synthesis_requests(
    constitution: Constitution, harmful_lists: int, benign_lists: int, everyday_lists: int = 0,
    figurative_lists: int = 0,
) -> list[SynthesisRequest]:
    """Instructions for new prompts of both labels from the constitution's categories and examples.

    Harmful: each harmful category's ``disallowed`` examples, ``harmful_lists`` instructions per category,
    varied by angle, then ``everyday_lists`` more that ask for the same harm in everyday words
    (``EVERYDAY_ANGLES``). Hard benign: the ``allowed`` examples of every category (the harmless neighbours of a
    harmful category and the harmless categories), ``benign_lists`` per category, varied by persona and taking
    ``HARD_BENIGN_INSTRUCTIONS`` in turns; then ``figurative_lists`` per word of ``FIGURATIVE_WORDS`` of harmless
    requests that use it in another sense (``FIGURATIVE_ANGLES``, in turns; no category).
    """
    requests = []
    for cat in constitution.harmful:
        for i in range(harmful_lists):
            text = HARMFUL_INSTRUCTION.format(
                name=cat.name.replace("_", " "),
                description=cat.description.strip().rstrip("."),
                examples=_rotated(cat.disallowed, i * 2),
                angle=HARMFUL_ANGLES[i % len(HARMFUL_ANGLES)],
            )
            requests.append(SynthesisRequest(cat.name, "unsafe", text))
        for i in range(everyday_lists):
            text = EVERYDAY_HARMFUL_INSTRUCTION.format(
                name=cat.name.replace("_", " "),
                description=cat.description.strip().rstrip("."),
                examples=_rotated(cat.disallowed, i * 2 + 1),
                angle=EVERYDAY_ANGLES[i % len(EVERYDAY_ANGLES)],
            )
            requests.append(SynthesisRequest(cat.name, "unsafe", text))
    for cat in constitution.harmful + constitution.harmless:
        for i in range(benign_lists):
            text = HARD_BENIGN_INSTRUCTIONS[i // 2 % len(HARD_BENIGN_INSTRUCTIONS)].format(
                name=cat.name.replace("_", " "),
                description=cat.description.strip().rstrip("."),
                examples=_rotated(cat.allowed, i * 2),
                persona=PERSONAS[(i + len(cat.name)) % len(PERSONAS)],
            )
            requests.append(SynthesisRequest(cat.name, "safe", text))
    for j, word in enumerate(FIGURATIVE_WORDS):
        for i in range(figurative_lists):
            angle, examples = FIGURATIVE_ANGLES[(i + j) % len(FIGURATIVE_ANGLES)]
            text = FIGURATIVE_BENIGN_INSTRUCTION.format(
                word=word, angle=angle, examples=_rotated(examples, i + j, count=3)
            )
            requests.append(SynthesisRequest(None, "safe", text))
    return requests


def listed_prompts(text: str) -> list[str]:
    """The usable prompts of a generated list (see ``clean_question``), in order."""
    lines = [line for line in text.splitlines() if line.strip()]
    return [q for i, line in enumerate(lines) if (q := clean_question(line, whole=i < len(lines) - 1))]


def synthesize_prompts(
    constitution: Constitution,
    lm: Any,
    model_name: str,
    harmful_lists: int = 8,
    benign_lists: int = 2,
    progress: Progress | None = None,
    batch_size: int = 8,
    exclude: Sequence[str] = (),
    max_new_tokens: int = 220,
    everyday_lists: int = 0,
    figurative_lists: int = 0,
) -> list[Record]:
    """Candidate prompts of both labels written by ``lm`` (greedy, cached per instruction, so resumable).

    Deduplicated against each other and ``exclude`` (normalised text); the label comes from the instruction,
    so the caller keeps only what a second check agrees with (``second_check``)."""
    requests = labelled_synthesis_requests(constitution, harmful_lists, benign_lists, everyday_lists, figurative_lists)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    answers = generate_responses(lm, model_name, [r.instruction for r in requests], settings, progress)
    seen = {normalize_text(p) for p in exclude}
    records = []
    for index, request in enumerate(requests):
        for prompt in listed_prompts(answers[request.instruction]):
            key = normalize_text(prompt)
            if key in seen:
                continue
            seen.add(key)
            records.append(
                Record(
                    id=f"synthetic/{model_name}-{stable_id(prompt)}",
                    prompt=prompt,
                    label=request.label,
                    source=f"{SYNTHETIC_PREFIX}{model_name}",
                    category=request.category,
                    meta={
                        "source_file": "constitution",
                        "package": "constitutional-guard",
                        "version": __version__,
                        "row": index,
                        "generated_by": model_name,
                        "constitution": constitution.name,
                        "max_new_tokens": max_new_tokens,
                    },
                )
            )
    return records


@dataclass(frozen=True)
class CheckThresholds:
    """A judge's P(unsafe) cut-offs, set on the constitution's own labelled examples."""

    keep_unsafe_at_least: float
    keep_safe_below: float


def check_thresholds(
    safe_scores: Sequence[float], unsafe_scores: Sequence[float], quantile: float = 0.25
) -> CheckThresholds:
    """Keep a generated harmful prompt when the judge scores it at least as high as the lowest ``quantile`` of the
    constitution's disallowed examples, and a benign one when it scores below the top ``quantile`` of its allowed
    examples. The judge's scale need not be calibrated: only its ranking against the policy's examples counts."""
    if not safe_scores or not unsafe_scores:
        raise ValueError("the second check needs the constitution's allowed and disallowed examples")
    return CheckThresholds(
        keep_unsafe_at_least=float(np.quantile(unsafe_scores, quantile)),
        keep_safe_below=float(np.quantile(safe_scores, 1.0 - quantile)),
    )


def second_check(records: Sequence[Record], scores: Sequence[float], thresholds: CheckThresholds) -> list[Record]:
    """The records whose judge score agrees with their label, each carrying its score in ``meta``."""
    kept = []
    for record, score in zip(records, scores, strict=True):
        if not np.isfinite(score):
            continue
        agrees = (
            score >= thresholds.keep_unsafe_at_least if record.is_unsafe else score < thresholds.keep_safe_below
        )
        if agrees:
            kept.append(record.model_copy(update={"meta": {**record.meta, "check_score": round(float(score), 6)}}))
    return kept
