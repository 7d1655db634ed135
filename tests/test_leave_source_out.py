"""Leave-source-out: each family held out of training and calibration, scored by its own fold, pooled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_exchange_classifier import write_corpus
from typer.testing import CliRunner

from constitutional_guard.cli.app import app
from constitutional_guard.data.schema import SPLITS, Record, family_folds, family_of
from constitutional_guard.evaluation.leave_source_out import leave_source_out, markdown

FAMILIES = {"red/one": 1, "red/two": 1, "blue/one": 0, "blue/two": 0, "mixed": None}


def make_splits(seed: int = 0) -> tuple[dict[str, list[Record]], dict[str, np.ndarray]]:
    """Records of five sources whose label is readable from feature 0; ``mixed`` holds both labels."""
    rng = np.random.default_rng(seed)
    splits, features = {}, {}
    for split in SPLITS:
        records, rows = [], []
        for source, label in FAMILIES.items():
            for i in range(12):
                y = label if label is not None else i % 2
                response = "an answer" if i % 3 == 0 else None
                records.append(Record(id=f"{split}-{source}-{i}", prompt=f"q {i}", response=response,
                                      label="unsafe" if y else "safe", source=source))
                rows.append([y + rng.normal(0, 0.25), rng.normal()])
        splits[split], features[split] = records, np.array(rows)
    return splits, features


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-4 * (x[:, 0] - 0.5)))


def test_each_family_is_left_out_of_its_fold() -> None:
    splits, features = make_splits()
    seen: dict[str | None, set[str]] = {}

    def fit(excluded: str | None):
        trained_on = {r.source for r in splits["train"] if r.source != excluded}
        seen[excluded] = trained_on
        return sigmoid

    report = leave_source_out(splits, features, fit, min_records=40, block_fpr=0.1, hold_rate=0.0).report
    assert report["held_out_families"] == sorted(FAMILIES)
    assert set(seen) == {None, *FAMILIES}
    for family in FAMILIES:
        assert family not in seen[family] and len(seen[family]) == len(FAMILIES) - 1
    red = report["families"]["red/one"]
    assert red["prompts"]["n_unsafe"] == 32 and red["prompts"]["n_safe"] == 0  # all splits of the family
    assert red["exchanges"]["n"] == 16 and red["prompts"]["unsafe_blocked"] > 0.8
    assert report["families"]["mixed"]["prompts"]["auroc"] > 0.9
    assert report["leave_source_out"]["auroc"]["prompts"] > 0.9
    assert report["in_distribution"]["outcomes"]["prompts"]["safe_held"] == 0.0
    text = markdown(report)
    assert "| leave-source-out (pooled) |" in text and "| blue/two | prompts | 0 / 32 |" in text


def test_cross_source_thresholds_hold_their_target_on_unseen_sources() -> None:
    """Every fold model scores the benign records of the family it never saw higher; thresholds chosen on its
    own calibration scores miss that shift, thresholds chosen on other families' out-of-fold scores see it."""
    splits, features = make_splits()
    names = sorted(FAMILIES)
    for split in SPLITS:
        features[split][:, 1] = [names.index(r.source) for r in splits[split]]

    def fit(excluded: str | None):
        def score(x: np.ndarray) -> np.ndarray:
            unseen = x[:, 1] == (names.index(excluded) if excluded else -1)
            return np.clip(sigmoid(x) + 0.45 * unseen, 0.0, 1.0)

        return score

    report = leave_source_out(splits, features, fit, min_records=40, block_fpr=0.1, hold_rate=0.0).report
    lso = report["leave_source_out"]
    own, cross = lso["outcomes"]["prompts"], lso["outcomes_cross_source"]["prompts"]
    assert own["safe_blocked"] == 1.0 and cross["safe_blocked"] <= 0.3
    blue = report["families"]["blue/one"]
    assert blue["cross_source"]["thresholds"]["exchange"]["block"] > blue["thresholds"]["exchange"]["block"]
    assert "| leave-source-out, cross-source thresholds |" in markdown(report)


def test_false_blocks_can_be_counted_over_the_calibration_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """One benign family scores high for every fold: pooled with the rest it is under the target, counted as a
    source of its own it is not, so the per-source thresholds sit higher."""
    from constitutional_guard.classifiers import calibration

    monkeypatch.setattr(calibration, "MIN_SOURCE_ITEMS", 4)  # these families hold 8 calibration prompts each
    splits, features = make_splits()
    for split in SPLITS:
        blue = np.array([r.source == "blue/two" for r in splits[split]])
        features[split][blue, 0] += 0.6

    def report(over: str) -> dict:
        return leave_source_out(
            splits, features, lambda _: sigmoid, min_records=40, block_fpr=0.1, hold_rate=0.0, block_fpr_over=over
        ).report

    pooled, each = report("items"), report("every-source")
    assert (pooled["block_fpr_over"], each["block_fpr_over"]) == ("items", "every-source")
    for family in ("red/one", "mixed"):  # folds whose calibration split holds blue/two
        low = pooled["families"][family]["cross_source"]["thresholds"]["prompt"]["block"]
        assert each["families"][family]["cross_source"]["thresholds"]["prompt"]["block"] > low
    assert "false blocks in every source" in markdown(each) and "in every source" not in markdown(pooled)


