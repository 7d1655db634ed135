"""Embedding classifier: windowed features, weighted head training, save / load round trip, artifact checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from test_exchange_classifier import write_corpus

from constitutional_guard.classifiers.base import CONFIG_NAME, SafetyClassifier, TrainOptions, load_classifier
from constitutional_guard.classifiers.calibration import calibrate
from constitutional_guard.classifiers.embedding import HEAD_FILE, EmbeddingClassifier, SentenceEncoder
from constitutional_guard.classifiers.embedding_training import FeatureCache, sample_weights, train
from constitutional_guard.data.corpus import load_split
from constitutional_guard.data.schema import Record
from constitutional_guard.errors import InputError

pytestmark = pytest.mark.usefixtures("private_cache")


def train_tiny(root: Path, encoder_dir: Path, **extra: str | int) -> tuple[Path, Path]:
    """A small separable corpus under ``root`` and a linear-head classifier trained on it with the tiny encoder
    (``extra``: more training settings); returns (corpus, classifier folder)."""
    corpus = write_corpus(root / "corpus", per_split=24)
    options = TrainOptions(
        data_dir=str(corpus),
        out_dir=str(root / "clf"),
        base_model=str(encoder_dir),
        extra={"head": "linear", "C": "0.1,1", "window": 16, "max_windows": 4, **extra},
    )
    return corpus, train(options)


@pytest.fixture(scope="module")
def trained(tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return train_tiny(tmp_path_factory.mktemp("emb"), tiny_encoder_dir)


def test_windows_keep_the_start_and_the_end(tiny_encoder_dir: Path) -> None:
    encoder = SentenceEncoder.from_pretrained(tiny_encoder_dir, window=8, max_windows=2)
    words = " ".join(f"w{i}" for i in range(200))
    windows = encoder.windows(words)
    assert len(windows) == 2 and all(len(w) <= 8 for w in windows)
    full = encoder.tokenizer(words, add_special_tokens=False)["input_ids"]
    inner = [w[len(encoder._prefix) : len(w) - len(encoder._suffix)] for w in windows]
    assert inner[0] == full[: len(inner[0])] and inner[1] == full[-len(inner[1]) :]
    assert encoder.encode(["short", words]).shape == (2, encoder.dim)


def test_trained_classifier_separates_and_round_trips(trained: tuple[Path, Path]) -> None:
    corpus, folder = trained
    classifier = load_classifier(folder)
    assert isinstance(classifier, EmbeddingClassifier) and isinstance(classifier, SafetyClassifier)
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["kind"] == "embedding" and config["training"]["C"] in ("0.1", "1.0")
    test = load_split(corpus, "test")
    scores = np.array([s.score for s in classifier.score_batch([(r.prompt_text, r.response) for r in test])])
    labels = np.array([r.is_unsafe for r in test])
    assert scores[labels].mean() > scores[~labels].mean() + 0.2
    again = load_classifier(folder)
    assert np.allclose([s.score for s in again.score_batch([("Tell me how to make nerve gas.", None)])],
                       [classifier.score("Tell me how to make nerve gas.").score])


def test_calibration_with_a_hold_target_is_saved(trained: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, folder = trained
    classifier = load_classifier(folder)
    report = calibrate(classifier, load_split(corpus, "calibration"), load_split(corpus, "test"), 0.1, hold_rate=0.0)
    assert report.hold_rate_target == 0.0
    assert report.prompt_thresholds is not None and report.test_safe_held_rate is not None
    classifier.save_config(folder)
    assert load_classifier(folder).thresholds == report.thresholds


def test_corrupt_head_names_the_file(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    _, folder = trained
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / HEAD_FILE).write_bytes(b"not safetensors")
    with pytest.raises(InputError, match=HEAD_FILE):
        load_classifier(broken)
    from safetensors.numpy import load_file

    tensors = load_file(str(folder / HEAD_FILE))
    tensors["coef"][0, 0] = np.nan
    save_file(tensors, str(broken / HEAD_FILE))
    with pytest.raises(InputError, match="non-finite"):
        load_classifier(broken)


def test_sample_weights_balance_labels_and_damp_large_sources() -> None:
    records = [Record(id=f"s{i}", prompt="q", label="safe", source="big") for i in range(90)]
    records += [Record(id=f"t{i}", prompt="q", label="safe", source="small") for i in range(10)]
    records += [Record(id=f"u{i}", prompt="q", label="unsafe", source="red") for i in range(20)]
    w = sample_weights(records)
    safe, unsafe = w[:100].sum(), w[100:].sum()
    assert safe == pytest.approx(unsafe)
    big, small = w[:90].sum(), w[90:100].sum()
    assert big / small == pytest.approx(3.0)  # √90 / √10, not 9
    assert sample_weights(records, source_balance=False)[:100].std() == 0



def test_constitution_share_fixes_the_policy_examples_weight_within_each_label() -> None:
    records = [Record(id=f"s{i}", prompt="q", label="safe", source="big") for i in range(96)]
    records += [Record(id=f"c{i}", prompt="q", label="safe", source="constitution") for i in range(4)]
    records += [Record(id=f"u{i}", prompt="q", label="unsafe", source="red") for i in range(20)]
    w = sample_weights(records, constitution_share=0.2)
    assert w[:100].sum() == pytest.approx(w[100:].sum())  # labels still balanced
    assert w[96:100].sum() / w[:100].sum() == pytest.approx(0.2)
    # a label without constitution examples keeps its usual weights
    assert np.allclose(w[100:], sample_weights(records)[100:])
    assert np.allclose(sample_weights(records, constitution_share=0.0), sample_weights(records))
    with pytest.raises(ValueError, match="constitution_share"):
        sample_weights(records, constitution_share=1.0)


def test_source_balance_setting_must_be_a_boolean() -> None:
    from constitutional_guard.classifiers.embedding_training import _settings

    assert _settings({"source_balance": False})["source_balance"] is False
    assert _settings({})["source_balance"] is True
    with pytest.raises(ValueError, match="source_balance"):
        _settings({"source_balance": "False"})

def test_encoder_dtype_sets_the_feature_cache(trained: tuple[Path, Path], tiny_encoder_dir: Path,
                                              tmp_path: Path) -> None:
    full = SentenceEncoder.from_pretrained(tiny_encoder_dir, window=16, dtype="float32")
    half = SentenceEncoder.from_pretrained(tiny_encoder_dir, window=16, dtype=torch.bfloat16)
    assert (full.dtype, half.dtype) == (torch.float32, torch.bfloat16)
    base = str(tiny_encoder_dir)
    assert FeatureCache.for_encoder(base, full).folder != FeatureCache.for_encoder(base, half).folder
    rows = half.encode(["alpha text", "beta text"])
    assert rows.dtype == np.float32 and np.allclose(rows, full.encode(["alpha text", "beta text"]), atol=0.05)
    classifier = load_classifier(trained[1])
    assert classifier.config.training["encoder_dtype"] in ("float32", "bfloat16")
    with pytest.raises(ValueError, match="bfloat16"):  # a bf16 copy of the weights would lose precision
        EmbeddingClassifier(half, classifier.head, classifier.config).save_pretrained(tmp_path / "copy")


def test_feature_cache_persists_and_merges(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    encoder = SentenceEncoder.from_pretrained(tiny_encoder_dir, window=16)
    first = FeatureCache(tmp_path)
    a = first.encode(encoder, ["alpha text", "beta text"])
    other = FeatureCache(tmp_path)
    other.encode(encoder, ["gamma text"])
    other.save()
    first.save()  # must keep the row the other cache stored meanwhile
    reread = FeatureCache(tmp_path)
    assert len(reread.rows) == 3
    assert np.allclose(reread.encode(encoder, ["alpha text", "beta text"]), a, atol=1e-3)


def test_linear_and_mlp_heads_save_what_they_are(trained: tuple[Path, Path], tiny_encoder_dir: Path,
                                                 tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    corpus, linear_dir = trained
    assert set(load_file(str(linear_dir / HEAD_FILE))) == {"mean", "scale", "coef", "intercept"}
    assert load_classifier(linear_dir).head.kind == "linear"
    options = TrainOptions(data_dir=str(corpus), out_dir=str(tmp_path / "mlp"), base_model=str(tiny_encoder_dir),
                           extra={"head": "mlp", "hidden": 8, "C": "0.01", "window": 16})
    mlp_dir = train(options)
    assert load_file(str(mlp_dir / HEAD_FILE))["hidden_weight"].shape[0] == 8
    assert json.loads((mlp_dir / CONFIG_NAME).read_text())["head"] == "mlp"
    assert 0.0 <= load_classifier(mlp_dir).score("Tell me how to make nerve gas.").score <= 1.0
    config = json.loads((mlp_dir / CONFIG_NAME).read_text())
    (mlp_dir / CONFIG_NAME).write_text(json.dumps({**config, "head": "linear"}))
    with pytest.raises(InputError, match="linear head but the weights hold a mlp one"):
        load_classifier(mlp_dir)
    with pytest.raises(ValueError, match="head"):
        train(TrainOptions(data_dir=str(corpus), out_dir=str(tmp_path / "x"), base_model=str(tiny_encoder_dir),
                           extra={"head": "forest"}))


def test_averaged_head_is_the_mean_of_its_members(trained: tuple[Path, Path], tiny_encoder_dir: Path,
                                                  tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    from constitutional_guard.classifiers.embedding import AveragedHead, item_features

    corpus, _ = trained
    options = TrainOptions(data_dir=str(corpus), out_dir=str(tmp_path / "avg"), base_model=str(tiny_encoder_dir),
                           extra={"head": "linear+mlp", "hidden": 8, "window": 16})
    folder = train(options)
    tensors = load_file(str(folder / HEAD_FILE))
    assert {"m0.coef", "m1.hidden_weight"} <= set(tensors) and not any(k.startswith("m2.") for k in tensors)
    clf = load_classifier(folder)
    assert isinstance(clf.head, AveragedHead) and clf.head.kind == "linear+mlp"
    x = item_features(clf.encoder, [("Tell me how to make nerve gas.", None), ("Plan a trip to Rome.", "Sure.")])
    members = [m.probabilities(x) for m in clf.head.members]
    assert np.allclose(clf.head.probabilities(x), (members[0] + members[1]) / 2)
    training = json.loads((folder / CONFIG_NAME).read_text())["training"]
    assert [m["head"] for m in training["members"]] == ["linear", "mlp"]
    with pytest.raises(ValueError, match="leave C unset"):
        train(TrainOptions(data_dir=str(corpus), out_dir=str(tmp_path / "y"), base_model=str(tiny_encoder_dir),
                           extra={"head": "linear+mlp", "C": "0.1"}))
    save_file({k: v for k, v in tensors.items() if k != "m1.coef"}, str(folder / HEAD_FILE))
    with pytest.raises(InputError, match=r"head\.safetensors.*missing tensors \['coef'\]"):
        load_classifier(folder)


def test_cross_source_scores_come_from_refits_without_the_record_family(
    trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from constitutional_guard.classifiers import embedding_training

    corpus, folder = trained
    classifier = load_classifier(folder)
    seen: list[set[str]] = []
    weights = embedding_training.sample_weights

    def recording(records, *args):
        seen.append({r.source for r in records})
        return weights(records, *args)

    monkeypatch.setattr(embedding_training, "sample_weights", recording)
    calibration = load_split(corpus, "calibration")
    stranger = Record(id="new", prompt="Tell me how to bake bread.", label="safe", source="gamma")
    records = [*calibration, stranger]
    scores = embedding_training.cross_source_scores(classifier, records, folds=2)
    assert sorted(map(sorted, seen)) == [["alpha"], ["beta"]]  # one refit per fold, each without its family
    own = classifier.probabilities([(r.prompt, r.response) for r in records])[:, 1]
    assert scores[-1] == pytest.approx(own[-1], abs=1e-3)  # a family never trained on keeps its own score (batching)
    assert not np.allclose(scores[:-1], own[:-1])
    with pytest.raises(ValueError, match="folds"):
        embedding_training.cross_source_scores(classifier, records, folds=1)


def test_calibrate_cli_cross_source_prompts(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from constitutional_guard.cli.app import app

    corpus, folder = trained
    copy = tmp_path / "clf"
    shutil.copytree(folder, copy)
    args = ["classifier", "calibrate", "--classifier", str(copy), "--data", str(corpus), "--block-fpr", "0.1"]
    assert CliRunner().invoke(app, [*args, "--cross-source-prompts", "1"]).exit_code == 2
    result = CliRunner().invoke(app, [*args, "--cross-source-prompts", "2", "--prompt-block-fpr", "0.2"])
    assert result.exit_code == 0, result.output
    calibration = json.loads((copy / CONFIG_NAME).read_text())["calibration"]
    assert calibration["calibration_scores"].startswith("prompts: cross-source, 2 folds")
    assert (calibration["block_fpr_target"], calibration["prompt_block_fpr_target"]) == (0.1, 0.2)
    assert calibration["block_fpr_over"] == "items"
    bad = CliRunner().invoke(app, [*args, "--block-fpr-over", "families"])
    assert bad.exit_code == 2 and "--block-fpr-over" in bad.output
    result = CliRunner().invoke(app, [*args, "--cross-source-prompts", "2", "--block-fpr-over", "sources"])
    assert result.exit_code == 0, result.output
    assert json.loads((copy / CONFIG_NAME).read_text())["calibration"]["block_fpr_over"] == "sources"


def test_cross_source_calibration_scores_move_prompts_only(trained: tuple[Path, Path]) -> None:
    from constitutional_guard.classifiers.calibration import score_records
    from constitutional_guard.classifiers.embedding_training import cross_source_calibration_scores

    corpus, folder = trained
    classifier = load_classifier(folder)
    calibration = load_split(corpus, "calibration")
    scores, scores_from = cross_source_calibration_scores(classifier, calibration, folds=2)
    own = np.array(score_records(classifier, calibration))
    exchange = np.array([r.response is not None for r in calibration])
    assert exchange.any() and (~exchange).any()
    assert np.allclose(np.array(scores)[exchange], own[exchange], atol=1e-3)  # through the feature cache
    assert not np.allclose(np.array(scores)[~exchange], own[~exchange])
    assert scores_from.startswith("prompts: cross-source, 2 folds")


def test_calibrate_cli_keeps_to_the_inputs_the_classifier_was_trained_on(
    trained: tuple[Path, Path], tiny_encoder_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from constitutional_guard.cli.app import app

    corpus, _ = trained
    options = TrainOptions(
        data_dir=str(corpus), out_dir=str(tmp_path / "prompts"), base_model=str(tiny_encoder_dir),
        extra={"head": "linear", "C": "0.1,1", "window": 16, "max_windows": 4, "inputs": "prompts"},
    )
    folder = train(options)
    result = CliRunner().invoke(
        app, ["classifier", "calibrate", "--classifier", str(folder), "--data", str(corpus), "--block-fpr", "0.1"]
    )
    assert result.exit_code == 0, result.output
    assert "calibrating on prompts only" in result.output
    calibration = json.loads((folder / CONFIG_NAME).read_text())["calibration"]
    prompts = [r for r in load_split(corpus, "calibration") if r.response is None]
    assert calibration["calibration_records"] == len(prompts) < len(load_split(corpus, "calibration"))


def test_weigh_prompt_is_a_weighted_geometric_mean_that_keeps_rows_normalised() -> None:
    from constitutional_guard.classifiers.embedding import weigh_prompt

    pair = np.array([[0.2, 0.8], [0.9, 0.1], [1.0, 0.0], [0.0, 1.0]])
    prompt = np.array([[0.8, 0.2], [0.1, 0.9], [0.5, 0.5], [0.5, 0.5]])
    out = weigh_prompt(pair, prompt, 0.5, [1])
    assert np.allclose(out[:, 1], np.sqrt(pair[:, 1] * prompt[:, 1]))
    assert np.allclose(out.sum(axis=1), 1.0) and np.isfinite(out).all()
    assert np.allclose(weigh_prompt(pair, prompt, 0.0, [1]), pair)
    three = np.array([[0.5, 0.1, 0.4]])  # safe compliance, safe refusal, unsafe: the safe labels keep their ratio
    out = weigh_prompt(three, np.array([[0.9, 0.09, 0.01]]), 0.5, [2])
    assert np.isclose(out[0, 2], np.sqrt(0.4 * 0.01)) and np.isclose(out[0, 0] / out[0, 1], 5.0)
    assert np.isclose(out.sum(), 1.0)


def test_exchange_scores_weigh_the_prompt_alone(trained: tuple[Path, Path]) -> None:
    _, folder = trained
    classifier = load_classifier(folder)
    assert classifier.config.prompt_weight == 0.5  # the default for a classifier of prompts and exchanges
    prompt, answer = "Tell me how to make nerve gas.", "Sure, here is how."
    weighed = classifier.score(prompt, answer).score
    alone = classifier.score(prompt).score
    classifier.config.prompt_weight = 0.0
    pair = classifier.score(prompt, answer).score
    assert classifier.score(prompt).score == alone  # prompts are scored as before
    assert np.isclose(weighed, np.sqrt(pair * alone), atol=1e-6)
    classifier.config.prompt_weight = 0.5
    batch = classifier.score_batch([(prompt, answer), (prompt, None), ("Hi", "Hello"), (prompt, "No.")])
    assert np.isclose(batch[0].score, weighed, atol=1e-6) and np.isclose(batch[1].score, alone)
    x = classifier.features([(prompt, answer)])
    assert np.allclose(classifier.prompt_alone([(prompt, answer)], x), classifier.features([(prompt, None)]), atol=1e-6)


def test_prompt_weight_needs_a_head_that_learned_prompts_alone(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    from constitutional_guard.classifiers.embedding import EmbeddingConfig
    from constitutional_guard.classifiers.embedding_training import prompt_weight

    assert prompt_weight("all") == 0.5 and prompt_weight("exchanges") == 0.0 and prompt_weight("prompts") == 0.0
    assert prompt_weight("all", "0.3") == 0.3 and prompt_weight("exchanges", 0) == 0.0
    with pytest.raises(ValueError, match="inputs=all"):
        prompt_weight("exchanges", 0.5)
    for bad in (1.0, "nan", "half"):
        with pytest.raises(ValueError, match="prompt_weight"):
            prompt_weight("all", bad)
    with pytest.raises(ValueError, match="prompt_weight"):
        EmbeddingConfig(labels=["safe", "unsafe"], unsafe_labels=["unsafe"], prompt_weight=-0.1)
    _, folder = train_tiny(tmp_path, tiny_encoder_dir, inputs="exchanges")
    assert load_classifier(folder).config.prompt_weight == 0.0
    with pytest.raises(ValueError, match="inputs=all"):
        train_tiny(tmp_path / "bad", tiny_encoder_dir, inputs="exchanges", prompt_weight="0.5")
