"""Hyperparameter search at equal env-step budget: PBT vs random search vs Optuna TPE vs the
default hyperparameters, tuned on tuning seeds and reported on separate test seeds.

    python scripts/hpo_compare.py cartpole_ppo results/hpo/cartpole_ppo

For a setting S, each method's tuning phase runs with the same total env steps
(configs/experiment/hpo_S_random.yaml, configs/optuna/hpo_S_tpe.yaml,
configs/experiment/hpo_S_pbt.yaml); its chosen (lr, ent_coef) is then trained from scratch on
the test seeds of configs/experiment/hpo_S.yaml, as are the defaults. PBT is also
run as what it is, a training procedure: one population on the test seeds. Writes
<out>/tune/<method>, <out>/test/<method> (run directories), comparison.csv/md and
wall_clock.json (seconds per phase, measured here).
"""

from __future__ import annotations

import sys
from pathlib import Path

from research.platform import use_cpu_cores_as_devices

use_cpu_cores_as_devices()

import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from research.analysis.stats import bootstrap_mean_ci, iqm, stratified_bootstrap_ci  # noqa: E402
from research.config import parse_experiment  # noqa: E402
from research.errors import ArgumentParser, cli  # noqa: E402
from research.pipelines.run import run  # noqa: E402
from research.pipelines.search import compose_config, load_study, run_study  # noqa: E402
from research.platform import use_compile_cache  # noqa: E402

FIELDS = ("lr", "ent_coef")
# A final return at or below this: the run never learnt (CartPole: a random policy's ~22;
# Acrobot: -500 is the episode limit, no swing-up at all).
FAIL_BELOW = {"cartpole_ppo": 50.0, "acrobot_ppo": -499.0}
STUDIES = Path(__file__).resolve().parents[1] / "configs" / "optuna"


def train(overrides: list[str], run_dir: Path) -> tuple[Path, float]:
    """(run dir, wall seconds) of one scripts/train.py-equivalent run."""
    raw = compose_config([*overrides, "progress=false"])
    started = time.perf_counter()
    out = run(parse_experiment(raw), raw, run_dir)
    return out, time.perf_counter() - started


def metrics(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "metrics.npz") as f:
        return {k: f[k] for k in f.files}


def pick_random(run_dir: Path) -> dict[str, float]:
    """The sampled point with the best mean final return over its tuning seeds (ties: the
    smallest lr; TPE's best trial is likewise the first to reach the best value)."""
    runs = pd.read_csv(run_dir / "runs.csv")
    runs["final"] = metrics(run_dir)["episode_return"][:, -1]
    best = runs.groupby(list(FIELDS))["final"].mean().idxmax()
    return dict(zip(FIELDS, map(float, best)))


def pick_tpe(spec: dict) -> dict[str, float]:
    """The stored study's best trial's values (the first to reach the best value)."""
    import optuna

    study = optuna.load_study(study_name=spec["study_name"], storage=spec["storage"])
    choices = study.best_trial.user_attrs["choices"]  # config key -> the value, as text
    return {k: float(choices[f"agent.{k}"]) for k in FIELDS}