def test_every_held_out_record_comes_back_scored_with_its_decision() -> None:
    """One scored row per held-out record, its decisions adding up to the family's outcomes; the report names
    the most confident errors: the safe record scored highest among those blocked comes first."""
    splits, features = make_splits()
    loud = next(i for i, r in enumerate(splits["test"]) if r.source == "blue/one" and r.response is None)
    features["test"][loud, 0] = 5.0  # a benign prompt that scores like the worst harmful one
    result = leave_source_out(splits, features, lambda _: sigmoid, min_records=40, block_fpr=0.1, hold_rate=0.0)
    assert len(result.scored) == sum(len(records) for records in splits.values())
    assert len({(i.family, i.record.id) for i in result.scored}) == len(result.scored)
    for family, outcome in result.report["families"].items():
        prompts = [i for i in result.scored if i.family == family and i.record.response is None]
        unsafe = [i for i in prompts if i.record.is_unsafe]
        if unsafe:
            blocked = sum(i.decision == "blocked" for i in unsafe) / len(unsafe)
            assert blocked == pytest.approx(outcome["cross_source"]["prompts"]["unsafe_blocked"])
        assert all(i.split in SPLITS and i.family == family_of(i.record) for i in prompts)
    errors = result.report["families"]["blue/one"]["cross_source"]["errors"]
    assert errors["safe_blocked"][0]["id"] == splits["test"][loud].id and errors["unsafe_allowed"] == []
    row = next(i for i in result.scored if i.record.id == splits["test"][loud].id).as_dict()
    assert row["decision"] == "blocked" and row["input"] == "prompt" and row["split"] == "test"
    assert "## Most confident errors at cross-source thresholds" in markdown(result.report)


def test_outcomes_are_broken_down_by_the_form_of_the_records() -> None:
    """Augmented copies (here a jailbreak template around benign prompts, scored high) get rows of their own,
    so the originals' false-block rate is not hidden in the pooled one."""
    splits, features = make_splits()
    for i, record in enumerate(splits["test"]):  # calibration untouched: the thresholds do not see them
        if not record.is_unsafe and record.response is None and i % 2 == 0:
            splits["test"][i] = record.model_copy(update={"meta": {"augmentation": "template"}})
            features["test"][i, 0] = 2.0
    result = leave_source_out(splits, features, lambda _: sigmoid, min_records=40, block_fpr=0.1, hold_rate=0.0)
    by_form = result.report["leave_source_out"]["by_form_cross_source"]["prompts"]
    assert set(by_form) == {"original", "template"} and by_form["template"]["n_unsafe"] == 0
    assert by_form["template"]["safe_blocked"] > 0.9 > 0.3 > by_form["original"]["safe_blocked"]
    assert by_form["original"]["n_safe"] + by_form["template"]["n_safe"] == sum(
        1 for i in result.scored if not i.record.is_unsafe and i.record.response is None
    )
    text = markdown(result.report)
    assert "## By form of the held-out records" in text and "| template | prompts | 0 /" in text


def test_small_families_stay_in_training_and_by_package_groups() -> None:
    splits, features = make_splits()
    report = leave_source_out(splits, features, lambda _: sigmoid, by="package", min_records=90).report
    assert report["held_out_families"] == ["blue", "red"]  # 96 each; "mixed" has 48
    assert report["family_sizes"]["mixed"] == 48
    assert family_of(splits["train"][0], "package") == "red"
    with pytest.raises(ValueError, match="no source family"):
        leave_source_out(splits, features, lambda _: sigmoid, min_records=10_000)


def test_prompts_written_from_the_constitution_are_held_out_with_it() -> None:
    written = Record(id="s", prompt="q", label="unsafe", source="synthetic/some-lm")
    policy = Record(id="c", prompt="q", label="unsafe", source="constitution")
    assert family_of(written) == family_of(policy) == "constitution"
    assert family_of(written, "package") == family_of(policy, "package") == "constitution"


def run_cli(corpus: Path, out: Path, *options: str):
    return CliRunner().invoke(
        app, ["classifier", "leave-source-out", "--data", str(corpus), "--output", str(out), *options]
    )


