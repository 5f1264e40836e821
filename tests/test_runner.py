"""A run's metrics do not depend on how it is batched, chunked or sharded.

The same program twice is bit-for-bit identical, and a run is bit-for-bit unaffected
by what the other runs in its program do. Across different per-device batch shapes
XLA may pick different CPU kernels (e.g. for a weight-gradient matmul with a batch
of 1), so float diagnostics differ by float32 rounding at first; Adam amplifies
such differences over updates until a sampled action flips, so across batch shapes
the first log is compared: episodes exactly, floats to rounding.
"""

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from research.config import parse_experiment
from research.pipelines.train import execute, prepare
from research.runner import run_batch
from tests.conftest import compose_raw, forced_devices_env, train_alone

TINY = (
    "progress=false",
    "agent.num_envs=4",
    "agent.num_steps=32",
    "train.total_timesteps=4096",
    "train.num_logs=4",
    "runs.seeds=3",
    "sweep.lr=[1e-3,3e-4]",
)


@pytest.fixture(scope="module")
def tiny():
    prepared = prepare(parse_experiment(compose_raw(*TINY)))
    return prepared, execute(prepared)


EXACT = ("env_steps", "episode_return", "episode_length", "episodes")


def _assert_same(a: dict, b: dict, bitwise: bool = False):
    """Bitwise; or, across batch shapes, the first log: episodes exact, floats to rounding."""
    assert a.keys() == b.keys()
    for k in a:
        if bitwise:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        elif k in EXACT:
            np.testing.assert_array_equal(a[k][..., 0], b[k][..., 0], err_msg=k)
        else:  # measured: < 1e-6 relative
            np.testing.assert_allclose(a[k][..., 0], b[k][..., 0], rtol=1e-5, atol=1e-7, err_msg=k)
    np.testing.assert_array_equal(a["env_steps"], b["env_steps"])


def test_batch_shapes_and_logging_interval(tiny):
    prepared, result = tiny
    assert len(prepared.runs) == 6
    assert result.metrics["episode_return"].shape == (6, 4)
    np.testing.assert_array_equal(result.metrics["env_steps"][0], [1024, 2048, 3072, 4096])
    assert result.info.num_chunks == 1


def test_same_config_twice_is_identical(tiny):
    prepared, result = tiny
    _assert_same(result.metrics, execute(prepared).metrics, bitwise=True)


def test_a_run_is_unaffected_by_the_other_runs(tiny):
    """Change every other run's learning rate and env: run 0 stays bit-for-bit the same."""
    prepared, result = tiny
    r = prepared.runs
    others = np.arange(len(r)) != 0
    hparams = r.hparams.replace(lr=np.where(others, 3e-3, r.hparams.lr).astype(np.float32))
    env_params = r.env_params.replace(gravity=np.where(others, 5.0, 9.8).astype(np.float32))
    changed = run_batch(prepared.trainer, r.seeds, hparams, env_params)
    _assert_same(
        {k: v[:1] for k, v in result.metrics.items()},
        {k: v[:1] for k, v in changed.metrics.items()},
        bitwise=True,
    )
    assert not np.array_equal(
        result.metrics["episode_return"][1:], changed.metrics["episode_return"][1:]
    )


def test_chunked_equals_unchunked(tiny):
    prepared, result = tiny
    r = prepared.runs
    chunked = run_batch(prepared.trainer, r.seeds, r.hparams, r.env_params, chunk_size=4)
    assert chunked.info.num_chunks == 2 and chunked.info.chunk_size == 4
    _assert_same(result.metrics, chunked.metrics)