def pick_pbt(run_dir: Path) -> dict[str, float]:
    """The population's median of each value in force during the last segment: what PBT
    converged to. (Its best-ranked member is no choice once returns saturate: ranking ties
    go to the lowest index, a member that may never have been replaced.)"""
    m = metrics(run_dir)
    return {k: float(np.median(m[f"pbt.{k}"][:, -1])) for k in FIELDS}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setting", help="S of configs/experiment/hpo_S*.yaml, e.g. cartpole_ppo")
    parser.add_argument("out", type=Path, help="output directory, e.g. results/hpo/cartpole_ppo")
    parser.add_argument("--report", action="store_true", help="only rebuild comparison.md")
    args = parser.parse_args(argv)
    out, base = args.out, f"experiment=hpo_{args.setting}"
    use_compile_cache("default")  # as scripts/train.py: a program compiled once is loaded after
    if args.report:
        print(report(out, FAIL_BELOW[args.setting]))
        return 0
    wall_file = out / "wall_clock.json"
    wall = json.loads(wall_file.read_text()) if wall_file.exists() else {}

    def timed(method: str, phase: str, run_dir: Path, step) -> Path:
        """Runs `step` unless `run_dir` holds its results already (a rerun after a crash or
        a deleted phase redoes only what is missing), recording its wall clock."""
        if not (run_dir / "metrics.npz").exists() and not (run_dir / "done").exists():
            started = time.perf_counter()
            step()
            wall.setdefault(method, {})[phase] = time.perf_counter() - started
            write_wall(out, wall)
        return run_dir

    tune = out / "tune"
    picks: dict[str, dict[str, float]] = {"default": {}}
    wall.setdefault("default", {})["tune_s"] = 0.0
    timed("random", "tune_s", tune / "random", lambda: train([f"{base}_random"], tune / "random"))
    picks["random"] = pick_random(tune / "random")

    spec = load_study(STUDIES / f"hpo_{args.setting}_tpe.yaml")

    def tpe() -> None:
        run_study(spec, root=tune / "tpe")
        (tune / "tpe" / "done").write_text("")  # rerunning the study would add trials

    timed("tpe", "tune_s", tune / "tpe", tpe)
    picks["tpe"] = pick_tpe(spec)

    timed("pbt", "tune_s", tune / "pbt", lambda: train([f"{base}_pbt"], tune / "pbt"))
    picks["pbt"] = pick_pbt(tune / "pbt")

    for method, values in picks.items():
        tuned = [f"agent.{k}={v!r}" for k, v in values.items()]
        test = out / "test" / method
        timed(method, "test_s", test, lambda tuned=tuned, test=test: train([base, *tuned], test))
    # PBT as a training procedure: a population on the test seeds, its members' own returns.
    seed = parse_experiment(compose_config([base])).runs.base_seed
    test = out / "test" / "pbt_population"
    wall.setdefault("pbt_population", {})["tune_s"] = 0.0
    timed("pbt_population", "test_s", test,
          lambda: train([f"{base}_pbt", f"runs.base_seed={seed}"], test))  # fmt: skip
    print(report(out, FAIL_BELOW[args.setting]))
    return 0


def write_wall(out: Path, wall: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "wall_clock.json").write_text(json.dumps(wall, indent=2) + "\n")


def env_steps(run_dir: Path) -> int:
    """The env steps a run directory's batch trained (all its runs)."""
    info = json.loads((run_dir / "run.json").read_text())
    return info["num_runs"] * info["env_steps_per_run"]


def report(out: Path, fail_below: float) -> str:
    """comparison.csv / .md from the run directories under `out` and wall_clock.json: per
    method the tested values, the test runs' final return and mean return over training
    (AUC / num_logs) with 95% bootstrap CIs, the IQM of the final return (stratified
    bootstrap CI), how many test seeds end at or below `fail_below` (never learnt), the
    tuning env steps and the wall clock."""
    wall = json.loads((out / "wall_clock.json").read_text())
    tuning = {
        "default": 0,
        "random": env_steps(out / "tune" / "random"),
        "tpe": sum(env_steps(d) for d in sorted((out / "tune" / "tpe").glob("trial_*"))),
        "pbt": env_steps(out / "tune" / "pbt"),
        "pbt_population": 0,
        "pbt_best_member": env_steps(out / "tune" / "pbt"),
    }
    rows = []
    methods = ["default", "random", "tpe", "pbt", "pbt_population", "pbt_best_member"]
    for method in methods:
        run_dir = out / "test" / method
        if not run_dir.exists():  # pbt_best_member: an earlier pick rule's run, where kept
            continue
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        m = metrics(run_dir)
        final, auc = m["episode_return"][:, -1], np.nanmean(m["episode_return"], axis=1)
        row = {"method": method}
        if method != "pbt_population":
            row.update({k: config["agent"][k] for k in FIELDS})
        for name, x in (("final", final), ("auc", auc)):
            mean, low, high = bootstrap_mean_ci(x)
            row[f"{name}_return"] = f"{float(mean):.1f} [{float(low):.1f}, {float(high):.1f}]"
        # Robust to a seed that never learns: the interquartile mean of the final returns.
        point, low, high = stratified_bootstrap_ci(final[:, None], iqm)
        row["final_iqm"] = f"{float(point):.1f} [{float(low):.1f}, {float(high):.1f}]"
        row["failed_seeds"] = int(np.sum(final <= fail_below))
        if method == "pbt_population":
            best = int(np.nanargmax(m["pbt.fitness"][:, -1]))
            row["best_member_final"] = float(final[best])
        row.update({
            "test_runs": len(final),
            "tuning_env_steps": tuning[method],
            "tune_s": round(wall.get(method, {}).get("tune_s", 0.0), 1),
            "test_s": round(wall.get(method, {}).get("test_s", float("nan")), 1),
        })  # fmt: skip
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "comparison.csv", index=False)
    text = table.to_markdown(index=False, floatfmt=".4g") + "\n"
    (out / "comparison.md").write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(cli(main))