def test_cli_writes_report_plot_and_json(
    tiny_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CGUARD_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "corpus", per_split=24)
    out = tmp_path / "lso"
    result = run_cli(corpus, out, "--base-model", str(tiny_encoder_dir), "--min-records", "20")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"results.json", "report.md", "scores.jsonl", "families.png"}
    report = json.loads((out / "results.json").read_text())
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == sum(report["family_sizes"][f] for f in report["held_out_families"])
    assert {row["decision"] for row in rows} <= {"blocked", "held", "allowed"}
    assert "| alpha | prompts |" in (out / "report.md").read_text()
    assert report["classifier"]["prompt_weight"] == 0.5  # training's default for prompts and exchanges
    bad = run_cli(corpus, out, "--by", "colour")
    assert bad.exit_code == 2 and "--by" in bad.output
    bad = run_cli(corpus, out, "--block-fpr-over", "families")
    assert bad.exit_code == 2 and "--block-fpr-over" in bad.output
    bad = run_cli(corpus, out, "--inputs", "tokens")
    assert bad.exit_code == 2 and "--inputs" in bad.output
    bad = run_cli(corpus, out, "--inputs", "exchanges", "--prompt-weight", "0.5")
    assert bad.exit_code == 2 and "--prompt-weight" in bad.output


def test_cli_holds_out_prompts_alone(tiny_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CGUARD_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "corpus", per_split=24)
    out = tmp_path / "lso"
    options = ("--base-model", str(tiny_encoder_dir), "--min-records", "20", "--inputs", "prompts", "--head", "linear")
    result = run_cli(corpus, out, *options)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    assert report["classifier"]["inputs"] == "prompts"
    assert report["leave_source_out"]["outcomes"]["exchanges"]["n"] == 0
    assert report["leave_source_out"]["outcomes"]["prompts"]["n"] > 0


def test_cli_weighs_sources_as_asked(tiny_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from constitutional_guard.classifiers import embedding_training

    monkeypatch.setenv("CGUARD_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "corpus", per_split=24)
    seen: list[bool] = []
    weights = embedding_training.sample_weights

    def spy(records: list, source_balance: bool = True, constitution_share: float = 0.0) -> np.ndarray:
        seen.append(source_balance)
        return weights(records, source_balance, constitution_share)

    monkeypatch.setattr(embedding_training, "sample_weights", spy)
    options = ("--base-model", str(tiny_encoder_dir), "--min-records", "20", "--inputs", "prompts", "--head", "linear")
    for flag, expected in (("--source-balance", True), ("--no-source-balance", False)):
        seen.clear()
        result = run_cli(corpus, tmp_path / flag, *options, flag)
        assert result.exit_code == 0, result.output
        assert seen and set(seen) == {expected}  # every fold's refit
        assert json.loads((tmp_path / flag / "results.json").read_text())["classifier"]["source_balance"] is expected


def test_family_folds_deal_families_by_size() -> None:
    families = ["big"] * 5 + ["mid"] * 3 + ["small"] * 2 + ["tiny"]
    folds = family_folds(families, 2)
    assert folds == {"big": 0, "mid": 1, "small": 0, "tiny": 1}  # 7 and 4 records: the largest apart
    assert set(family_folds(families, 3).values()) == {0, 1, 2}
    with pytest.raises(ValueError, match="at least 2"):
        family_folds(families, 1)


def test_cli_reads_an_lm_s_states_beside_the_encoder(
    tiny_encoder_dir: Path, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CGUARD_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "corpus", per_split=24)
    out = tmp_path / "lso"
    options = ("--base-model", str(tiny_encoder_dir), "--min-records", "20", "--inputs", "prompts", "--head", "linear")
    result = run_cli(corpus, out, *options, "--states-model", str(tiny_lm_dir), "--states-layers", "1,2")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    assert report["classifier"]["states"]["model"] == str(tiny_lm_dir)
    assert report["classifier"]["states"]["layers"] == [1, 2]
    assert report["leave_source_out"]["outcomes"]["prompts"]["n"] > 0
    bad = run_cli(corpus, out, *options, "--states-model", str(tiny_lm_dir), "--states-layers", "x")
    assert bad.exit_code == 2 and "--states-layers" in bad.output


def test_a_prompt_weight_scores_exchanges_with_their_prompt_alone() -> None:
    from constitutional_guard.evaluation.leave_source_out import embedding_fit

    splits, features = make_splits()
    plain = embedding_fit(splits, features, head="linear")(None)
    prompt_rows = {  # an exchange's prompt alone reads differently; a prompt's is its own row
        name: np.where(np.array([[r.response is not None] for r in splits[name]]), rows * [0.5, 1.0], rows)
        for name, rows in features.items()
    }
    wide = {name: np.hstack([features[name], prompt_rows[name]]) for name in features}
    weighed = embedding_fit(splits, wide, head="linear", prompt_weight=0.5)(None)
    test, x = splits["test"], features["test"]
    exchange = np.array([r.response is not None for r in test])
    scores, alone, pair = weighed(wide["test"]), plain(prompt_rows["test"]), plain(x)
    assert np.allclose(scores[~exchange], pair[~exchange])  # a prompt is its own prompt alone
    assert np.allclose(scores[exchange], np.sqrt(pair[exchange] * alone[exchange]))
