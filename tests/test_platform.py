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
from tests.conftest import forced_devices_env


def lowered(key):
    """A fresh program of random draws, lowered (a new function: jax caches lowerings)."""
    return jax.jit(
        lambda k: (jax.random.normal(k, (5,)), jax.random.key_data(jax.random.split(k, 3)))
    ).lower(key)


@pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the rolled threefry is the CPU lowering"
)
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
EXPERIMENTS = [
    "ppo_pendulum",
    "reinforce_cartpole",
    "pqn_cartpole",
    "dqn_cartpole",
    "q_learning_gridworld",
]
SMALL = ["progress=false", "plot=false", "runs.seeds=4", "train.num_logs=2"]

# Runs in a process with 2 CPU devices: the runs axis must really be split. The first
# experiment is also lowered starting from given agent states (resumed or adopted runs).
ACCELERATOR_SCRIPT = """
import json, sys
import jax, numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from research.config import parse_experiment
from research.pipelines.train import prepare
from research.runner.execute import _init_program, lower
from tests.conftest import compose_raw
assert len(jax.devices()) == 2, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("runs",), axis_types=(AxisType.Auto,))
runs_axis = NamedSharding(mesh, PartitionSpec("runs"))
found = {}
for n, experiment in enumerate(json.loads(sys.argv[1])):
    p = prepare(parse_experiment(compose_raw(f"experiment={experiment}", *json.loads(sys.argv[2]))))
    r = p.runs
    host = (np.asarray(r.seeds, np.uint32), r.hparams, r.env_params)
    starts = {"fresh": None}
    if n == 0:
        states = jax.eval_shape(_init_program(p.trainer), *host, None).agent_state
        starts["resumed"] = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=runs_axis), states)
    for start, init_state in starts.items():
        args = jax.device_put(host, runs_axis) + (init_state, jax.device_put(
            np.int32(0), NamedSharding(mesh, PartitionSpec())))
        for target, device_platform in (("cuda", "gpu"), ("tpu", "tpu")):
            programs = lower(p.trainer, args, device_platform, runs_axis,
                             lowering_platform=target)
            found[f"{experiment}/{start}/{target}"] = [prog.as_text() for prog in programs]
print(json.dumps(found))
"""


def train_arguments(module_text: str) -> list[str]:
    """The arguments of a lowered module's public main, each with its attributes."""
    main = next(line for line in module_text.splitlines() if "func.func public @main" in line)
    return re.findall(r"%arg\d+: [^%]*", main.split(") ->")[0])


def test_every_agent_lowers_for_gpu_and_tpu_with_the_runs_axis_split():
    """Without an accelerator, the programs a GPU or TPU would run are lowered for it:
    no primitive lacks its rule there, no platform-specific library call (LAPACK, cuSOLVER)
    or other custom call is needed, and every argument of the train program (the runners,
    hyperparameters and env parameters, all [C, ...]) is annotated as split over the
    devices along the runs axis, but for the last, the segment index, a whole scalar."""
    env = forced_devices_env(2)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", ACCELERATOR_SCRIPT, json.dumps(EXPERIMENTS), json.dumps(SMALL)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    expected = [f"{e}/fresh/{t}" for e in EXPERIMENTS for t in ("cuda", "tpu")]
    expected += [f"{EXPERIMENTS[0]}/resumed/{t}" for t in ("cuda", "tpu")]
    assert sorted(found) == sorted(expected)
    for name, (init, train) in found.items():
        assert "custom_call" not in init + train, name
        *arguments, index = train_arguments(train)
        unsplit = [a for a in arguments if 'sdy.sharding<@mesh, [{"runs"}' not in a]
        assert len(arguments) > 10 and not unsplit, (name, unsplit[:3])
        assert index.startswith("%arg") and "tensor<i32>" in index, (name, index)


def test_the_custom_call_and_argument_checks_see_what_they_look_for():
    """The two checks above, on a program that has what they must catch: a cuSOLVER call
    (QR), and an argument left whole on every device."""
    mesh = jax.sharding.Mesh(
        np.array(jax.devices()[:1]), ("runs",), axis_types=(jax.sharding.AxisType.Auto,)
    )
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs"))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    args = (
        jax.ShapeDtypeStruct((4, 3, 3), np.float32, sharding=split),
        jax.ShapeDtypeStruct((4, 3), np.float32, sharding=whole),
    )
    text = (
        jax.jit(lambda a, b: jax.numpy.linalg.qr(a)[0].sum() + b.sum())
        .trace(*args)
        .lower(lowering_platforms=("cuda",))
        .as_text()
    )
    assert "custom_call" in text
    arguments = train_arguments(text)
    assert len(arguments) == 2
    assert ['sdy.sharding<@mesh, [{"runs"}' in a for a in arguments] == [True, False]


def test_resume_and_reproduce_start_as_many_cpu_devices_as_the_run_recorded(tmp_path):
    """recorded_cpu_devices: the largest CPU device count of a run directory's run.json
    files (its own and its sub-runs') and chunk manifests; a GPU run's or a damaged file's
    count is none. use_devices_of, in a fresh process without a forced count, then starts
    that many CPU devices (3 here, on whatever cores this machine has)."""
    from research.platform import recorded_cpu_devices

    def run_json(path: Path, platform: str, count: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        devices = {"platform": platform, "kind": platform, "count": count}
        (path / "run.json").write_text(json.dumps({"devices": devices}))

    run_json(tmp_path / "train", "cpu", 3)
    run_json(tmp_path / "transfer", "cpu", 2)
    run_json(tmp_path / "transfer" / "finetune", "cpu", 3)
    run_json(tmp_path / "gpu", "gpu", 8)
    (tmp_path / "killed" / "chunks").mkdir(parents=True)
    (tmp_path / "killed" / "chunks" / "manifest.json").write_text('{"num_devices": 3}')
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "run.json").write_text("{not json")
    counts = {d: recorded_cpu_devices(tmp_path / d) for d in
              ("train", "transfer", "gpu", "killed", "damaged")}  # fmt: skip
    assert counts == {"train": 3, "transfer": 3, "gpu": None, "killed": 3, "damaged": None}
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = (
        "import sys; from research.platform import use_devices_of; "
        "n = use_devices_of(sys.argv[1:]); import jax; print(n, len(jax.devices()))"
    )
    root = Path(__file__).resolve().parents[1]
    for argv, expected in ((["--out", "x", str(tmp_path / "train")], "3 3"),
                           ([str(tmp_path / "gpu")], None)):  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code, *argv], env=env, cwd=root,
                             capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        cores = len(os.sched_getaffinity(0))
        assert out.stdout.split() == (expected or f"{cores} {cores}").split(), out
