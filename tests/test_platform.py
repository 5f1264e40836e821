import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from research.platform import straight_line_threefry


def lowered(key):
    """A fresh program of random draws, lowered (a new function: jax caches lowerings)."""
    return jax.jit(lambda k: (jax.random.normal(k, (5,)),
                              jax.random.key_data(jax.random.split(k, 3)))).lower(key)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rolled threefry is the CPU lowering")
def test_straight_line_threefry_drops_the_loop_and_keeps_the_bits():
    key = jax.random.key(3)
    rolled = lowered(key)
    with straight_line_threefry() as took_effect:
        straight = lowered(key)
    assert took_effect
    assert "stablehlo.while" in rolled.as_text()
    assert "stablehlo.while" not in straight.as_text()
    assert "stablehlo.while" in lowered(key).as_text()  # jax's CPU rule is back
    for a, b in zip(rolled.compile()(key), straight.compile()(key)):
        np.testing.assert_array_equal(a, b)


# Every agent, continuous actions and a replay buffer included.
EXPERIMENTS = ["ppo_pendulum", "reinforce_cartpole", "pqn_cartpole", "dqn_cartpole",
               "q_learning_gridworld"]
SMALL = ["progress=false", "plot=false", "runs.seeds=4", "train.num_logs=2"]

# Runs in a process with 2 CPU devices: the runs axis must really be split.
ACCELERATOR_SCRIPT = """
import json, re, sys
import jax, numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from research.config import parse_experiment
from research.pipelines.train import prepare
from research.runner.execute import lower
from tests.conftest import compose_raw
assert len(jax.devices()) == 2, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("runs",), axis_types=(AxisType.Auto,))
runs_axis = NamedSharding(mesh, PartitionSpec("runs"))
found = {}
for experiment in json.loads(sys.argv[1]):
    p = prepare(parse_experiment(compose_raw(f"experiment={experiment}", *json.loads(sys.argv[2]))))
    r = p.runs
    args = jax.device_put((np.asarray(r.seeds, np.uint32), r.hparams, r.env_params, None),
                          runs_axis) + (jax.device_put(np.int32(0), NamedSharding(mesh, PartitionSpec())),)
    for target, device_platform in (("cuda", "gpu"), ("tpu", "tpu")):
        programs = lower(p.trainer, args, device_platform, runs_axis, lowering_platform=target)
        found[f"{experiment}/{target}"] = [
            {"main": next(line for line in prog.as_text().splitlines() if "func.func public @main" in line),
             "custom_calls": sorted(set(re.findall(r"custom_call @(\\w+)", prog.as_text())))}
            for prog in programs]
print(json.dumps(found))
"""


def test_every_agent_lowers_for_gpu_and_tpu_with_the_runs_axis_split():
    """Without an accelerator, the programs a GPU or TPU would run are lowered for it:
    no primitive lacks its rule there, no platform-specific library call (LAPACK, cuSOLVER)
    is needed, and every argument of the train program (the runners, hyperparameters and env
    parameters) is split over the devices along the runs axis."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", ACCELERATOR_SCRIPT, json.dumps(EXPERIMENTS),
                          json.dumps(SMALL)], env=env, cwd=root, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(found) == sorted(f"{e}/{t}" for e in EXPERIMENTS for t in ("cuda", "tpu"))
    for name, (init, train) in found.items():
        assert init["custom_calls"] == train["custom_calls"] == [], name
        arguments = re.findall(r"%arg\d+: tensor<[^>]*>( \{[^}]*\})?", train["main"])
        split = [a for a in arguments if 'sdy.sharding<@mesh, [{"runs"}' in a]
        assert len(arguments) > 10 and len(split) == len(arguments), (name, train["main"][:500])
