"""Settings: defaults, RMSERVE_* variables, flag overrides, and refusals that name the variable."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from rmserve.cli import build_parser, settings_from
from rmserve.config import Settings


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 8000, 1)
    assert settings.model_repository == Path("models/repository")
    assert settings.models == () and settings.api_keys == ()


def test_environment_is_parsed_by_type() -> None:
    settings = Settings.from_env(
        {
            "RMSERVE_PORT": "9000",
            "RMSERVE_MODELS": "a, b",
            "RMSERVE_MAX_PADDING_RATIO": "1.5",
            "RMSERVE_MODEL_REPOSITORY": "/srv/models",
            "RMSERVE_DEFAULT_MODEL": "b",
            "OTHER": "ignored",
        }
    )
    assert settings.port == 9000 and settings.models == ("a", "b")
    assert settings.max_padding_ratio == 1.5 and settings.model_repository == Path("/srv/models")
    assert settings.default_model == "b"


def test_flags_override_the_environment() -> None:
    args = build_parser().parse_args(["serve", "--port", "9100", "--models", "x,y"])
    settings = settings_from(args)
    assert settings.port == 9100 and settings.models == ("x", "y")


def test_round_trip_through_the_environment() -> None:
    settings = Settings.from_env({}, port=1234, models=("a", "b"), api_keys=("k",))
    assert Settings.from_env(settings.as_environ()) == settings


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RMSERVE_PORT": "eighty"}, "RMSERVE_PORT"),
        ({"RMSERVE_WORKERS": "0"}, "RMSERVE_WORKERS"),
        ({"RMSERVE_MAX_PADDING_RATIO": "0.5"}, "RMSERVE_MAX_PADDING_RATIO"),
        ({"RMSERVE_MAX_QUEUE_TOKENS": "10"}, "RMSERVE_MAX_QUEUE_TOKENS"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(environ)


def test_inference_threads_split_cores_between_workers() -> None:
    assert Settings.from_env({}, inference_threads=3).intra_op_threads() == 3
    assert Settings.from_env({}, workers=64).intra_op_threads() == 1


def test_readme_documents_every_setting_with_its_default() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for setting in fields(Settings):
        variable = f"RMSERVE_{setting.name.upper()}"
        assert f"| `{variable}` |" in readme, f"README's settings table lacks {variable}"
