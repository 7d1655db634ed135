"""Map category names used by public datasets onto the default constitution's category names."""

from __future__ import annotations

import re
from functools import lru_cache

from constitutional_guard.constitution import Constitution, load_constitution

# Ordered: the first keyword found in a (lower-cased) source category wins.
HARMFUL_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("child", "child_sexual_content"),
    ("minor", "child_sexual_content"),
    ("csam", "child_sexual_content"),
    ("self_harm", "self_harm"),
    ("self-harm", "self_harm"),
    ("suicide", "self_harm"),
    ("eating", "self_harm"),
    ("chemical", "weapons_cbrn"),
    ("biolog", "weapons_cbrn"),
    ("cbrn", "weapons_cbrn"),
    ("nuclear", "weapons_cbrn"),
    ("radiolog", "weapons_cbrn"),
    ("explosive", "weapons_cbrn"),
    ("weapon", "conventional_weapons"),
    ("firearm", "conventional_weapons"),
    ("gun", "conventional_weapons"),
    ("cyber", "cyber_attacks"),
    ("malware", "cyber_attacks"),
    ("hack", "cyber_attacks"),
    ("exploit", "cyber_attacks"),
    ("phishing", "fraud_and_scams"),
    ("fraud", "fraud_and_scams"),
    ("scam", "fraud_and_scams"),
    ("financial", "fraud_and_scams"),
    ("theft", "fraud_and_scams"),
    ("insider trading", "fraud_and_scams"),
    ("piracy", "fraud_and_scams"),
    ("copyright", "fraud_and_scams"),
    ("drug", "dangerous_drugs"),
    ("substance", "dangerous_drugs"),
    ("hate", "hate"),
    ("discriminat", "hate"),
    ("bias", "hate"),
    ("toxic", "hate"),
    ("harass", "harassment"),
    ("bully", "harassment"),
    ("sexual", "sexual_content"),
    ("adult", "sexual_content"),
    ("lewd", "sexual_content"),
    ("porn", "sexual_content"),
    ("privacy", "privacy"),
    ("personal", "privacy"),
    ("surveillance", "privacy"),
    ("extrem", "extremism"),
    ("terror", "extremism"),
    ("violen", "violent_crime"),
    ("crime", "violent_crime"),
    ("murder", "violent_crime"),
    ("bodily injury", "violent_crime"),
    ("kill", "violent_crime"),
    ("assault", "violent_crime"),
    ("kidnap", "violent_crime"),
    ("poison", "violent_crime"),
    ("bomb", "weapons_cbrn"),
    ("nerve agent", "weapons_cbrn"),
    ("ransomware", "cyber_attacks"),
    ("virus", "cyber_attacks"),
    ("password", "cyber_attacks"),
    ("steal", "fraud_and_scams"),
    ("counterfeit", "fraud_and_scams"),
    ("launder", "fraud_and_scams"),
    ("cocaine", "dangerous_drugs"),
    ("heroin", "dangerous_drugs"),
    ("meth", "dangerous_drugs"),
    ("fentanyl", "dangerous_drugs"),
    ("racis", "hate"),
    ("stalk", "harassment"),
    ("threat", "harassment"),
    ("dox", "privacy"),
    ("spy", "privacy"),
)

HARMLESS_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("self-defense", "personal_safety"),
    ("self_defense", "personal_safety"),
    ("safety", "personal_safety"),
    ("medic", "medicine_and_health"),
    ("health", "medicine_and_health"),
    ("clinical", "medicine_and_health"),
    ("mental", "mental_health_support"),
    ("legal", "law_and_policy"),
    ("law", "law_and_policy"),
    ("policy", "law_and_policy"),
    ("security", "security_education"),
    ("cyber", "security_education"),
    ("chem", "chemistry_and_science_education"),
    ("science", "chemistry_and_science_education"),
    ("biolog", "chemistry_and_science_education"),
    ("history", "history_of_conflict"),
    ("creative", "fiction_and_storytelling"),
    ("fiction", "fiction_and_storytelling"),
    ("sex", "sex_education"),
)


def _match(value: str, table: tuple[tuple[str, str], ...], known: set[str]) -> str | None:
    text = re.sub(r"[\s_]+", " ", value.lower())
    for keyword, name in table:
        if re.search(r"\b" + re.escape(keyword.replace("_", " ")), text) and name in known:
            return name
    return None


def map_category(value: str | None, unsafe: bool, constitution: Constitution | None = None) -> str | None:
    """The constitution category a source category corresponds to, or None when nothing fits.

    Unsafe records map onto harmful categories, safe records onto harmless ones; a name the
    constitution does not define is never returned.
    """
    if not value:
        return None
    constitution = constitution or _default_constitution()
    if unsafe:
        return _match(value, HARMFUL_KEYWORDS, set(constitution.harmful_names))
    return _match(value, HARMLESS_KEYWORDS, {c.name for c in constitution.harmless})


@lru_cache(maxsize=1)
def _default_constitution() -> Constitution:
    return load_constitution()
