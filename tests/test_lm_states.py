"""LM-state features: pooled states match a direct forward, the embedding classifier trains on them beside its
encoder, records and checks the model it reads, and refuses a mismatched one at load."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from test_embedding_classifier import train_tiny
from test_exchange_classifier import write_corpus
from tiny_models import build_tiny_causal_lm

from constitutional_guard.activations import _decoder, template_hash
from constitutional_guard.classifiers import lm_states
from constitutional_guard.classifiers.base import CONFIG_NAME, TrainOptions, load_classifier
from constitutional_guard.classifiers.embedding import EmbeddingClassifier
from constitutional_guard.classifiers.embedding_training import FeatureCache, cross_source_scores, train
from constitutional_guard.classifiers.lm_states import StateReader, StatesSettings
from constitutional_guard.errors import InputError
from constitutional_guard.models.loading import load_causal_lm

pytestmark = pytest.mark.usefixtures("private_cache")


def reader(model_dir: Path, layers: tuple[int, ...] = (1, 2), **kwargs) -> StateReader:
    settings = StatesSettings(model=str(model_dir), layers=layers, max_length=48, max_response_tokens=16,
                              dtype="float32", **kwargs)
    return StateReader.load(settings)


def test_pooled_states_are_the_last_token_and_the_answer_mean(tiny_lm_dir: Path) -> None:
    states = reader(tiny_lm_dir)
    items = [("How do vaccines work?", None), ("Tell me a story.", "Once upon a time there was a cat."),
             ("A much longer prompt " * 5, "short")]
    rows = states.encode(items)
    assert rows.shape == (3, states.dim) and states.dim == 2 * 2 * states.lm.hidden_size
    lm = load_causal_lm(str(tiny_lm_dir), dtype="float32")
    hidden = lm.hidden_size
    for (prompt, response), row in zip(items, rows, strict=True):
        prompt_ids = lm.encode_messages([{"role": "user", "content": prompt}])
        answer = lm.tokenizer(response, add_special_tokens=False)["input_ids"][:16] if response else []
        ids = (prompt_ids + answer)[-48:]
        full = lm.hidden_states(ids)
        start = len(ids) - len(answer) if answer else 0
        for k, layer in enumerate((1, 2)):
            block = row[2 * k * hidden : 2 * (k + 1) * hidden]
            assert np.allclose(block[:hidden], full[layer][-1].numpy(), atol=1e-2)
            assert np.allclose(block[hidden:], full[layer][start:].mean(0).numpy(), atol=1e-2)


def test_readers_of_one_model_share_it_while_held(tiny_lm_dir: Path) -> None:
    first, second = reader(tiny_lm_dir), reader(tiny_lm_dir, layers=(2,))
    assert first.lm is second.lm
    other = StateReader.load(StatesSettings(model=str(tiny_lm_dir), layers=(1,), max_length=48,
                                            max_response_tokens=16, dtype="bfloat16"))
    assert other.lm is not first.lm  # another dtype, another copy
    items = [("Tell me a story.", "Once upon a time.")]
    assert np.allclose(first.encode(items)[:, -second.dim :], second.encode(items), atol=1e-5)


def test_recent_prompts_are_not_read_again(tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = "A prompt read by the input check."
    prompt_row = reader(tiny_lm_dir).encode([(prompt, None)])
    reads: list[int] = []
    real = lm_states.pooled_states
    monkeypatch.setattr(lm_states, "pooled_states", lambda lm, encoded, capture: reads.append(len(encoded))
                        or real(lm, encoded, capture))
    again = reader(tiny_lm_dir)  # another reader of the same setting, as the exchange classifier's
    rows = again.encode([(prompt, "An answer."), (prompt, None)])
    assert reads == [1]  # the exchange only
    assert np.array_equal(rows[1], prompt_row[0])
    reader(tiny_lm_dir, layers=(2,)).encode([(prompt, None)])  # another setting
    assert reads == [1, 1]


def test_settings_name_the_field_at_fault() -> None:
    with pytest.raises(ValueError, match=r"states\.layers"):
        StatesSettings.from_mapping({"model": "m", "layers": "a,b"})
    with pytest.raises(ValueError, match="states: unknown keys"):
        StatesSettings.from_mapping({"model": "m", "layers": [1], "layer": 2})
    with pytest.raises(ValueError, match=r"states\.max_length"):
        StatesSettings(model="m", layers=(1,), max_length=16, max_response_tokens=16)


def test_reader_refuses_layers_past_the_model(tiny_lm_dir: Path) -> None:
    with pytest.raises(ValueError, match="out of range"):
        reader(tiny_lm_dir, layers=(9,))


@pytest.fixture(scope="module")
def trained(tiny_encoder_dir: Path, tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return train_tiny(
        tmp_path_factory.mktemp("states"), tiny_encoder_dir, states_model=str(tiny_lm_dir), states_layers="1,2",
        states_max_length=64, states_max_response_tokens=16, states_dtype="float32",
    )


def tampered(folder: Path, tmp_path: Path, **states: object) -> Path:
    """A copy of the classifier ``folder`` whose config's ``states`` entry is updated with ``states``."""
    import shutil

    copy = tmp_path / "clf"
    shutil.copytree(folder, copy)
    config = json.loads((copy / CONFIG_NAME).read_text())
    config["states"].update(states)
    (copy / CONFIG_NAME).write_text(json.dumps(config))
    return copy


