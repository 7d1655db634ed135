"""The constitutional LM classifier: a causal LM that reads the constitution and answers safe or unsafe.

The score is P(unsafe) from the next-token distribution over the two label words, renormalised
(see ``label_scoring``). The same class is the untrained zero-shot judge (``zero_shot``) and the
LoRA-tuned classifier (``from_pretrained`` on a directory written by ``constitutional_training``).
The constitution is read at scoring time, so a reworded or edited policy takes effect without
retraining (``with_constitution``).

With ``name_categories`` the model answers ``safe``, the name of a category of the constitution, or
``unsafe`` when no category fits. Every category name is scored as an answer; P(unsafe) is the mass
of the ``unsafe`` word plus that of the categories the scoring constitution lists as harmful, so a
category moved to the harmless side stops counting against the content (as Llama Guard's category
selection does), while the policy text the model reads changes with it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from constitutional_guard.atomic import atomic_dir, write_text_atomic
from constitutional_guard.classifiers.base import CONFIG_NAME, ClassifierScore, Thresholds, optional_thresholds
from constitutional_guard.classifiers.constitutional_prompt import ConstitutionalPrompt
from constitutional_guard.classifiers.label_scoring import LabelScorer
from constitutional_guard.classifiers.registry import CLASSIFIER_KINDS
from constitutional_guard.config_io import load_config, save_config
from constitutional_guard.constitution import Constitution, load_constitution
from constitutional_guard.errors import InputError
from constitutional_guard.models.loading import LoadedModel, load_causal_lm

CONSTITUTION_NAME = "constitution.yaml"
DEFAULT_BASE_MODEL = CLASSIFIER_KINDS["constitutional"].default_base_model
Weights = Literal["base", "adapter", "merged"]


@dataclass
class ConstitutionalConfig:
    """What a saved constitutional classifier needs to score exactly as it was trained."""

    base_model: str
    """Model the prompt is scored with (embedded alias, local folder or hub id)."""
    constitution_sha256: str
    """Fingerprint of the constitution trained / calibrated with (a different one loads with a warning)."""
    kind: str = "constitutional"
    weights: Weights = "base"
    """``base``: the untrained model; ``adapter``: a LoRA adapter in the folder; ``merged``: full weights in it."""
    labels: list[str] = field(default_factory=lambda: ["safe", "unsafe"])
    """Answer words for the safe and the unsafe class, in that order."""
    policy_examples: int = 2
    """Examples per category in the rendered constitution."""
    max_item_tokens: int = 512
    """Token budget for the content, question and answer opener (the policy prefix comes on top)."""
    batch_size: int = 8
    allow_threshold: float = 0.5
    block_threshold: float = 0.5
    prompt_allow_threshold: float | None = None
    prompt_block_threshold: float | None = None
    """Thresholds for prompts alone (the input check); None: the two above serve prompts too."""
    name_categories: bool = False
    """Answer with the harmful category's name instead of the unsafe word (see the module docstring)."""
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind != "constitutional":
            raise ValueError(f"kind must be 'constitutional', got {self.kind!r}")
        if self.weights not in ("base", "adapter", "merged"):
            raise ValueError(f"weights must be base, adapter or merged, got {self.weights!r}")
        if len(self.labels) != 2 or len(set(self.labels)) != 2:
            raise ValueError(f"labels must be two different words, got {self.labels}")
        if self.policy_examples < 0 or self.batch_size < 1:
            raise ValueError("policy_examples must be ≥ 0 and batch_size ≥ 1")
        Thresholds(self.allow_threshold, self.block_threshold)
        optional_thresholds(
            self.prompt_allow_threshold, self.prompt_block_threshold, "prompt_allow_threshold / prompt_block_threshold"
        )


