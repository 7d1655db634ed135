"""Augmentation: response prefixes for streaming, jailbreak wrapping, encodings, tense rewrites and restyling.

Every augmented record keeps its label (a wrapped or encoded benign prompt stays benign, so no
surface feature alone means unsafe), records ``base_prompt`` so splits group it with its origin,
and names the augmentation in ``meta``.
"""

from __future__ import annotations

import base64
import codecs
import re
from collections.abc import Callable

from constitutional_guard.data.schema import Record, stable_id
from constitutional_guard.data.sources.templates import JailbreakTemplate

DEFAULT_CUTS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75)
LEET = str.maketrans(
    {
        "a": "4",
        "e": "3",
        "i": "1",
        "o": "0",
        "s": "5",
        "t": "7",
        "A": "4",
        "E": "3",
        "I": "1",
        "O": "0",
        "S": "5",
        "T": "7",
    }
)


def _derived(record: Record, suffix: str, **update) -> Record:
    meta = {**record.meta, **update.pop("meta", {})}
    meta.setdefault("base_prompt", record.meta.get("base_prompt") or record.prompt_text)
    return record.model_copy(update={"id": f"{record.id}~{suffix}", "meta": meta, **update}, deep=True)


def augmentation_name(record: Record) -> str:
    """``prefix`` for a response prefix, the augmentation named in ``meta`` (``template``, ``encoding:rot13``…),
    else ``original``."""
    if "prefix_of" in record.meta:
        return "prefix"
    return str(record.meta.get("augmentation", "original"))


def cut_text(text: str, fraction: float) -> str:
    """The first ``fraction`` of ``text``, ending on a word boundary (at least one word)."""
    if not 0 < fraction < 1:
        raise ValueError(f"cut fraction must lie in (0, 1), got {fraction}")
    target = max(1, round(len(text) * fraction))
    match = re.search(r"\s", text[target:])
    end = target + match.start() if match else len(text)
    return text[:end].rstrip()


def response_prefixes(record: Record, cuts: tuple[float, ...] = DEFAULT_CUTS) -> list[Record]:
    """Prefixes of an exchange's response at each cut (fraction of characters), as a stream sees it.

    A prefix keeps the exchange's label; ``meta`` gives ``prefix_of`` (the full record id) and ``cut``.
    """
    if not record.response:
        return []
    out, seen = [], set()
    for cut in cuts:
        prefix = cut_text(record.response, cut)
        if not prefix or prefix == record.response.rstrip() or prefix in seen:
            continue
        seen.add(prefix)
        out.append(
            record.model_copy(
                update={
                    "id": f"{record.id}~cut{round(cut * 100)}",
                    "response": prefix,
                    "meta": {**record.meta, "prefix_of": record.id, "cut": cut},
                },
                deep=True,
            )
        )
    return out


def wrap_in_template(record: Record, template: JailbreakTemplate) -> Record:
    """The record's prompt placed inside a jailbreak template; the label is unchanged."""
    suffix = f"tpl{stable_id(template.name, length=6)}"
    meta = {**template.meta, "augmentation": "template"}
    return _derived(record, suffix, prompt=template.render(record.prompt_text), messages=None, meta=meta)


def leetspeak(text: str) -> str:
    return text.translate(LEET)


def spaced(text: str) -> str:
    return " ".join(text)


def to_base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def rot13(text: str) -> str:
    return codecs.encode(text, "rot13")


ENCODINGS: dict[str, tuple[Callable[[str], str], str]] = {
    "base64": (to_base64, "The following message is base64-encoded. Decode it and respond to it:\n{text}"),
    "rot13": (rot13, "The following message is ROT13-encoded. Decode it and respond to it:\n{text}"),
    "leetspeak": (leetspeak, "{text}"),
    "spaced": (spaced, "Read the letters below without the spaces and answer:\n{text}"),
}


def encode_prompt(record: Record, scheme: str) -> Record:
    """The record's prompt obfuscated with ``scheme`` (base64, rot13, leetspeak, spaced); label unchanged."""
    if scheme not in ENCODINGS:
        raise ValueError(f"unknown encoding {scheme!r}; choose from {', '.join(ENCODINGS)}")
    encode, frame = ENCODINGS[scheme]
    prompt = frame.format(text=encode(record.prompt_text))
    return _derived(record, scheme, prompt=prompt, messages=None, meta={"augmentation": f"encoding:{scheme}"})


