"""Optional metric sinks (TensorBoard, offline wandb), their config validation, and a
training run directory with its aggregate tables, profile figure and sink end to end."""

import copy
import importlib.machinery
import importlib.util
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research import results
from research.analysis.stats import aggregates
from research.analysis.tables import score_matrices
from research.config import ConfigError, SinksConfig, parse_experiment
from research.pipelines.train import run_experiment
from research.sinks import write_sinks
from tests.conftest import compose_raw

# tensorboardX is the `tensorboard` extra (and in dev); without it only its tests skip
needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboardX") is None, reason="tensorboardX is not installed"
)


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the event files in log_dir: TFRecord frames (length,
    length CRC, an Event proto, its CRC) parsed with tensorboardX's own proto."""
    from tensorboardX.proto import event_pb2

    out = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def fake_run_dir(path: Path, offset: float = 0.0) -> Path:
    """runs.csv (2 learning rates x 2 seeds) and metrics.npz ([4 runs, 3 logs]) by hand."""
    runs = pd.DataFrame({"run": range(4), "seed": [0, 1, 0, 1], "lr": [0.1, 0.1, 0.2, 0.2]})
    ret = np.array([[1, 2, 3], [3, np.nan, 5], [10, 20, 30], [np.nan, np.nan, 50]]) + offset
    results.write_csv(path / "runs.csv", runs)
    results.write_npz(
        path / "metrics.npz",
        {
            "env_steps": np.tile([100, 200, 300], (4, 1)),
            "episode_return": ret,
            "loss": np.ones((4, 3)),
        },
    )
    return path


# --------------------------------------------------------------------------- config


@pytest.fixture(scope="module")
def raw():
    return compose_raw()


def _with(raw, **blocks):
    out = copy.deepcopy(raw)
    for key, value in blocks.items():
        out[key] = value
    return out


@needs_tensorboard
def test_sinks_are_off_by_default_and_parse(raw):
    config = parse_experiment(raw)
    assert config.sinks == SinksConfig(tensorboard=False, wandb=False)
    assert config.analysis.optimality_threshold is None
    config = parse_experiment(
        _with(raw, sinks={"tensorboard": True}, analysis={"optimality_threshold": 500})
    )
    assert config.sinks.tensorboard and not config.sinks.wandb
    assert config.analysis.optimality_threshold == 500.0


@pytest.mark.parametrize(
    "blocks, message",
    [
        ({"sinks": {"tensorboard": "yes"}}, "sinks.tensorboard: got 'yes'; must be true or false"),
        ({"sinks": {"mlflow": True}}, "sinks.mlflow: unknown field; allowed: tensorboard, wandb"),
        ({"sinks": [True]}, "sinks: got [True]; must be a mapping"),
        (
            {"analysis": {"optimality_threshold": "max"}},
            "analysis.optimality_threshold: got 'max'; must be a float",
        ),
    ],
)
def test_bad_sinks_values_name_field_value_and_allowed(raw, blocks, message):
    with pytest.raises(ConfigError) as error:
        parse_experiment(_with(raw, **blocks))
    assert message in str(error.value)


@pytest.mark.parametrize("sink, module", [("tensorboard", "tensorboardX"), ("wandb", "wandb")])
def test_enabled_sink_without_its_package_says_which_extra(raw, monkeypatch, sink, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ConfigError) as error:
        parse_experiment(_with(raw, sinks={sink: True}))
    assert str(error.value) == (
        f"sinks.{sink}: got True; the {sink} sink needs the '{module}' "
        f"package: pip install -e '.[{sink}]', or set sinks.{sink}=false"
    )


# --------------------------------------------------------------------------- sinks


@needs_tensorboard
def test_tensorboard_sink_writes_the_setting_means_at_the_logged_steps(tmp_path):
    run_dir = fake_run_dir(tmp_path / "run")
    write_sinks(run_dir, SinksConfig(tensorboard=True), {})
    assert not list(tmp_path.glob("run/.tensorboard*"))  # written atomically, nothing left
    scalars = read_scalars(run_dir / "tensorboard")
    assert set(scalars) == {
        "episode_return/lr_0.1",
        "episode_return/lr_0.2",
        "loss/lr_0.1",
        "loss/lr_0.2",
    }
    # lr=0.1: runs 0 and 1, NaN ignored; lr=0.2: runs 2 and 3
    assert scalars["episode_return/lr_0.1"] == [(100, 2.0), (200, 2.0), (300, 4.0)]
    assert scalars["episode_return/lr_0.2"] == [(100, 10.0), (200, 20.0), (300, 40.0)]
    assert scalars["loss/lr_0.1"] == [(100, 1.0), (200, 1.0), (300, 1.0)]


