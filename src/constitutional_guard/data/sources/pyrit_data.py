"""Readers for the human-labelled data that ships in the ``pyrit`` wheel (MIT).

Label mapping (three-class for exchanges, binary for prompts):

- ``scorer_evals/harm/*.csv``: a response whose mean human harm score is >= 0.5 is
  ``unsafe_compliance``; below that it is ``safe_refusal`` when the refusal detector fires,
  else ``safe_compliance`` (humans judged the content harmless).
- ``scorer_evals/objective/*.csv``: objective achieved (1) is ``unsafe_compliance``; not achieved (0)
  is ``safe_refusal`` or ``safe_compliance`` as above.
- ``scorer_evals/refusal_scorer/*.csv``: a human refusal (1) whose text reads as a refusal is
  ``safe_refusal`` (a "refusal" that is an off-topic answer is dropped); a non-refusal (0) is
  ``safe_compliance`` only for a benign prompt: on a harmful prompt nothing says whether the answer
  was harmful, so the row is dropped.
- ``jailbreak/many_shot_examples.json``: HarmBench prompts with compliant answers, ``unsafe_compliance``.
- ``seed_datasets/local/adv_bench.prompt``: AdvBench behaviours, ``unsafe`` prompts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from constitutional_guard.constitution import Constitution
from constitutional_guard.data.refusal import is_refusal
from constitutional_guard.data.schema import Record, stable_id
from constitutional_guard.data.sources.categories import map_category
from constitutional_guard.data.sources.package_data import PYRIT, SourceRows, read_commented_csv
from constitutional_guard.data.splits import normalize_text
from constitutional_guard.errors import InputError

HARM_THRESHOLD = 0.5
HARMFUL_REQUEST = re.compile(
    r"\b(bomb|weapon|kill|murder|harm|hateful|hate|harass\w*|steal|hack\w*|phishing|fake news|misinformation|"
    r"manipulat\w*|drugs?|lsd|meth\w*|malware|ransomware|exploit\w*|violen\w*|attack|fraud\w*|illegal\w*|poison\w*|"
    r"suicide|convince|persuasive|inferior|stalk\w*|assault|evade|counterfeit|launder\w*)\b",
    re.IGNORECASE,
)


def _scores(row: dict[str, str], file: Path, line: int) -> list[float]:
    columns = [k for k in row if k and k.startswith("human_score")]
    if not columns:
        raise InputError.one(file, "no human_score column", line=line, field="human_score")
    values = []
    for column in columns:
        raw = (row.get(column) or "").strip()
        if raw == "":
            continue
        try:
            values.append(float(raw))
        except ValueError:
            raise InputError.one(file, f"not a number: {raw!r}", line=line, field=column) from None
    if not values:
        raise InputError.one(file, "no human score given", line=line, field=columns[0])
    return values


def _blank(prompt: str, response: str) -> str | None:
    """The skip reason of an exchange row with a blank side, else None."""
    if not prompt.strip():
        return "blank prompt"
    return None if response.strip() else "blank response"


def _scored_rows(folder: str, out: SourceRows) -> Iterator[tuple[Path, int, dict[str, str], list[float], str, str]]:
    """``(file, line, row, human scores, prompt, response)`` of a scorer-eval folder; blank rows counted in ``out``."""
    for file in sorted(PYRIT.path(f"datasets/scorer_evals/{folder}").glob("*.csv")):
        for line, row in read_commented_csv(file):
            scores = _scores(row, file, line)
            prompt, response = row.get("objective", ""), row.get("assistant_response", "")
            if blank := _blank(prompt, response):
                out.skipped[blank] += 1
                continue
            yield file, line, row, scores, prompt, response


def _non_harmful_label(response: str) -> str:
    return "safe_refusal" if is_refusal(response) else "safe_compliance"


def _exchange(
    source: str, file: Path, line: int, prompt: str, response: str, label: str, category: str | None, **extra
) -> Record:
    return Record(
        id=f"{source}-{stable_id(prompt, response)}",
        prompt=prompt,
        response=response,
        label_scheme="three_class",
        label=label,
        source=source,
        category=map_category(category, unsafe=True),
        meta={**PYRIT.provenance(file, line), "source_category": category, **extra},
    )


def harm_scored(constitution: Constitution | None = None) -> SourceRows:
    """Responses scored for harm on a 0-1 scale by one or three human annotators."""
    out = SourceRows()
    for file, line, row, scores, prompt, response in _scored_rows("harm", out):
        mean = sum(scores) / len(scores)
        label = "unsafe_compliance" if mean >= HARM_THRESHOLD else _non_harmful_label(response)
        out.records.append(
            _exchange(
                "pyrit/harm_scored",
                file,
                line,
                prompt,
                response,
                label,
                row.get("harm_category"),
                human_scores=scores,
            )
        )
    return out


def objective_scored(constitution: Constitution | None = None) -> SourceRows:
    """Responses judged on whether they achieved a harmful objective (1) or not (0)."""
    out = SourceRows()
    for file, line, row, scores, prompt, response in _scored_rows("objective", out):
        achieved = scores[0] >= HARM_THRESHOLD
        label = "unsafe_compliance" if achieved else _non_harmful_label(response)
        out.records.append(
            _exchange(
                "pyrit/objective_scored",
                file,
                line,
                prompt,
                response,
                label,
                row.get("harm_category"),
                objective_achieved=achieved,
            )
        )
    return out


def known_harmful_prompts() -> set[str]:
    """Normalised prompts that pyrit's own harmful sets contain (AdvBench, HarmBench, scored objectives)."""
    prompts = {normalize_text(r.prompt_text) for r in advbench().records + many_shot().records}
    for group in ("harm", "objective"):
        for file in PYRIT.path(f"datasets/scorer_evals/{group}").glob("*.csv"):
            prompts.update(normalize_text(row.get("objective", "")) for _, row in read_commented_csv(file))
    return prompts


