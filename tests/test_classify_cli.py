"""``cguard classify`` round trips and the ``cguard classifier`` commands (train dispatch, calibrate, eval)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from test_exchange_classifier import make_classifier, write_corpus
from typer.testing import CliRunner

from constitutional_guard.classifiers.base import CONFIG_NAME, Thresholds, TrainOptions, load_classifier
from constitutional_guard.classifiers.exchange import ExchangeClassifier
from constitutional_guard.cli.app import app
from constitutional_guard.cli.settings_options import parse_settings

runner = CliRunner()


@pytest.fixture(scope="module")
def classifier_dir(tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clf")
    clf = make_classifier(tiny_encoder_dir)
    clf.thresholds = Thresholds(allow=0.3, block=0.6)
    clf.save_pretrained(folder)
    return folder


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    "rows",
    [
        [{"prompt": "How do I bake bread?", "user_id": 7}, {"prompt": "How do I make a bomb?", "tags": ["x"]}],
        [
            {"id": "a", "prompt": "Hi", "response": "Hello! How can I help?"},
            {"id": "b", "messages": [{"role": "user", "content": "Hi"}], "response": "Sure: step one"},
            {"id": "c", "prompt": "Just a prompt", "response": None},
        ],
    ],
    ids=["prompts", "exchanges"],
)
def test_classify_round_trip(classifier_dir: Path, tmp_path: Path, rows: list[dict]) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["--classifier", str(classifier_dir), "--input", str(source), "--output", str(tmp_path / "o.jsonl")]
    result = runner.invoke(app, ["classify", *args])
    assert result.exit_code == 0, result.output
    out = _read_jsonl(tmp_path / "o.jsonl")
    clf = load_classifier(classifier_dir)
    assert len(out) == len(rows)
    for row, scored in zip(rows, out, strict=True):
        assert {k: scored[k] for k in row} == row  # input fields unchanged
        assert set(scored) - set(row) == {"score", "verdict", "label_scores"}
        assert scored["verdict"] == clf.thresholds.verdict(scored["score"])
        assert scored["label_scores"]["unsafe"] == pytest.approx(scored["score"])
    direct = clf.score(rows[0].get("prompt", "Hi"), rows[0].get("response"))
    assert out[0]["score"] == pytest.approx(direct.score, abs=1e-5)


def test_classify_reports_rows_it_cannot_score(classifier_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"prompt": "fine"}) + "\n"
        + "{not json\n"
        + json.dumps({"prompt": "   "}) + "\n"
        + json.dumps({"prompt": "x", "response": 5}) + "\n"
    )  # fmt: skip
    output = tmp_path / "out.jsonl"
    result = runner.invoke(
        app, ["classify", "--classifier", str(classifier_dir), "--input", str(source), "--output", str(output)]
    )
    assert result.exit_code == 1
    out = _read_jsonl(output)
    assert len(out) == 4
    assert "score" in out[0] and "error" not in out[0]
    assert all("error" in row and "score" not in row for row in out[1:])
    assert f"{source}:2" in result.output and f"{source}:3: prompt" in result.output
    assert f"{source}:4: response" in result.output


def test_parse_settings() -> None:
    assert parse_settings(["patience=2", "prefix_cuts=0.5,0.75", "flag=true", "name=x=y"]) == {
        "patience": 2,
        "prefix_cuts": "0.5,0.75",
        "flag": True,
        "name": "x=y",
    }


def test_train_dispatches_by_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[TrainOptions] = []

    def fake_train(options: TrainOptions) -> Path:
        seen.append(options)
        return Path(options.out_dir)

    monkeypatch.setattr("constitutional_guard.classifiers.exchange_training.train", fake_train)
    args = ["classifier", "train", "--kind", "exchange", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*args, "--max-length", "128", "--set", "patience=1", "--set", "prefix_cuts=0.5"])
    assert result.exit_code == 0, result.output
    (options,) = seen
    assert options.base_model == "answerdotai/ModernBERT-base"
    assert options.max_length == 128 and options.extra == {"patience": 1, "prefix_cuts": 0.5}
    bad = runner.invoke(app, ["classifier", "train", "--kind", "nope", "--data", ".", "--out", "o"])
    assert bad.exit_code != 0 and "unknown kind" in bad.output


def test_train_reads_a_config_file_and_keeps_other_keys_as_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[TrainOptions] = []

    def fake_train(options: TrainOptions) -> Path:
        seen.append(options)
        return Path(options.out_dir)

    monkeypatch.setattr("constitutional_guard.classifiers.embedding_training.train", fake_train)
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 2\nseed: 7\nbase_model: minilm-l6\nhead: mlp\nmax_validation: 50\n")
    args = ["classifier", "train", "--kind", "embedding", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*args, "--config", str(config), "--seed", "3", "--set", "max_validation=9"])
    assert result.exit_code == 0, result.output
    (options,) = seen
    assert (options.epochs, options.seed, options.base_model) == (2.0, 3, "minilm-l6")
    assert options.extra == {"head": "mlp", "max_validation": 9}
    assert options.data_dir == str(tmp_path)
    bad = runner.invoke(app, [*args, "--label-scheme", "five_class"])
    assert bad.exit_code != 0 and "label_scheme" in bad.output


def test_train_calibrate_eval_end_to_end(
    tiny_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_corpus(tmp_path / "data", per_split=12)
    out = tmp_path / "clf"
    train = [
        "classifier", "train", "--data", str(data), "--out", str(out), "--base-model", str(tiny_encoder_dir),
        "--epochs", "1", "--batch-size", "8", "--max-length", "48", "--set", "prefix_cuts=",
    ]  # fmt: skip
    result = runner.invoke(app, train)
    assert result.exit_code == 0, result.output
    args = ["--classifier", str(out), "--data", str(data), "--report", str(tmp_path / "r.json")]
    result = runner.invoke(app, ["classifier", "calibrate", *args, "--shared-thresholds"])
    assert result.exit_code == 0, result.output
    assert "prompt thresholds: shared" in result.output
    assert json.loads((out / CONFIG_NAME).read_text())["prompt_block"] is None
    result = runner.invoke(app, ["classifier", "calibrate", *args])
    assert result.exit_code == 0, result.output
    config = json.loads((out / CONFIG_NAME).read_text())
    report = json.loads((tmp_path / "r.json").read_text())
    assert config["block"] == pytest.approx(report["thresholds"]["block"])
    assert config["prompt_block"] == pytest.approx(report["prompt_thresholds"]["block"])
    assert config["calibration"]["test_records"] == 12
    extra = _write_jsonl(tmp_path / "held_out.jsonl", [{"id": "h1", "prompt": "How to juggle?", "label": "safe"}])
    baselines = ["profanity"] if importlib.util.find_spec("profanity_check") else []
    result = runner.invoke(
        app,
        ["classifier", "eval", "--classifier", str(out), *(f"--baseline={b}" for b in baselines), "--data", str(data),
         "--extra-test", str(extra), "--output", str(tmp_path / "eval")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["systems"]) == {str(out), *(f"baseline:{b}" for b in baselines)}
    for baseline in baselines:
        assert set(results["systems"][f"baseline:{baseline}"]) == {"test", "held_out"}
    assert results["meta"]["sets"] == {"test": 12, "held_out": 1}
    assert "## held_out (1 records)" in (tmp_path / "eval" / "report.md").read_text()
    # Another block target on the same output scores nothing again: every score comes from OUTPUT/scores.
    monkeypatch.setattr(ExchangeClassifier, "score_batch", lambda *a: pytest.fail("scored again"))
    again = runner.invoke(
        app,
        ["classifier", "eval", "--classifier", str(out), "--data", str(data), "--extra-test", str(extra),
         "--block-fpr", "0.05", "--output", str(tmp_path / "eval")],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    rerun = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert rerun["meta"]["block_fpr"] == 0.05
    assert rerun["systems"][str(out)]["test"]["test"]["auroc"] == results["systems"][str(out)]["test"]["test"]["auroc"]
    by_source = runner.invoke(
        app,
        ["classifier", "eval", "--classifier", str(out), "--data", str(data), "--block-fpr-over", "sources",
         "--output", str(tmp_path / "eval")],
    )  # fmt: skip
    assert by_source.exit_code == 0, by_source.output
    meta = json.loads((tmp_path / "eval" / "results.json").read_text())["meta"]
    assert meta["block_fpr_over"] == "sources"
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "false blocks on safe items (the mean of the sources' rates)" in report


def test_calibrate_needs_data(classifier_dir: Path) -> None:
    result = runner.invoke(app, ["classifier", "calibrate", "--classifier", str(classifier_dir)])
    assert result.exit_code != 0