def test_cpu_chunks_by_default_in_balanced_chunks(tiny, monkeypatch):
    from research.runner import execute as execute_module

    cap = execute_module.CPU_RUNS_PER_DEVICE
    assert execute_module.default_chunk_size("cpu", cap, 1) == cap
    assert execute_module.default_chunk_size("cpu", cap + 1, 1) == cap // 2 + 1  # 2 chunks
    assert execute_module.default_chunk_size("cpu", 64 * cap, 2) == 2 * cap
    assert execute_module.default_chunk_size("gpu", 64 * cap, 8) is None
    assert execute_module.default_chunk_size("tpu", 64 * cap, 8) is None
    prepared, result = tiny
    r = prepared.runs
    num_dev = min(len(jax.devices()), len(r))
    monkeypatch.setattr(execute_module, "CPU_RUNS_PER_DEVICE", 1)
    chunked = run_batch(prepared.trainer, r.seeds, r.hparams, r.env_params)
    assert chunked.info.chunk_size == num_dev
    assert chunked.info.num_chunks == -(-len(r) // num_dev)
    _assert_same(result.metrics, chunked.metrics)
    # An explicit chunk size or a memory budget wins over the default.
    assert (
        run_batch(
            prepared.trainer, r.seeds, r.hparams, r.env_params, chunk_size=len(r)
        ).info.num_chunks
        == 1
    )
    assert (
        run_batch(
            prepared.trainer, r.seeds, r.hparams, r.env_params, memory_budget_bytes=2**40
        ).info.num_chunks
        == 1
    )


def test_memory_budget_splits_into_chunks(tiny):
    prepared, result = tiny
    r = prepared.runs
    budget = result.info.program_bytes * 0.5
    chunked = run_batch(
        prepared.trainer, r.seeds, r.hparams, r.env_params, memory_budget_bytes=budget
    )
    assert chunked.info.num_chunks > 1
    assert chunked.info.program_bytes <= budget
    _assert_same(result.metrics, chunked.metrics)


def test_memory_estimate_counts_the_states_runs_start_from(tiny):
    # They stay alive while the train program runs: a budget must not leave them out.
    prepared, result = tiny
    r = prepared.runs
    resumed = run_batch(
        prepared.trainer,
        r.seeds,
        r.hparams,
        r.env_params,
        init_state=result.agent_states,
        keep_states=False,
    )
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(result.agent_states))
    assert resumed.info.program_bytes >= result.info.program_bytes + state_bytes


def test_one_run_alone_equals_the_same_run_in_a_batch(tiny):
    prepared, result = tiny
    train = jax.jit(prepared.trainer.train)
    for i in (0, 4):
        _assert_same({k: v[i] for k, v in result.metrics.items()}, train_alone(prepared, train, i))


def test_sharded_over_cpu_devices_equals_one_device(tiny, tmp_path):
    """8 forced CPU devices, 6 runs: one run per device on 6 of them. Runs are independent,
    so the partitioned programs exchange nothing between devices (no collectives)."""
    _, result = tiny
    out = tmp_path / "sharded.npz"
    script = (
        "import sys, numpy as np, jax\n"
        "from research.config import parse_experiment\n"
        "from research.pipelines.train import prepare, execute\n"
        "from tests.conftest import compose_raw\n"
        "assert len(jax.devices()) == 8, jax.devices()\n"
        f"p = prepare(parse_experiment(compose_raw(*{TINY!r})))\n"
        "r = execute(p)\n"
        "assert r.info.num_devices == 6 and r.info.chunk_size == 6, r.info\n"
        "import re\n"
        "from research.runner.execute import _COMPILED\n"
        "texts = [prog.as_text() for programs, _ in _COMPILED.values() for prog in programs[:2]]\n"
        "assert len(texts) == 2 and all('dot(' in t or 'convolution(' in t for t in texts[1:])\n"
        "collective = r'(all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)'\n"
        "found = [m.group(0) for t in texts "
        "for m in re.finditer(collective + r'(-start)?\\(', t)]\n"
        "assert not found, found[:5]\n"
        f"np.savez({str(out)!r}, **r.metrics)\n"
    )
    # The parent's XLA flags too (the suite's LLVM level): only the device count may differ.
    env = forced_devices_env(8)
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", script], env=env, cwd=root, check=True, timeout=600)
    with np.load(out) as sharded:
        _assert_same(result.metrics, {k: sharded[k] for k in sharded.files})


def test_no_fake_zero_before_first_episode():
    """CartPole episodes last >= 8 steps: a first segment of 4 steps per env ends none."""
    prepared = prepare(
        parse_experiment(
            compose_raw(
                "progress=false",
                "agent.num_envs=2",
                "agent.num_steps=4",
                "agent.num_minibatches=2",
                "train.total_timesteps=64",
                "train.num_logs=8",
                "runs.seeds=1",
            )
        )
    )
    metrics = execute(prepared).metrics
    assert np.isnan(metrics["episode_return"][0, 0]) and metrics["episodes"][0, 0] == 0
    assert np.isfinite(metrics["episode_return"][0]).any()


def test_new_hyperparameter_values_reuse_the_compiled_program(tiny):
    """Every traced hyperparameter and env value changes without a recompile."""
    prepared, result = tiny
    r = prepared.runs
    hparams = jax.tree.map(lambda x: (x * 0.9).astype(np.float32), r.hparams)
    env_params = r.env_params.replace(gravity=(r.env_params.gravity * 1.5).astype(np.float32))
    again = run_batch(prepared.trainer, r.seeds + 7, hparams, env_params)
    assert again.info.compile_s == 0.0
    assert not np.array_equal(again.metrics["episode_return"], result.metrics["episode_return"])