@needs_tensorboard
def test_tensorboard_sink_of_a_transfer_run_prefixes_each_phase(tmp_path):
    fake_run_dir(tmp_path / "finetune")
    fake_run_dir(tmp_path / "scratch", offset=100.0)
    (tmp_path / "checkpoint").mkdir()  # no metrics: not a phase
    write_sinks(tmp_path, SinksConfig(tensorboard=True), {})
    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["finetune/episode_return/lr_0.2"][0] == (100, 10.0)
    assert scalars["scratch/episode_return/lr_0.2"][0] == (100, 110.0)
    assert len(scalars) == 8


def test_no_sink_writes_nothing(tmp_path):
    run_dir = fake_run_dir(tmp_path)
    write_sinks(run_dir, SinksConfig(), {})
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.npz", "runs.csv"]


def test_wandb_sink_logs_offline_in_the_run_dir_with_a_fake_wandb(tmp_path, monkeypatch):
    """wandb itself (and its ~28 dependencies) is not a dev dependency: a stand-in module
    records the calls the sink makes."""
    calls = []

    class Run:
        def define_metric(self, name, step_metric=None):
            calls.append(("define_metric", name, step_metric))

        def log(self, row):
            calls.append(("log", row))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = {"experiment_name": "demo", "agent": {"name": "ppo"}}
    assert parse_experiment(_with(compose_raw(), sinks={"wandb": True})).sinks.wandb
    run_dir = fake_run_dir(tmp_path / "run")
    write_sinks(run_dir, SinksConfig(wandb=True), config)
    (_, init), *rest = calls
    assert init == {
        "mode": "offline",
        "dir": str(run_dir),
        "config": config,
        "project": "demo",
        "name": "run",
    }
    assert rest[:3] == [
        ("define_metric", "env_steps", None),
        ("define_metric", "episode_return/*", "env_steps"),
        ("define_metric", "loss/*", "env_steps"),
    ]
    logs = [c[1] for c in rest if c[0] == "log"]
    assert [row["env_steps"] for row in logs] == [100, 200, 300]
    assert [row["episode_return/lr_0.1"] for row in logs] == [2.0, 2.0, 4.0]
    assert rest[-1] == ("finish",)


# --------------------------------------------------------------------------- end to end


@needs_tensorboard
def test_training_run_directory_gets_aggregates_profile_and_tensorboard(tmp_path):
    raw = compose_raw(
        "runs.seeds=2",
        "sweep.lr=[1e-3,3e-4]",
        "env.variants.length=[0.5,1.0]",
        "agent.num_steps=32",
        "agent.num_epochs=1",
        "agent.num_minibatches=1",
        "agent.hidden_sizes=[8]",
        "train.total_timesteps=2048",
        "train.num_logs=4",
        "progress=false",
        "sinks.tensorboard=true",
        "analysis.optimality_threshold=500",
    )
    run_dir = run_experiment(parse_experiment(raw), raw, tmp_path / "run")
    names = {p.name for p in run_dir.iterdir()}
    assert {
        f"{stem}.{ext}"
        for stem in ("aggregates", "probability_of_improvement")
        for ext in ("csv", "md", "tex")
    } | {"performance_profile.png", "tensorboard", "summary.csv", "summary.md"} <= names
    # the tables are regenerated from the saved files: 2 settings (lr), strata = lengths
    runs, metrics = results.load_metrics(run_dir)
    table = pd.read_csv(run_dir / "aggregates.csv")
    assert table.setting.tolist() == ["lr=0.001", "lr=0.0003"]
    assert (table.runs == 4).all() and (table.strata == 2).all() and (table.threshold == 500).all()
    for row, (_label, scores) in zip(
        table.itertuples(),
        score_matrices(runs, metrics["episode_return"][:, -1], ["lr"], ["env.length"]),
    ):
        assert scores.shape == (2, 2)
        np.testing.assert_allclose(
            [row.iqm, row.mean, row.median, row.optimality_gap], aggregates(scores, 500.0)
        )
    improvement = pd.read_csv(run_dir / "probability_of_improvement.csv")
    assert improvement[["x", "y"]].values.tolist() == [["lr=0.001", "lr=0.0003"]]
    assert "\\begin{tabular}" in (run_dir / "aggregates.tex").read_text()
    # TensorBoard: the per-setting mean return at each logged step
    scalars = read_scalars(run_dir / "tensorboard")
    steps = metrics["env_steps"][0]
    index = runs.index[(runs.lr == 1e-3) & (runs["env.length"] == 0.5)]
    expected = np.nanmean(metrics["episode_return"][index], axis=0)
    got = scalars["episode_return/lr_0.001_env.length_0.5"]
    assert [s for s, _ in got] == steps[np.isfinite(expected)].tolist()
    np.testing.assert_allclose([v for _, v in got], expected[np.isfinite(expected)], rtol=1e-6)
