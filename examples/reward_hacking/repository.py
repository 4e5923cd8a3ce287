"""The demo's scratch model repository: the proxy, a second seed for the ensemble, and the gold, under runs/."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.live_server import RMSERVE
from examples.reward_hacking.prompts import DATA, TRAINING_LINES

MODELS = Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True)
class Roles:
    """Which served model plays which part."""

    proxy: str = "hh-harmless"  # the default single model: the first run's reward
    ensemble: str = "demo-ensemble"  # the second run's reward (conservative) over the two members:
    # the proxy's int8 copy (a member feeds its own telemetry window, so the proxy itself must not be one) and
    # the same recipe trained from seed 1
    members: tuple[str, str] = ("hh-harmless-int8", "hh-harmless-seed1")
    gold: str = "hh-harmless-minilm"  # a fine-tuned pretrained MiniLM, in no reward: the stand-in for people
    k: float = 1.0  # conservative = mean - k * std


def build_repository(target: Path, roles: Roles) -> Path:
    """Copy the models from models/ into `target` (made afresh) and calibrate the ensemble of two."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in (roles.proxy, *roles.members, roles.gold):
        shutil.copytree(MODELS / name, target / name)
    subprocess.run(
        [
            str(RMSERVE),
            "ensemble",
            roles.ensemble,
            "--members",
            *roles.members,
            "--k",
            str(roles.k),
            "--reward",
            "conservative",
            "--calibration",
            str(DATA),
            "--calibration-lines",
            str(TRAINING_LINES),
            "--repository",
            str(target),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return target