def test_trained_classifier_records_and_reads_the_states(trained: tuple[Path, Path], tiny_lm_dir: Path) -> None:
    _, folder = trained
    config = json.loads((folder / CONFIG_NAME).read_text())
    states = config["states"]
    assert states["model"] == str(tiny_lm_dir) and states["layers"] == [1, 2]
    classifier = load_classifier(folder)
    assert isinstance(classifier, EmbeddingClassifier) and classifier.states is not None
    assert states["hidden_size"] == classifier.states.lm.hidden_size
    assert states["template_hash"] == template_hash(classifier.states.lm)
    items = [("Tell me how to pick a lock.", None), ("Tell me how to bake bread.", "Happy to help: bake bread")]
    rows = classifier.features(items)
    assert rows.shape[1] == 2 * classifier.encoder.dim + 1 + classifier.states.dim
    assert np.allclose(rows[:, -classifier.states.dim :], classifier.states.encode(items), atol=1e-5)
    scores = [s.score for s in classifier.score_batch(items)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    again = load_classifier(folder)
    assert np.allclose([s.score for s in again.score_batch(items)], scores)
    alone = classifier.prompt_alone(items[1:], rows[1:])  # the states of the prompt alone are read again
    assert np.allclose(alone, classifier.features([(items[1][0], None)]), atol=1e-5)


def test_state_features_are_cached_per_item(trained: tuple[Path, Path]) -> None:
    _, folder = trained
    classifier = load_classifier(folder)
    cache = FeatureCache.for_states(classifier.states)
    assert cache.rows, "training stored the states of its records"
    items = [("Tell me how to bake bread.", None), ("Tell me how to bake bread.", "Happy to help")]
    first = cache.encode(classifier.states, items)
    assert len({FeatureCache.key(item) for item in items}) == 2
    assert not np.allclose(first[0], first[1])
    assert np.allclose(cache.encode(classifier.states, items[::-1]), first[::-1])


def test_cached_scores_are_the_classifiers_without_encoding_again(
    trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from constitutional_guard.classifiers.calibration import score_records
    from constitutional_guard.classifiers.embedding_training import cached_scores
    from constitutional_guard.data.corpus import load_split

    corpus, folder = trained
    classifier = load_classifier(folder)
    records = load_split(corpus, "calibration")
    assert any(r.response for r in records) and any(r.response is None for r in records)
    expected = score_records(classifier, records)  # batched otherwise: equal to float32 noise
    assert np.allclose(cached_scores(classifier, records), expected, atol=1e-3)
    encoded: list[int] = []
    encode, pooled = classifier.encoder.encode, lm_states.pooled_states
    monkeypatch.setattr(classifier.encoder, "encode", lambda texts: encoded.append(len(texts)) or encode(texts))
    monkeypatch.setattr(lm_states, "pooled_states", lambda lm, ids, s: encoded.append(len(ids)) or pooled(lm, ids, s))
    again = cached_scores(load_classifier(folder), records)  # a new classifier: the caches come from disk
    assert sum(encoded) == 0 and np.allclose(again, expected, atol=1e-3)


def test_cross_source_scores_read_the_states(trained: tuple[Path, Path]) -> None:
    from constitutional_guard.data.corpus import load_split

    _, folder = trained
    classifier = load_classifier(folder)
    records = [r for r in load_split(trained[0], "calibration") if r.response is None]
    scores = cross_source_scores(classifier, records, folds=2)
    assert scores.shape == (len(records),) and np.isfinite(scores).all()


def test_load_refuses_a_model_other_than_the_one_trained_on(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    wider = build_tiny_causal_lm(tmp_path / "wider", hidden_size=48)
    with pytest.raises(InputError, match=r"classifier_config.json.*hidden size 48"):
        load_classifier(tampered(trained[1], tmp_path, model=str(wider)))


def test_training_needs_both_model_and_layers(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", per_split=8)
    options = TrainOptions(data_dir=str(corpus), out_dir=str(tmp_path / "clf"), base_model=str(tiny_encoder_dir),
                           extra={"states_model": "smollm2-135m-instruct"})
    with pytest.raises(ValueError, match="states_model and states_layers come together"):
        train(options)


def test_classifier_without_states_keeps_its_features(tiny_encoder_dir: Path) -> None:
    """A config without ``states`` reads the encoder alone: no LM is loaded."""
    from constitutional_guard.classifiers.embedding import EmbeddingConfig, Head, SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(tiny_encoder_dir, window=16, max_windows=2)
    d = 2 * encoder.dim + 1
    head = Head(np.zeros(d), np.ones(d), np.zeros((1, d)), np.zeros(1))
    classifier = EmbeddingClassifier(encoder, head, EmbeddingConfig(head="linear"))
    assert classifier.states is None and classifier.features([("hi", None)]).shape == (1, d)


def test_a_malformed_states_entry_names_the_config_and_field(trained: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"classifier_config.json.*states\.layers"):
        load_classifier(tampered(trained[1], tmp_path, layers=["x"]))


def test_concurrent_reads_of_one_model_stay_apart(tiny_lm_dir: Path) -> None:
    """A server reads states for several requests at once: one read's hooks must not act in another's forward."""
    states = reader(tiny_lm_dir, layers=(1,))
    first = [("How do vaccines work?", "They train the immune system.")]  # exchanges: read each time, not reused
    second = [("Tell me a story.", "Once upon a time there was a cat.")]
    expected_first, expected_second = states.encode(first), states.encode(second)
    blocks = _decoder(states.lm).layers
    paused, resume = threading.Event(), threading.Event()
    pausing: dict[str, int] = {}

    def pause(*_) -> None:  # holds the first read inside its forward, its hooks registered
        if threading.get_ident() == pausing.get("thread"):
            paused.set()
            resume.wait(30)

    handle = blocks[0].register_forward_pre_hook(pause)
    results: dict[str, np.ndarray] = {}

    def read_first() -> None:
        pausing["thread"] = threading.get_ident()
        results["first"] = states.encode(first)

    thread = threading.Thread(target=read_first)
    try:
        thread.start()
        assert paused.wait(30)
        results["second"] = states.encode(second)  # runs through the paused read's hooks
    finally:
        resume.set()
        thread.join(30)
        handle.remove()
    assert np.allclose(results["second"], expected_second, atol=1e-5)
    assert np.allclose(results["first"], expected_first, atol=1e-5)