def answer_words(constitution: Constitution, config: ConstitutionalConfig) -> list[str]:
    """The answers scored: the safe and unsafe words, then (naming categories) every category's name."""
    if not config.name_categories:
        return list(config.labels)
    names = [c.name for c in (*constitution.harmful, *constitution.harmless)]
    clash = sorted(set(names) & set(config.labels))
    if clash:
        raise ValueError(f"category names {clash} are also label words; rename them to name categories")
    return [*config.labels, *names]


class ConstitutionalClassifier:
    """Scores prompts and exchanges against a constitution with a causal LM's label-token probabilities."""

    kind = "constitutional"

    def __init__(self, lm: LoadedModel, constitution: Constitution, config: ConstitutionalConfig):
        self.lm = lm
        self.config = config
        self.constitution = constitution
        self.prompt = self._build_prompt(constitution)
        self.answers = answer_words(constitution, config)
        harmful = set(constitution.harmful_names)
        self._unsafe_columns = [1] + [i for i, word in enumerate(self.answers) if i >= 2 and word in harmful]
        self.scorer = LabelScorer(lm.model, lm.tokenizer, self.answers, batch_size=config.batch_size)

    def _build_prompt(self, constitution: Constitution) -> ConstitutionalPrompt:
        return ConstitutionalPrompt(
            self.lm.tokenizer,
            constitution,
            labels=self.config.labels,
            policy_examples=self.config.policy_examples,
            max_item_tokens=self.config.max_item_tokens,
            use_chat_template=self.lm.use_chat_template,
            name_categories=self.config.name_categories,
        )

    @classmethod
    def zero_shot(
        cls,
        base_model: str = DEFAULT_BASE_MODEL,
        constitution: Constitution | str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        **config: Any,
    ) -> ConstitutionalClassifier:
        """The untrained base model prompted with the constitution (the zero-shot LM judge)."""
        policy = constitution if isinstance(constitution, Constitution) else load_constitution(constitution)
        lm = load_causal_lm(base_model, device=device, dtype=dtype)
        cfg = ConstitutionalConfig(base_model=base_model, constitution_sha256=policy.fingerprint(), **config)
        return cls(lm, policy, cfg)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        constitution: Constitution | str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> ConstitutionalClassifier:
        """Load a saved classifier; ``constitution`` overrides the saved policy (no retraining needed)."""
        folder = Path(path)
        config = load_config(ConstitutionalConfig, folder / CONFIG_NAME)
        if isinstance(constitution, Constitution):
            policy = constitution
        else:
            policy = load_constitution(constitution if constitution is not None else folder / CONSTITUTION_NAME)
        if policy.fingerprint() != config.constitution_sha256:
            warnings.warn(
                f"{folder}: scoring with constitution {policy.name!r} ({policy.fingerprint()[:12]}), "
                f"not the one it was saved with ({config.constitution_sha256[:12]})",
                stacklevel=2,
            )
        if config.weights == "merged":
            lm = load_causal_lm(str(folder), device=device, dtype=dtype)
        else:
            lm = load_causal_lm(config.base_model, device=device, dtype=dtype)
        if config.weights == "adapter":
            from peft import PeftModel

            lm.model = PeftModel.from_pretrained(lm.model, str(folder)).eval()
        return cls(lm, policy, config)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.config.allow_threshold, self.config.block_threshold)

    @thresholds.setter
    def thresholds(self, value: Thresholds) -> None:
        self.config.allow_threshold, self.config.block_threshold = value.allow, value.block

    @property
    def prompt_thresholds(self) -> Thresholds:
        c = self.config
        pair = optional_thresholds(c.prompt_allow_threshold, c.prompt_block_threshold, "prompt thresholds")
        return pair or self.thresholds

    @prompt_thresholds.setter
    def prompt_thresholds(self, value: Thresholds | None) -> None:
        pair = (value.allow, value.block) if value is not None else (None, None)
        self.config.prompt_allow_threshold, self.config.prompt_block_threshold = pair

    def with_constitution(self, constitution: Constitution) -> ConstitutionalClassifier:
        """The same model scoring against another constitution (shares the weights; new prefix cache)."""
        return ConstitutionalClassifier(self.lm, constitution, ConstitutionalConfig(**asdict(self.config)))

    def answer_probabilities(
        self,
        items: Sequence[tuple[str, str | None]],
        reuse_prefix: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Probability of each answer word (columns follow ``answers``), one row per ``(prompt, response)``."""
        ids = [self.prompt.item_ids(prompt, response) for prompt, response in items]
        return self.scorer.score(self.prompt.prefix_ids, ids, reuse_prefix=reuse_prefix, progress=progress)

    def unsafe_probabilities(self, answer_probs: np.ndarray) -> np.ndarray:
        """P(unsafe) per row: the unsafe word plus every category that is harmful under this constitution."""
        return answer_probs[:, self._unsafe_columns].sum(axis=1)

    def probabilities(
        self,
        items: Sequence[tuple[str, str | None]],
        reuse_prefix: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> list[float]:
        """P(unsafe) for each ``(prompt, response)`` item."""
        probs = self.answer_probabilities(items, reuse_prefix=reuse_prefix, progress=progress)
        return [float(p) for p in self.unsafe_probabilities(probs)]

    def _result(self, answer_probs: np.ndarray, thresholds: Thresholds) -> ClassifierScore:
        safe, unsafe = self.config.labels
        p_unsafe = float(self.unsafe_probabilities(answer_probs[None])[0])
        detail: dict[str, Any] = {"constitution": self.constitution.name}
        categories: dict[str, float] = {}
        if self.config.name_categories:
            categories = {self.answers[i]: float(answer_probs[i]) for i in self._unsafe_columns[1:]}
        return ClassifierScore(
            score=p_unsafe,
            verdict=thresholds.verdict(p_unsafe),
            thresholds=thresholds,
            label=unsafe if p_unsafe >= 0.5 else safe,
            probabilities={"safe": 1.0 - p_unsafe, "unsafe": p_unsafe},
            detail=detail,
            categories=categories,
        )

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore:
        return self.score_batch([(prompt, response)])[0]

    def score_batch(self, items: list[tuple[str, str | None]]) -> list[ClassifierScore]:
        exchange, prompt = self.thresholds, self.prompt_thresholds
        probs = self.answer_probabilities(items)
        return [self._result(p, prompt if r is None else exchange) for (_, r), p in zip(items, probs, strict=True)]

    def merge(self) -> ConstitutionalClassifier:
        """Fold the LoRA adapter into the base weights (faster scoring; saved as full weights)."""
        if self.config.weights != "adapter":
            raise ValueError(f"nothing to merge: weights are {self.config.weights!r}")
        merged = LoadedModel(**{**vars(self.lm), "model": self.lm.model.merge_and_unload().eval()})
        config = ConstitutionalConfig(**{**asdict(self.config), "weights": "merged"})
        return ConstitutionalClassifier(merged, self.constitution, config)

    def save_pretrained(self, path: str | Path) -> None:
        """Write config, constitution and weights (adapter, merged model, or none for the base model)."""
        with atomic_dir(path) as tmp:
            if self.config.weights == "adapter":
                self.lm.model.save_pretrained(tmp)
            elif self.config.weights == "merged":
                self.lm.model.save_pretrained(tmp)
                self.lm.tokenizer.save_pretrained(tmp)
            self._write_metadata(tmp)

    def save_config(self, path: str | Path) -> None:
        folder = Path(path)
        if not (folder / CONFIG_NAME).exists():
            raise InputError.one(folder, f"not a classifier directory (no {CONFIG_NAME}); use save_pretrained")
        self._write_metadata(folder)

    def _write_metadata(self, folder: Path) -> None:
        import yaml

        self.config.constitution_sha256 = self.constitution.fingerprint()
        text = yaml.safe_dump(self.constitution.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        write_text_atomic(folder / CONSTITUTION_NAME, text)
        save_config(self.config, folder / CONFIG_NAME)
