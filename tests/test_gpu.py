"""The GPU path (`pytest -m gpu`): skipped where JAX sees no GPU.

The same programs as the CPU tests, on the accelerator: a batch of PPO runs sharded over every
local GPU, a run alone equal to the same run in that batch, chunking by the memory budget, and
the device's peak memory reported in run.json.
"""

import jax
import numpy as np
import pytest

from research import results
from research.config import parse_experiment
from research.pipelines.train import execute, prepare
from research.runner import run_batch
from tests.conftest import compose_raw, train_alone

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not any(d.platform == "gpu" for d in jax.devices()), reason="JAX sees no GPU"
    ),
]

SMALL = (
    "progress=false",
    "plot=false",
    "agent.num_envs=4",
    "agent.num_steps=32",
    "train.total_timesteps=4096",
    "train.num_logs=4",
    "runs.seeds=8",
    "sweep.lr=[1e-3,3e-4]",
)


@pytest.fixture(scope="module")
def batch():
    prepared = prepare(parse_experiment(compose_raw(*SMALL)))
    return prepared, execute(prepared)


def test_the_batch_runs_on_every_gpu(batch):
    prepared, result = batch
    assert {d.platform for d in prepared.devices} == {"gpu"}
    assert result.info.num_devices == len(jax.devices("gpu"))
    assert result.metrics["episode_return"].shape == (16, 4)
    assert np.isfinite(result.metrics["policy_loss"]).all()


def test_a_run_alone_equals_the_same_run_in_the_gpu_batch(batch):
    prepared, result = batch
    train = jax.jit(prepared.trainer.train)
    for i in (0, 9):
        alone = train_alone(prepared, train, i)
        np.testing.assert_array_equal(result.metrics["episodes"][i, 0], alone["episodes"][0])
        np.testing.assert_allclose(
            result.metrics["value_loss"][i, 0], alone["value_loss"][0], rtol=1e-4
        )


def test_the_cpu_chunking_default_leaves_gpu_batches_whole(batch, monkeypatch):
    from research.runner import execute as execute_module

    monkeypatch.setattr(execute_module, "CPU_RUNS_PER_DEVICE", 1)  # on CPU: 16 chunks
    prepared, _ = batch
    r = prepared.runs
    assert run_batch(prepared.trainer, r.seeds, r.hparams, r.env_params).info.num_chunks == 1


def test_chunked_on_the_gpu_equals_unchunked(batch):
    prepared, result = batch
    r = prepared.runs
    chunked = run_batch(prepared.trainer, r.seeds, r.hparams, r.env_params, chunk_size=8)
    assert chunked.info.num_chunks == 2
    np.testing.assert_array_equal(
        chunked.metrics["episodes"][:, 0], result.metrics["episodes"][:, 0]
    )


def test_device_peak_memory_is_reported(batch):
    peak = results.peak_memory()["device_peak_mib"]
    assert peak is not None and peak > 0
