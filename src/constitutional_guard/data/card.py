"""The dataset card (``card.md``) written beside a corpus, rendered from its ``summary.json``."""

from __future__ import annotations

from typing import Any

from constitutional_guard.data.schema import SPLITS
from constitutional_guard.markdown import markdown_table as _table


def _label_table(table: dict[str, dict[str, int]], first: str) -> list[str]:
    labels = sorted({label for counts in table.values() for label in counts})
    rows = [[key, *(counts.get(label, 0) for label in labels), sum(counts.values())] for key, counts in table.items()]
    return _table([first, *labels, "total"], rows)


def render_card(summary: dict[str, Any]) -> str:
    """Markdown card: provenance and licences, label mappings, counts, real-vs-generated benign data."""
    options = summary["options"]
    constitution = summary["constitution"]
    benign = summary["benign"]
    lines = [
        "# Safety corpus",
        "",
        f"Built by constitutional-guard {summary['created_with']} with seed {options['seed']} against the "
        f"`{constitution['name']}` constitution (fingerprint `{constitution['fingerprint'][:12]}`)"
        f", in {summary.get('build_seconds', '?')} s. Generated data included: {options['with_generated']}.",
        "",
        "Files: `binary/{split}.jsonl` (prompt-only records and exchanges, with response prefixes) and "
        "`three_class/{split}.jsonl` (exchanges and their prefixes). Splits are by prompt: a prompt and all "
        "its augmentations live in one split, and each jailbreak-template family is used in one split only.",
        "",
        "## Real and generated data",
        "",
        f"- Base records (before augmentation): {summary['base_records']['real']} from real sources, "
        f"{summary['base_records']['generated']} generated.",
        f"- Benign prompts: {benign['prompts']['real']} real, {benign['prompts']['generated']} generated.",
        f"- Benign exchanges (safe compliance or refusal): {benign['exchanges']['real']} real, "
        f"{benign['exchanges']['generated']} generated.",
        "",
        *_table(["benign prompt source", "records"], [[k, v] for k, v in benign["prompts"]["by_source"].items()]),
        "",
        "## Packages and licences",
        "",
        *_table(
            ["package", "version", "licence", "available"],
            [[p["distribution"], p["version"], p["licence"], p["available"]] for p in summary["packages"]],
        ),
        "",
        *_table(
            ["source", "package", "kind", "licence", "description"],
            [[n, s["package"], s["kind"], s["licence"], s["description"]] for n, s in summary["sources"].items()],
        ),
    ]
    if summary.get("skipped_sources"):
        lines += ["", "Skipped sources:", *(f"- {k}: {v}" for k, v in summary["skipped_sources"].items())]
    lines += ["", "## Label mappings", ""]
    for name, text in summary["label_mappings"].items():
        lines += [f"### {name}", "", text, ""]
    lines += ["## Counts per split and label", ""]
    for scheme, splits in summary["counts"].items():
        lines += [f"### {scheme}", "", *_label_table({s: splits.get(s, {}) for s in SPLITS}, "split"), ""]
    lines += ["## Counts per source (all splits)", ""]
    for scheme, table in summary["per_source"].items():
        lines += [f"### {scheme}", "", *_label_table(table, "source"), ""]
    lines += ["## Counts per category (all splits)", ""]
    for scheme, table in summary["per_category"].items():
        lines += [f"### {scheme}", "", *_label_table(table, "category"), ""]
    lines += ["## Augmentation", ""]
    for scheme, counts in summary["augmentation"].items():
        lines += [f"### {scheme}", "", *_table(["kind", "records"], [[k, v] for k, v in counts.items()]), ""]
    templates = summary["templates"]
    dedup = summary["dedup"]
    lines += [
        f"Jailbreak templates: {templates['count']} in {templates['families']} families "
        f"(families per split: {templates['families_per_split']}).",
        "",
        f"Deduplication: {dedup['kept']} kept, {dedup['duplicates']} exact duplicates removed, "
        f"{dedup['conflicting_dropped']} records dropped whose copies disagreed on the label.",
        "",
    ]
    left_out = summary.get("skipped_rows", {})
    skipped = [[s, reason, n] for s, reasons in left_out.items() for reason, n in reasons.items()]
    if skipped:
        lines += ["Rows the source readers left out:", "", *_table(["source", "reason", "rows"], skipped), ""]
    else:
        lines += ["Rows the source readers left out: none.", ""]
    return "\n".join(lines)
