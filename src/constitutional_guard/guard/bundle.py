"""The guard bundle: one directory with ``guard.yaml`` and the artifacts it names."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from constitutional_guard import __version__
from constitutional_guard.atomic import atomic_dir, write_text_atomic
from constitutional_guard.constitution import load_constitution
from constitutional_guard.errors import InputError, Problem, format_loc, yaml_line
from constitutional_guard.guard.artifacts import load_checked_classifier, load_target_model
from constitutional_guard.guard.policy import PolicySettings
from constitutional_guard.guard.upstream import UpstreamSettings

BUNDLE_FILE = "guard.yaml"
FORMAT_VERSION = 1


class GuardBundle(BaseModel):
    """The content of ``guard.yaml``; artifact paths are relative to the bundle directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = Field(default=FORMAT_VERSION, description="Layout version of the bundle.")
    cguard_version: str = Field(default=__version__, description="Package version that wrote the bundle.")
    target_model: str = Field(min_length=1, description="Guarded model: embedded alias, local folder or hub id.")
    constitution: str = Field(default="constitution.yaml", description="Policy file (refusal text, categories).")
    probe: str = Field(default="probe", description="Probe directory (LinearProbe.save_pretrained).")
    classifier: str | None = Field(default="classifier", description="Second-stage classifier directory, or null.")
    input_classifier: str | None = Field(
        default=None, description="Prompt classifier directory; null means the second-stage classifier checks prompts."
    )
    policy: PolicySettings = Field(default_factory=PolicySettings)
    refusal: str | None = Field(default=None, description="Refusal text; null uses the constitution's.")
    upstream: UpstreamSettings | None = Field(
        default=None, description="A remote OpenAI-compatible engine to guard instead of the target model."
    )

    def artifact_paths(self) -> dict[str, str]:
        named = {
            "constitution": self.constitution,
            "probe": self.probe,
            "classifier": self.classifier,
            "input_classifier": self.input_classifier,
        }
        return {key: value for key, value in named.items() if value is not None}


def read_bundle(bundle_dir: str | Path) -> GuardBundle:
    """Parse and validate ``guard.yaml``; errors name the file, line and field, including missing artifacts."""
    folder = Path(bundle_dir)
    file = folder / BUNDLE_FILE
    if not file.exists():
        raise InputError.one(file, f"not a guard bundle (no {BUNDLE_FILE}); build one with `cguard guard build`")
    text = file.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError.one(file, f"invalid YAML: {exc}", line=mark.line + 1 if mark else None) from exc
    if not isinstance(data, dict):
        raise InputError.one(file, "guard.yaml must be a YAML mapping", line=1)
    try:
        bundle = GuardBundle.model_validate(data)
    except ValidationError as exc:
        raise InputError(
            [Problem(str(file), yaml_line(node, e["loc"]), format_loc(e["loc"]), e["msg"]) for e in exc.errors()]
        ) from exc
    problems = [
        Problem(str(file), yaml_line(node, (key,)), key, f"{value!r} does not exist in {folder}")
        for key, value in bundle.artifact_paths().items()
        if not (folder / value).exists()
    ]
    if bundle.format_version > FORMAT_VERSION:
        problems.append(
            Problem(str(file), yaml_line(node, ("format_version",)), "format_version", "written by a newer version")
        )
    if problems:
        raise InputError(problems)
    return bundle