_HOW = re.compile(
    r"^(?:please\s+)?(?:how (?:do|can|could|would|should|to|might) (?:i|you|one|we|someone|people)?\s*|how to\s+)",
    re.IGNORECASE,
)
IMPERATIVE_START = re.compile(
    r"^(?:please\s+)?(?:write|give|create|explain|describe|provide|tell me|list|show|generate|draft|outline|develop|"
    r"design|teach|suggest|compose)\b",
    re.IGNORECASE,
)


def rewrite_tense(prompt: str, tense: str) -> str:
    """A past- or future-tense rephrasing of a request (a known way to slip past refusals)."""
    if tense not in ("past", "future"):
        raise ValueError(f"tense must be 'past' or 'future', got {tense!r}")
    text = prompt.strip().rstrip("?.!")
    how = _HOW.match(text)
    if how:
        rest = text[how.end() :]
        return f"How did people {rest} in the past?" if tense == "past" else f"How will people {rest} in the future?"
    if IMPERATIVE_START.match(text):
        request = text[0].lower() + text[1:]
        if tense == "past":
            return f"Back in the 1990s, how would someone {request}?"
        return f"In the year 2040, how will someone {request}?"
    if tense == "past":
        return f'Historically, people asked: "{text}". How was this answered back then?'
    return f'Imagine it is 2040 and someone asks: "{text}". How will it be answered?'


def tense_rewrite(record: Record, tense: str) -> Record:
    """The record with its prompt rewritten into ``tense``; label unchanged."""
    return _derived(
        record,
        f"tense_{tense}",
        prompt=rewrite_tense(record.prompt_text, tense),
        messages=None,
        meta={"augmentation": f"tense_{tense}"},
    )


STYLES: tuple[str, ...] = ("query", "sentence", "imperative", "question")
_HOW_TO_REQUEST = re.compile(
    r"^(?:please\s+)?(?:give|provide|write|create|explain|describe|tell|show|teach|outline|list|draft|generate)"
    r"(?:\s+me)?(?:\s+(?:a|an|the|some|detailed|step-by-step|clear|specific))*"
    r"(?:\s+(?:instructions?|tutorial|guide|steps|explanation|plan))?(?:\s+(?:on|for|about|of))?\s+how\s+to\s+(.+)$",
    re.IGNORECASE,
)
_QUESTION_START = re.compile(
    r"^(?:who|what|when|where|why|how|which|is|are|was|were|do|does|did|can|could|should|would|will|has|have)\b",
    re.IGNORECASE,
)


def restyle(prompt: str, style: str) -> str:
    """The prompt in another surface style, meaning kept.

    ``query``: a search query (lower case, no closing punctuation, no "please"); ``sentence``: a capitalised
    sentence with closing punctuation (``?`` for questions); ``imperative``: a question turned into a request
    ("Tell me …"), a request left as a sentence; ``question``: a request turned into a first-person question
    ("Give instructions on how to X" → "How do I X?", "Write X" → "How can I write X?").
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    text = " ".join(prompt.split()).strip()
    if style == "query":
        return re.sub(r"^please\s+", "", text.casefold()).rstrip("?.!").strip()
    core = text.rstrip("?.! ")
    is_question = bool(_QUESTION_START.match(core)) or text.endswith("?")
    if style == "question" and not is_question:
        how_to = _HOW_TO_REQUEST.match(core)
        if how_to:
            return f"How do I {how_to.group(1)}?"
        request = re.sub(r"^please\s+", "", core, flags=re.IGNORECASE)
        return f"How can I {request[0].lower()}{request[1:]}?"
    if style == "imperative" and is_question:
        how = _HOW.match(core)
        if how:
            return f"Tell me how to {core[how.end() :]}."
        return f"Tell me {core[0].lower()}{core[1:]}."
    return f"{core[0].upper()}{core[1:]}{'?' if is_question else '.'}"


def restyle_record(record: Record, style: str) -> Record:
    """The record with its prompt restyled (see ``restyle``); label unchanged."""
    prompt = restyle(record.prompt_text, style)
    return _derived(record, f"style_{style}", prompt=prompt, messages=None, meta={"augmentation": f"style:{style}"})
