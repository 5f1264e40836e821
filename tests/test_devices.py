"""A run's results depend on its per-device block, not on the device count.

Each device runs the one-block program (research.runner.execute.per_device), so the same
runs with the same runs per device are bit for bit equal on 2 and 4 devices, and a chunk
directory written on 2 devices resumes on a 4-device machine bit for bit (the manifest
records the device count and the resume uses it). One device compiles without XLA's SPMD
passes and is only equal at the start (docs/design.md, "What is bit-for-bit").
"""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from research.runner.execute import group_size
from tests.conftest import forced_devices_env
from tests.test_runner import TINY

# 16 runs: 8 seeds x 2 learning rates, 4 per device.
RUNS = (*TINY[:-2], "runs.seeds=8", TINY[-1])

SCRIPT = """
import json, shutil, sys, warnings
from pathlib import Path
import jax, numpy as np
from research.config import parse_experiment
from research.pipelines.train import prepare
from research.runner import run_batch
from tests.conftest import compose_raw
assert len(jax.devices()) == 4, jax.devices()
p = prepare(parse_experiment(compose_raw(*{runs!r})))
r, out = p.runs, Path({out!r})
def batch(devices, chunk, chunk_dir=None):
    res = run_batch(p.trainer, r.seeds, r.hparams, r.env_params, devices=devices,
                    chunk_size=chunk, chunk_dir=chunk_dir, keep_states=False)
    return res.metrics, res.info
two, info2 = batch(jax.devices()[:2], 8, out / "chunks")
four, info4 = batch(jax.devices(), 16)
assert (info2.num_devices, info2.num_chunks, info4.num_devices, info4.num_chunks) == (2, 2, 4, 1)
assert json.loads((out / "chunks" / "manifest.json").read_text())["num_devices"] == 2
(out / "chunks" / "chunk_00001.npz").unlink()  # killed before its last chunk
resumed, info = batch(jax.devices(), None, out / "chunks")  # on all 4 devices
assert (info.num_devices, info.chunk_size) == (2, 8), info
np.savez(out / "two.npz", **two)
np.savez(out / "four.npz", **four)
np.savez(out / "resumed.npz", **resumed)
"""


def _load(path: Path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("devices")
    env = forced_devices_env(4)
    root = Path(__file__).resolve().parents[1]
    script = SCRIPT.format(runs=RUNS, out=str(out))
    subprocess.run([sys.executable, "-c", script], env=env, cwd=root, check=True, timeout=600)
    return out


def test_two_and_four_devices_are_bit_for_bit_equal(four_devices):
    two, four = _load(four_devices / "two.npz"), _load(four_devices / "four.npz")
    assert two.keys() == four.keys() and two["episode_return"].shape == (16, 4)
    for k in two:
        np.testing.assert_array_equal(two[k], four[k], err_msg=k)


def test_a_resume_on_more_devices_uses_the_recorded_ones_and_is_bit_for_bit(four_devices):
    two, resumed = _load(four_devices / "two.npz"), _load(four_devices / "resumed.npz")
    for k in two:
        np.testing.assert_array_equal(two[k], resumed[k], err_msg=k)


@dataclass(frozen=True)
class _Grouped:
    group_size: int


def test_group_size_is_the_lcm_of_the_extensions_groups():
    trainer = type("T", (), {"extensions": (_Grouped(4), _Grouped(6), _Grouped(1))})()
    assert group_size(trainer, 24) == 12
    with pytest.raises(ValueError, match="18 runs do not split into groups of 12"):
        group_size(trainer, 18)