def write_bundle_file(bundle: GuardBundle, bundle_dir: str | Path) -> None:
    """Write ``guard.yaml`` (fields in declaration order; no ``upstream`` section unless there is one)."""
    data = bundle.model_dump(mode="json")
    if data["upstream"] is None:
        del data["upstream"]
    write_text_atomic(Path(bundle_dir) / BUNDLE_FILE, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def build_bundle(
    out_dir: str | Path,
    probe_dir: str | Path,
    classifier_dir: str | Path | None = None,
    input_classifier_dir: str | Path | None = None,
    constitution: str | Path | None = None,
    target_model: str | None = None,
    policy: PolicySettings | None = None,
    refusal: str | None = None,
) -> Path:
    """Assemble a self-contained bundle: copies the probe, classifier(s) and constitution, writes ``guard.yaml``.

    ``target_model`` defaults to the model the probe was trained on.
    """
    from constitutional_guard.probes import LinearProbe

    probe = LinearProbe.from_pretrained(probe_dir)
    policy = policy or PolicySettings()
    for directory in (classifier_dir, input_classifier_dir):
        if directory is not None:
            load_checked_classifier(directory)  # fail now, not at serving time
    load_constitution(constitution)  # validates the file
    constitution_text = (
        resources.files("constitutional_guard").joinpath("constitutions/default.yaml").read_text("utf-8")
        if constitution is None or str(constitution) == "default"
        else Path(constitution).read_text(encoding="utf-8")
    )
    bundle = GuardBundle(
        target_model=target_model or probe.config.model_id,
        classifier="classifier" if classifier_dir is not None else None,
        input_classifier="input_classifier" if input_classifier_dir is not None else None,
        policy=policy,
        refusal=refusal,
    )
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(probe_dir, tmp / bundle.probe)
        if classifier_dir is not None:
            shutil.copytree(classifier_dir, tmp / "classifier")
        if input_classifier_dir is not None:
            shutil.copytree(input_classifier_dir, tmp / "input_classifier")
        (tmp / bundle.constitution).write_text(constitution_text, encoding="utf-8")
        write_bundle_file(bundle, tmp)
    return Path(out_dir)


def load_bundle_parts(
    bundle_dir: str | Path, device: str | torch.device | None = None, dtype: str | None = None,
    upstream: UpstreamSettings | None = None,
) -> dict[str, Any]:
    """Load everything a bundle names, as keyword arguments of ``Guard``.

    With ``upstream`` (else the bundle's ``upstream:``) the guard reads a remote engine; the target model
    is then loaded only as its stream monitor (``upstream.monitor``).
    """
    from constitutional_guard.probes import LinearProbe

    folder = Path(bundle_dir)
    file = folder / BUNDLE_FILE
    bundle = read_bundle(folder)
    remote = upstream or bundle.upstream
    if remote is not None:
        check_upstream(remote, bundle, file)
    probe = LinearProbe.from_pretrained(folder / bundle.probe)
    constitution = load_constitution(folder / bundle.constitution)
    classifier = load_checked_classifier(folder / bundle.classifier) if bundle.classifier else None
    input_classifier = load_checked_classifier(folder / bundle.input_classifier) if bundle.input_classifier else None
    lm = None
    if remote is None or remote.monitor:
        lm = load_target_model(bundle.target_model, file, device, dtype)
        probe.check_compatible(bundle.target_model, lm.hidden_size)
    parts: dict[str, Any] = {
        "lm": lm,
        "probe": probe,
        "constitution": constitution,
        "classifier": classifier,
        "input_classifier": input_classifier,
        "policy": bundle.policy,
        "refusal": bundle.refusal,
    }
    if remote is not None:
        from constitutional_guard.guard.monitor import StreamMonitor
        from constitutional_guard.guard.upstream import RemoteSource

        monitor = None
        if lm is not None:
            first = remote.monitor_first_chunk_tokens or bundle.policy.release_lag + 1
            monitor = StreamMonitor(lm, probe, remote.monitor_chunk_tokens, max_batch=remote.monitor_batch_size,
                                    max_wait_s=remote.monitor_max_wait_ms / 1000, first_chunk_tokens=first)
        parts.update(source=RemoteSource(remote, monitor), classifier_every=remote.classifier_every)
    return parts


def check_upstream(remote: UpstreamSettings, bundle: GuardBundle, file: Path) -> None:
    """Fail at load, naming the field, when the upstream's key is missing or nothing could check its text."""
    try:
        remote.api_key()
    except ValueError as exc:
        raise InputError.one(file, str(exc), field="upstream.api_key_env") from None
    if not remote.monitor and bundle.classifier is None:
        raise InputError.one(file, "an upstream without the monitor needs a classifier", field="upstream.monitor")
