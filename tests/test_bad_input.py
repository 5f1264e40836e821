"""Bad input at every entry point: one line naming the culprit, exit code 2, no traceback,
and nothing left behind (issue 25 item 3, issue 27 items 5 and 6).

The table (CASES) is run in ONE process (`_HARNESS`): each case runs its script as
`python scripts/<name>.py ARGS` would (runpy, sys.argv patched, stdout / stderr captured),
from a scratch working directory, so that anything a rejected input writes shows up. A few
true subprocesses prove that nothing else reaches the terminal; the Python API raises the
same InputErrors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from research.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600  # seconds for the harness process (every case of the table)

# The harness: runs each case in this one process, as its script's __main__.
_HARNESS = r"""
import contextlib, io, json, os, runpy, sys, traceback
cases_file, results_file = sys.argv[1:3]
cases = json.load(open(cases_file))
results = []
for case in cases:
    from hydra.core.global_hydra import GlobalHydra
    GlobalHydra.instance().clear()
    os.environ.pop("HYDRA_FULL_ERROR", None)  # scripts/train.py sets it for Hydra
    for module, attrs in (("research.errors", {"_ASKED": None}),
                          ("research.pipelines.run", {})):
        if module in sys.modules:
            for k, v in attrs.items():
                setattr(sys.modules[module], k, v)
    if "research.pipelines.run" in sys.modules:
        made = sys.modules["research.pipelines.run"]._Made
        made.top = made.sweep = None
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [case["script"], *case["args"]]
    code = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(case["script"], run_name="__main__")
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) or exit.code is None else 1
            if not isinstance(exit.code, int) and exit.code is not None:
                print(exit.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = "exception"
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
json.dump(results, open(results_file, "w"))
"""

TINY = ["progress=false", "plot=false", "agent.num_steps=32", "train.total_timesteps=2048",
        "train.num_logs=4", "runs.seeds=2"]  # fmt: skip
STUDY = {
    "study_name": "s",
    "storage": "sqlite:///{tmp}/db/s.db",
    "num_trials": 1,
    "overrides": ["agent=ppo", *TINY],
    "space": {"agent.num_envs": [4]},
}


def _study(**changes) -> dict:
    spec = {**STUDY, **changes}
    return {k: v for k, v in spec.items() if v is not ...}


# (id, script, args, what the one line must name); the exit code is 2 for each. {tmp} is the
# scratch directory
# (the working directory of every case); {tmp}/out_<id> must not exist afterwards, nor anything
# new under {tmp} besides what the fixtures made.
CASES = [
    # scripts/train.py: config values
    ("train-value", "train", ["agent.num_envs=0"], "config error: agent.num_envs: got 0; must be"),
    ("train-seed-overflow", "train", ["runs.base_seed=4294967296"],
     "config error: runs.base_seed: got 4294967296; with runs.seeds = 8 it must be at most "
     "4294967288"),
    ("train-seed-overflow-by-seeds", "train", ["runs.base_seed=4294967290", "runs.seeds=8"],
     "runs.base_seed: got 4294967290"),
    ("train-seed-negative", "train", ["runs.base_seed=-1"], "runs.base_seed: got -1; must be"),
    ("train-steps-too-few", "train", ["train.total_timesteps=10"],
     "config error: train.total_timesteps: got 10; with num_envs * num_steps = 512"),
    ("train-unknown-field", "train", ["+runs.chunky=1"], "runs.chunky"),
    ("train-shape-sweep", "train", ["+sweep.num_envs=[4,8]"],
     "config error: sweep.num_envs: 'num_envs' changes array shapes, so it cannot vary inside "
     "one program; run one program per value with Hydra multirun (-m agent.num_envs=a,b)"),
    ("train-sweep-key", "train", ["sweep.num_envs=[4,8]"],
     "error: Could not override 'sweep.num_envs'."),
    ("train-physics", "train", ["env.params.masspole=-1"], "env.params.masspole: got -1"),
    ("train-env-id", "train", ["env=gymnax", "env.id=NoSuch-v0"], "NoSuch-v0"),
    ("train-import", "train", ["import_modules=[no_such_module_xyz]"], "no_such_module_xyz"),
    ("train-checkpoint-missing", "train",
     ["experiment=transfer_cartpole_ppo", "+transfer.checkpoint={tmp}/no_ckpt"], "no_ckpt"),
    ("train-checkpoint-not-one", "train",
     ["experiment=transfer_cartpole_ppo", "+transfer.checkpoint={tmp}/empty"], "empty"),
    # scripts/train.py: Hydra's own errors, one line too
    ("train-group-option", "train", ["agent=nope"],
     "error: In 'config': Could not find 'agent/nope'; available: dqn, ppo"),
    ("train-unknown-key", "train", ["agent.nope=1"], "error: Could not override 'agent.nope'"),
    ("train-override-syntax", "train", ["agent.lr=[1,"], "error: agent.lr=[1,: no viable"),
    ("train-interpolation", "train", ["agent.lr=${nope}"],
     "error: agent.lr: Interpolation key 'nope' not found"),
    # scripts/train.py: output directories
    ("train-dir-with-results", "train", ["hydra.run.dir={tmp}/has_results", "agent.num_envs=0"],
     "agent.num_envs: got 0"),  # an existing directory: untouched (the tree check below)
    ("train-dir-proc", "train", ["hydra.run.dir=/proc/x/run"],
     "error: hydra.run.dir: cannot write the directory '/proc/x/run'"),
    ("train-dir-under-file", "train", ["output_root={tmp}/a_file/sub"],
     "(Not a directory); give a writable one with output_root=DIR"),
    ("train-sweep-dir-proc", "train", ["-m", "agent.num_envs=4", "hydra.sweep.dir=/proc/x/m"],
     "error: hydra.sweep.dir: cannot write the directory '/proc/x/m'"),
    # scripts/train.py: a multirun is checked whole before its first job
    ("train-multirun", "train", ["-m", "agent.num_envs=4,0"],
     "config error: job 1 of 2 (agent.num_envs=0 output_root={tmp}/out_train-multirun): "
     "agent.num_envs: got 0"),
    ("train-multirun-grid", "train", ["-m", "agent.num_envs=4,8", "runs.seeds=1,0"],
     "job 1 of 4 (agent.num_envs=4 runs.seeds=0"),
    # scripts/resume.py
    ("resume-missing", "resume", ["{tmp}/missing"], "run_dir: '{tmp}/missing' is not a directory"),
    ("resume-file", "resume", ["{tmp}/a_file"], "run_dir: '{tmp}/a_file' is not a directory"),
    ("resume-empty", "resume", ["{tmp}/empty"], "has no config.yaml, so it is not a run directory"),
    ("resume-yaml", "resume", ["{tmp}/broken"], "{tmp}/broken/config.yaml: not valid YAML"),
    ("resume-list", "resume", ["{tmp}/listed"], "config.yaml: got list; must be a mapping"),
    ("resume-checkpoint", "resume", ["{tmp}/ckpt"], "is a checkpoint directory, not a run dir"),
    ("resume-sweep-dir", "resume", ["{tmp}/sweep"],
     "error: run_dir: '{tmp}/sweep' is a multirun's sweep directory, not a run directory; give "
     "one of its jobs' directories (0)"),
    ("resume-other-version", "resume", ["{tmp}/other_version"],
     "{tmp}/other_version/config.yaml: runs.chunky: unknown field; allowed: base_seed"),
    ("resume-bad-value", "resume", ["{tmp}/bad_value"],
     "{tmp}/bad_value/config.yaml: runs.seeds: got 0"),
    ("resume-no-argument", "resume", [],
     "error: resume.py: the following arguments are required: run_dir; see resume.py --help"),
    ("resume-two-arguments", "resume", ["{tmp}/empty", "{tmp}/empty"], "unrecognized arguments"),
    # scripts/reproduce.py
    ("reproduce-missing", "reproduce", ["{tmp}/missing"], "'{tmp}/missing' is not a directory"),
    ("reproduce-empty", "reproduce", ["{tmp}/empty"], "'{tmp}/empty' has no config.yaml, so it"),
    ("reproduce-list", "reproduce", ["{tmp}/listed"], "config.yaml: got list; must be a mapping"),
    ("reproduce-yaml", "reproduce", ["{tmp}/broken"], "broken/config.yaml: not valid YAML"),
    ("reproduce-checkpoint", "reproduce", ["{tmp}/ckpt"], "is a checkpoint directory"),
    ("reproduce-npz", "reproduce", ["{tmp}/bad_npz"],
     "error: {tmp}/bad_npz/metrics.npz: unreadable (BadZipFile); the metrics to compare with"),
    ("reproduce-out-not-empty", "reproduce", ["{tmp}/valid", "--out", "{tmp}/valid"],
     "error: --out: '{tmp}/valid' is not empty; give a new directory"),
    ("reproduce-out-unwritable", "reproduce", ["{tmp}/valid", "--out", "{tmp}/a_file/again"],
     "error: --out: cannot write the directory '{tmp}/a_file/again' (Not a directory)"),
    # scripts/optuna_search.py
    ("optuna-missing", "optuna_search", ["{tmp}/nope.yaml"],
     "error: study: '{tmp}/nope.yaml' does not exist; give a study file such as"),
    ("optuna-dir", "optuna_search", ["{tmp}/empty"], "study: '{tmp}/empty' is not a file"),
    ("optuna-yaml", "optuna_search", ["{tmp}/study_broken.yaml"], "study_broken.yaml: not valid"),
    ("optuna-list", "optuna_search", ["{tmp}/study_list.yaml"], "got list; must be a mapping"),
    ("optuna-no-storage", "optuna_search", ["{tmp}/study_no_storage.yaml"],
     "config error: study.storage: got None; give an Optuna storage URL"),
    ("optuna-no-name", "optuna_search", ["{tmp}/study_no_name.yaml"], "study.study_name: got None"),
    ("optuna-unknown-field", "optuna_search", ["{tmp}/study_unknown.yaml"],
     "study.trails: unknown field; allowed: study_name"),
    ("optuna-direction", "optuna_search", ["{tmp}/study_direction.yaml"],
     "study.direction: got 'up'; must be 'maximize' or 'minimize'"),
    ("optuna-num-trials", "optuna_search", ["{tmp}/study_trials.yaml"], "study.num_trials: got 0"),
    ("optuna-overrides", "optuna_search", ["{tmp}/study_overrides.yaml"],
     "study.overrides: got 'agent=ppo'; must be a list"),
    ("optuna-no-space", "optuna_search", ["{tmp}/study_no_space.yaml"], "study.space: got None"),
    ("optuna-space-list", "optuna_search", ["{tmp}/study_space_scalar.yaml"],
     "study.space.agent.num_envs: got 4; must be a non-empty list"),
    ("optuna-space-value", "optuna_search", ["{tmp}/study_space_value.yaml"],
     "study.space.agent.num_envs = 0: agent.num_envs: got 0"),
    ("optuna-space-key", "optuna_search", ["{tmp}/study_space_key.yaml"],
     "study.space.agent.nope = 1: overrides"),
    ("optuna-storage-url", "optuna_search", ["{tmp}/study_storage_url.yaml"],
     "error: study.storage: cannot open 'nope://x' (Can't load plugin: sqlalchemy.dialects:nope)"),
    ("optuna-storage-dir", "optuna_search", ["{tmp}/study_storage_dir.yaml"],
     "error: study.storage: cannot open 'sqlite:////proc/x/s.db'"),
    ("optuna-trials-flag", "optuna_search", ["{tmp}/study_ok.yaml", "--trials", "0"],
     "error: --trials: got 0; must be an int with 1 <= x"),
    ("optuna-trials-int", "optuna_search", ["{tmp}/study_ok.yaml", "--trials", "x"],
     "argument --trials: invalid int value: 'x'"),
    # scripts/benchmark.py (the parent checks before it starts a worker or writes a table)
    ("bench-runs", "benchmark", ["--runs", "0"], "error: --runs: got 0; must be at least 1"),
    ("bench-runs-int", "benchmark", ["--runs", "x"], "argument --runs: invalid int value: 'x'"),
    ("bench-steps", "benchmark", ["--total-timesteps", "0"], "--total-timesteps: got 0"),
    ("bench-logs", "benchmark", ["--num-logs", "0"], "--num-logs: got 0"),
    ("bench-timeout", "benchmark", ["--timeout", "0"], "--timeout: got 0.0"),
    ("bench-agent", "benchmark", ["--agent", "nope"], "argument --agent: invalid choice: 'nope'"),
    ("bench-env", "benchmark", ["--env", "nope"], "--env: got 'nope'; must be one of acrobot"),
    ("bench-pin", "benchmark", ["--pin-cpus", "x"], "--pin-cpus: got 'x'; must be CPUs like"),
    ("bench-pin-range", "benchmark", ["--pin-cpus", "999"], "--pin-cpus: got '999'; this proc"),
    ("bench-override", "benchmark", ["--override", "agent.nope=1"],
     "--override agent.nope=1: Could not override 'agent.nope'"),
    ("bench-out-proc", "benchmark", ["--out", "/proc/x/b"], "--out: cannot write the directory"),
    ("bench-out-file", "benchmark", ["--out", "{tmp}/a_file/b"], "(Not a directory)"),
    ("bench-value", "benchmark", ["--override", "agent.num_envs=0", "--runs", "1"],
     "agent=ppo env=cartpole agent.num_envs=0: agent.num_envs: got 0"),
    ("bench-devices", "benchmark", ["--num-devices", "64", "--runs", "1"],
     "--num-devices: got 64; only"),
    # the other benchmark scripts
    ("peers-runs", "benchmark_peers", ["--runs", "0"], "--runs: got 0; must be at least 1"),
    ("peers-compare", "benchmark_peers", ["--compare", "nope"], "argument --compare: invalid"),
    ("levels-level", "benchmark_compile_levels", ["--levels", "5"],
     "--levels [5]: each must be 0, 1, 2 or 3"),
    ("levels-reps", "benchmark_compile_levels", ["--reps", "0"], "--reps: got 0"),
    ("extensions-variant", "benchmark_extensions", [],
     "the following arguments are required: --variant"),
    ("extensions-variant-form", "benchmark_extensions", ["--variant", "novalue"],
     "--variant 'novalue': must be NAME=OVERRIDES"),
    ("extensions-override", "benchmark_extensions",
     ["--variant", "off=", "--override", "agent.nope=1"], "Could not override 'agent.nope'"),
]  # fmt: skip
# cases with a directory of their own (no output_root=... appended)
TRAIN_OUT = {"train-dir-proc", "train-dir-under-file", "train-sweep-dir-proc",
             "train-dir-with-results"}  # fmt: skip


def _fixtures(tmp: Path) -> None:
    """The files and directories the cases name (all under the scratch directory)."""
    from tests.conftest import compose_raw

    (tmp / "empty").mkdir()
    (tmp / "has_results").mkdir()
    (tmp / "has_results" / "metrics.npz").write_bytes(b"results")
    (tmp / "a_file").write_text("not a directory\n")
    for name, text in {
        "broken": "agent: {name: ppo\n",
        "listed": "- 1\n- 2\n",
        "ckpt": "agent: {name: ppo}\n",
    }.items():
        (tmp / name).mkdir()
        (tmp / name / "config.yaml").write_text(text)
    (tmp / "ckpt" / "checkpoint.json").write_text("{}")
    raw = compose_raw(*TINY)
    for name, change in {
        "valid": {},
        "other_version": {"runs": {**raw["runs"], "chunky": 1}},
        "bad_value": {"runs": {**raw["runs"], "seeds": 0}},
    }.items():
        (tmp / name).mkdir()
        (tmp / name / "config.yaml").write_text(yaml.safe_dump({**raw, **change}))
    (tmp / "sweep" / "0").mkdir(parents=True)
    (tmp / "sweep" / "multirun.yaml").write_text("hydra: {}\n")
    (tmp / "sweep" / "0" / "config.yaml").write_text(yaml.safe_dump(raw))
    (tmp / "bad_npz").mkdir()
    (tmp / "bad_npz" / "config.yaml").write_text(yaml.safe_dump(raw))
    (tmp / "bad_npz" / "metrics.npz").write_bytes(b"PK\x03\x04 truncated")
    studies = {
        "ok": _study(),
        "no_storage": _study(storage=...),
        "no_name": _study(study_name=...),
        "unknown": _study(trails=3),
        "direction": _study(direction="up"),
        "trials": _study(num_trials=0),
        "overrides": _study(overrides="agent=ppo"),
        "no_space": _study(space=...),
        "space_scalar": _study(space={"agent.num_envs": 4}),
        "space_value": _study(space={"agent.num_envs": [4, 0]}),
        "space_key": _study(space={"agent.nope": [1]}),
        "storage_url": _study(storage="nope://x"),
        "storage_dir": _study(storage="sqlite:////proc/x/s.db"),
    }
    for name, spec in studies.items():
        text = yaml.safe_dump(spec).replace("{tmp}", str(tmp))
        (tmp / f"study_{name}.yaml").write_text(text)
    (tmp / "study_broken.yaml").write_text("study_name: [s\n")
    (tmp / "study_list.yaml").write_text("- study_name\n")


def _tree(tmp: Path) -> dict[str, int]:
    return {str(p.relative_to(tmp)): p.stat().st_mtime_ns for p in tmp.rglob("*")}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """{case id: (case, result)} of every case, run by the harness in one process."""
    tmp = tmp_path_factory.mktemp("bad_input")
    _fixtures(tmp)
    before = _tree(tmp)
    cases = []
    for case_id, script, args, _ in CASES:
        args = [a.replace("{tmp}", str(tmp)) for a in args]
        if script == "train" and case_id not in TRAIN_OUT:
            args.append(f"output_root={tmp}/out_{case_id}")
        cases.append({"script": str(ROOT / "scripts" / f"{script}.py"), "args": args})
    (tmp / "cases.json").write_text(json.dumps(cases))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _HARNESS, str(tmp / "cases.json"), str(tmp / "results.json")],
        cwd=tmp,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp / "results.json").read_text())
    (tmp / "cases.json").unlink()
    (tmp / "results.json").unlink()
    left = sorted(set(_tree(tmp)) - set(before))
    print(f"{len(CASES)} cases in {time.perf_counter() - started:.1f}s")
    return tmp, dict(zip((c[0] for c in CASES), zip(CASES, results))), left, before


ENTRY_POINTS = {"train", "resume", "reproduce", "optuna_search", "benchmark", "benchmark_peers",
                "benchmark_compile_levels", "benchmark_extensions"}  # fmt: skip


def test_the_table_covers_every_entry_point_with_at_least_40_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[1] for c in CASES} == ENTRY_POINTS
    for script in (ROOT / "scripts").glob("*.py"):  # a new one too goes through the one path
        main = script.read_text().split('if __name__ == "__main__":')[-1]
        assert "sys.exit(cli(" in main or "sys.exit(hydra_cli(" in main, script.name


@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_culprit(outcomes, case_id):
    tmp, by_id, _, _ = outcomes
    (_, _, _, message), result = by_id[case_id]
    message = message.replace("{tmp}", str(tmp))
    stderr, stdout = result["stderr"], result["stdout"]
    assert result["code"] == 2, (result["code"], stderr[-2000:])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and message in lines[-1], stderr[-2000:]
    assert len([line for line in lines if "error" in line.split(":")[0]]) == 1, stderr
    assert "Traceback" not in stderr + stdout, stderr
    assert "HYDRA_FULL_ERROR" not in stderr  # not Hydra's hint: our one line
    assert not (tmp / f"out_{case_id}").exists(), case_id  # no run directory left behind


def test_rejected_inputs_leave_nothing_behind(outcomes):
    tmp, _, left, before = outcomes
    assert left == [], left  # no run dir, study db, table or partial file anywhere under tmp
    assert {k: v for k, v in _tree(tmp).items() if k in before} == before  # nothing touched


def test_only_a_directory_this_run_made_with_only_hydra_files_is_removed(tmp_path):
    from research.pipelines import run

    def hydra_dir(path: Path) -> Path:
        (path / ".hydra").mkdir(parents=True)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            (path / ".hydra" / name).write_text("x: 1\n")
        (path / "train.log").write_text("")
        return path

    made = tmp_path / "made"
    run_dir = hydra_dir(made / "ppo" / "time")
    try:
        run._Made.top = None  # not made by this run: kept
        assert not run.remove_litter(run_dir) and run_dir.exists()
        run._Made.top = made
        (run_dir / "config.yaml").write_text("x: 1\n")  # results (resumable): kept
        assert not run.remove_litter(run_dir) and (run_dir / "config.yaml").exists()
        (run_dir / "config.yaml").unlink()
        (run_dir / ".hydra" / "other").write_text("")  # not Hydra's: kept
        assert not run.remove_litter(run_dir) and run_dir.exists()
        (run_dir / ".hydra" / "other").unlink()
        assert run.remove_litter(run_dir)  # Hydra's files only, made by this run: removed
        assert list(tmp_path.iterdir()) == []  # with the parents it made
    finally:
        run._Made.top = None


def test_no_job_of_a_bad_multirun_ran(outcomes):
    _, by_id, _, _ = outcomes
    result = by_id["train-multirun"][1]
    assert "runs in" not in result["stdout"] and "Launching" not in result["stdout"]


# ------------------------------------------------------------------- true subprocesses


def test_nothing_but_the_line_reaches_the_terminal(tmp_path):
    """Three entry points in their own processes: stderr is exactly the one line."""
    cases = [
        (["train", "agent.num_envs=0", f"output_root={tmp_path}/o"],
         "config error: agent.num_envs: got 0; must be an int with 1 <= x"),
        (["optuna_search", str(tmp_path / "nope.yaml")],
         f"error: study: '{tmp_path}/nope.yaml' does not exist; give a study file such as "
         "configs/optuna/ppo_cartpole_shapes.yaml"),
        (["benchmark", "--runs", "0"], "error: --runs: got 0; must be at least 1"),
    ]  # fmt: skip
    for (script, *args), line in cases:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / f"{script}.py"), *args],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == line, proc.stderr
    assert list(tmp_path.iterdir()) == []
    # Asked for, the traceback is there (and Hydra's errors are raised, not printed).
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "agent=nope"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "RESEARCH_DEBUG": "1"},
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" in proc.stderr


# ------------------------------------------------------------------------- the Python API


def test_the_python_api_raises_the_same_input_errors(tmp_path):
    from research.pipelines.run import resume, run, saved_config
    from research.pipelines.search import check_study, load_study, run_study
    from tests.conftest import compose_raw

    (tmp_path / "valid").mkdir()
    (tmp_path / "valid" / "config.yaml").write_text(yaml.safe_dump(compose_raw(*TINY)))
    (tmp_path / "f").write_text("a file")
    before = sorted(tmp_path.rglob("*"))

    for call, message in [
        (lambda: saved_config(tmp_path / "missing"), "is not a directory"),
        (lambda: resume(tmp_path / "missing"), "is not a directory"),
        (lambda: load_study(tmp_path / "nope.yaml"), "does not exist"),
        (lambda: check_study({"study_name": "s", "space": {}}), "study.storage: got None"),
        (lambda: run_study({"study_name": "s"}), "study.storage: got None"),
        (lambda: run(*saved_config(tmp_path / "valid"), tmp_path / "f" / "x"), "run_dir: cannot"),
    ]:
        with pytest.raises(InputError, match=message):
            call()
    assert sorted(tmp_path.rglob("*")) == before


def test_ctrl_c_outside_a_run_is_one_line(capsys):
    """Ctrl-C in an entry point with nothing to resume (a benchmark, before a run starts)."""
    from research.errors import cli

    def interrupted():
        raise KeyboardInterrupt

    assert cli(interrupted) == 130
    line = "interrupted: what was written so far is kept (every file is written atomically)"
    assert capsys.readouterr().err == line + "\n"
