"""Settings: defaults, RMSERVE_* variables, flag overrides, and refusals that name the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rmserve import config
from rmserve.cli import build_parser, settings_from
from rmserve.config import Settings


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 8000, 1)
    assert settings.model_repository == Path("models")
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
        ({"RMSERVE_MAX_QUEUE_TOKENS": "10", "RMSERVE_MAX_BATCH_TOKENS": "64"}, "RMSERVE_MAX_QUEUE_TOKENS"),
        ({"RMSERVE_MAX_BATCH_TOKENS": "-1"}, "RMSERVE_MAX_BATCH_TOKENS"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(environ)


# --- API keys: never fail open, never shown ------------------------------------------------------


def keys_file(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "keys"
    path.write_text(text, encoding="utf-8")
    return Settings.from_env({}, api_keys_file=path)


@pytest.mark.parametrize("text", ["", "\n\n", "# trainers\n#  more\n", "   # indented comment\n  \n"])
def test_a_keys_file_without_keys_is_an_error_not_no_auth(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match=r"RMSERVE_API_KEYS_FILE.*no key"):
        keys_file(tmp_path, text).all_api_keys()


def test_a_missing_keys_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RMSERVE_API_KEYS_FILE"):
        Settings.from_env({}, api_keys_file=tmp_path / "absent").all_api_keys()


def test_keys_file_lines_commas_and_indented_comments(tmp_path: Path) -> None:
    settings = keys_file(tmp_path, "# trainers\n  # an indented comment is no key\n key-1 \nkey-2, key-3\n\n")
    assert settings.all_api_keys() == {"key-1", "key-2", "key-3"}


def test_settings_repr_never_shows_keys() -> None:
    settings = Settings.from_env({"RMSERVE_API_KEYS": "sekrit-a,sekrit-b"})
    assert "sekrit" not in repr(settings) and "sekrit" not in str(settings)
    assert "<2 redacted>" in repr(settings)


def test_boolean_settings_parse_and_refuse_nonsense() -> None:
    assert Settings.from_env({"RMSERVE_PROTECT_METRICS": "true"}).protect_metrics is True
    assert Settings.from_env({"RMSERVE_PROTECT_METRICS": "0"}).protect_metrics is False
    with pytest.raises(ValueError, match="RMSERVE_PROTECT_METRICS"):
        Settings.from_env({"RMSERVE_PROTECT_METRICS": "maybe"})


def test_executors_follow_usable_cpus_one_single_threaded_run_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "usable_cpus", lambda: 8)
    assert (Settings.from_env({}).executor_count(), Settings.from_env({}).intra_op_threads()) == (8, 1)
    two_workers = Settings.from_env({}, workers=2)
    assert (two_workers.executor_count(), two_workers.intra_op_threads()) == (4, 1)
    wide_runs = Settings.from_env({"RMSERVE_INFERENCE_THREADS": "2"})
    assert (wide_runs.executor_count(), wide_runs.intra_op_threads()) == (4, 2)
    one_run = Settings.from_env({"RMSERVE_EXECUTORS": "1"})
    assert (one_run.executor_count(), one_run.intra_op_threads()) == (1, 8)
    assert Settings.from_env({}, workers=64).intra_op_threads() == 1


@pytest.mark.parametrize(
    ("files", "cpus"),
    [
        ({"cpu.max": "150000 100000\n"}, 1),  # cgroup v2, 1.5 CPUs: rounded down
        ({"cpu.max": "400000 100000\n"}, 4),
        ({"cpu.max": "max 100000\n"}, None),  # no limit: the affinity mask decides
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_usable_cpus_honour_the_cgroup_quota(tmp_path: Path, files: dict[str, str], cpus: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert config.usable_cpus(tmp_path) == (affinity if cpus is None else min(cpus, affinity))