def looks_harmful(prompt: str, known: set[str]) -> bool:
    """A prompt is treated as harmful when a harmful set lists it or it names a harmful act."""
    return normalize_text(prompt) in known or HARMFUL_REQUEST.search(prompt) is not None


def refusal_scored(constitution: Constitution | None = None) -> SourceRows:
    """Responses labelled refusal (1) or not (0) by humans; see the module docstring for the mapping."""
    known = known_harmful_prompts()
    out = SourceRows()
    for file, line, _, scores, prompt, response in _scored_rows("refusal_scorer", out):
        refused = scores[0] >= HARM_THRESHOLD
        harmful_prompt = looks_harmful(prompt, known)
        if refused and is_refusal(response):
            label = "safe_refusal"
        elif not refused and not harmful_prompt:
            label = "safe_compliance"
        else:
            out.skipped["refusal label on a non-refusal" if refused else "non-refusal to a harmful prompt"] += 1
            continue
        out.records.append(
            _exchange(
                "pyrit/refusal_scored",
                file,
                line,
                prompt,
                response,
                label,
                None,
                human_refusal=refused,
                harmful_prompt=harmful_prompt,
            )
        )
    return out


def many_shot(constitution: Constitution | None = None) -> SourceRows:
    """HarmBench behaviours with compliant answers (pyrit's many-shot jailbreak examples)."""
    file = PYRIT.path("datasets/jailbreak/many_shot_examples.json")
    rows = json.loads(file.read_text(encoding="utf-8"))
    out = SourceRows()
    for index, row in enumerate(rows):
        prompt, response = row.get("user", ""), row.get("assistant", "")
        if not prompt.strip() or not response.strip():
            raise InputError.one(file, "empty user or assistant text", line=index + 1, field="user")
        out.records.append(
            _exchange(
                "pyrit/many_shot_harmbench", file, index, prompt, response, "unsafe_compliance", row.get("category")
            )
        )
    return out


def advbench(constitution: Constitution | None = None) -> SourceRows:
    """AdvBench: 520 harmful behaviours as instructions (``unsafe`` prompts)."""
    file = PYRIT.path("datasets/seed_datasets/local/adv_bench.prompt")
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    out = SourceRows()
    for index, seed in enumerate(data.get("seeds") or []):
        prompt = str(seed.get("value") or "").strip()
        if not prompt:
            out.skipped["blank prompt"] += 1
            continue
        categories = seed.get("harm_categories") or []
        out.records.append(
            Record(
                id=f"pyrit/advbench-{stable_id(prompt)}",
                prompt=prompt,
                label="unsafe",
                source="pyrit/advbench",
                category=map_category(prompt, unsafe=True) or map_category(" ".join(categories), unsafe=True),
                meta={**PYRIT.provenance(file, index), "source_category": categories},
            )
        )
    return out
