"""Shared test helpers: compose the project's real Hydra configs."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_raw(*overrides: str) -> dict:
    """The config mapping `scripts/train.py` would receive with these overrides."""
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return raw


@pytest.fixture
def raw_config():
    return compose_raw
