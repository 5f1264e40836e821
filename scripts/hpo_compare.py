"""Hyperparameter search at equal env-step budget: PBT vs random search vs Optuna TPE vs the
default hyperparameters, tuned on tuning seeds and reported on separate test seeds.

    python scripts/hpo_compare.py cartpole_ppo results/hpo/cartpole_ppo
    python scripts/hpo_compare.py cartpole_ppo_finetune results/hpo/cartpole_ppo_finetune

For a setting S, each method's tuning phase runs with the same total env steps
(configs/experiment/hpo_S_random.yaml, configs/optuna/hpo_S_tpe.yaml,
configs/experiment/hpo_S_pbt.yaml); its chosen values of the fields the TPE study searches
(agent.<field>, e.g. lr and ent_coef) are then trained on the test seeds of
configs/experiment/hpo_S.yaml, as are the defaults. PBT is also run as what it is, a
training procedure: one population on the test seeds. Writes <out>/tune/<method>,
<out>/test/<method> (run directories), comparison.csv/md and wall_clock.json (seconds per
phase, measured here).

A setting whose config is a transfer experiment (`transfer:`) tunes the fine-tuning: the
source is pretrained once into <out>/source (its checkpoint in <out>/source/checkpoint,
git-ignored; re-created when missing) and every phase fine-tunes that one checkpoint
(transfer.checkpoint=...), so each method's budget is its fine-tuning env steps. Its test
phase adds `scratch`: the defaults trained from scratch on the target, same budget.
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
from research.pipelines.transfer import scratch_raw_config, source_raw_config  # noqa: E402
from research.platform import use_compile_cache  # noqa: E402

# A final return at or below this: the run never learnt (CartPole: a random policy's ~22;
# Acrobot: -500 is the episode limit, no swing-up at all; the arm: an untrained network's
# -222, scratch's -30 to -40 at 300k steps, so -100: no reaching learnt).
FAIL_BELOW = {"cartpole": 50.0, "acrobot": -499.0, "arm": -100.0}
STUDIES = Path(__file__).resolve().parents[1] / "configs" / "optuna"
# The pretraining runs' base seed (transfer settings): neither a tuning seed (0-31) nor a
# test seed (1000-1031).
SOURCE_SEED = 500


def fail_below(setting: str) -> float:
    """FAIL_BELOW of the setting's env (its name's first part, e.g. cartpole_ppo_finetune)."""
    return FAIL_BELOW[setting.split("_")[0]]


def fields(spec: dict) -> tuple[str, ...]:
    """The agent hyperparameters the setting tunes: the TPE study's agent.<field> keys."""
    return tuple(k.removeprefix("agent.") for k in spec["space"] if k.startswith("agent."))


def runs_dir(run_dir: Path) -> Path:
    """The run directory holding the tuned runs' metrics: a transfer run's finetune/."""
    return run_dir / "finetune" if (run_dir / "finetune").is_dir() else run_dir


def train(overrides: list[str], run_dir: Path) -> tuple[Path, float]:
    """(run dir, wall seconds) of one scripts/train.py-equivalent run."""
    raw = compose_config([*overrides, "progress=false"])
    started = time.perf_counter()
    out = run(parse_experiment(raw), raw, run_dir)
    return out, time.perf_counter() - started


def metrics(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(runs_dir(run_dir) / "metrics.npz") as f:
        return {k: f[k] for k in f.files}


def pick_random(run_dir: Path, names: tuple[str, ...]) -> dict[str, float]:
    """The sampled point with the best mean final return over its tuning seeds (ties: the
    smallest first field, lr; TPE's best trial is likewise the first to reach the best)."""
    runs = pd.read_csv(runs_dir(run_dir) / "runs.csv")
    runs["final"] = metrics(run_dir)["episode_return"][:, -1]
    best = runs.groupby(list(names))["final"].mean().idxmax()
    return dict(zip(names, map(float, best)))


def pick_tpe(spec: dict, names: tuple[str, ...]) -> dict[str, float]:
    """The stored study's best trial's values (the first to reach the best value)."""
    import optuna

    study = optuna.load_study(study_name=spec["study_name"], storage=spec["storage"])
    choices = study.best_trial.user_attrs["choices"]  # config key -> the value, as text
    return {k: float(choices[f"agent.{k}"]) for k in names}


def pick_pbt(run_dir: Path, names: tuple[str, ...]) -> dict[str, float]:
    """The population's median of each value in force during the last segment: what PBT
    converged to. (Its best-ranked member is no choice once returns saturate: ranking ties
    go to the lowest index, a member that may never have been replaced.)"""
    m = metrics(run_dir)
    return {k: float(np.median(m[f"pbt.{k}"][:, -1])) for k in names}


def complete(run_dir: Path) -> bool:
    """A phase's run directory that holds its results (a plain run's metrics, a transfer
    run's transfer_runs.csv, a TPE study's `done`)."""
    return any((run_dir / name).exists() for name in ("metrics.npz", "transfer_runs.csv", "done"))


def pretrain(base: str, run_dir: Path) -> Path:
    """The transfer setting's source runs (its one checkpoint) trained into run_dir, with the
    checkpoint in run_dir/checkpoint; returns that checkpoint directory."""
    raw = source_raw_config(compose_config([base, f"runs.base_seed={SOURCE_SEED}"]))
    raw = {**raw, "save_checkpoint": True, "progress": False}
    run(parse_experiment(raw), raw, run_dir)
    return run_dir / "checkpoint"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setting", help="S of configs/experiment/hpo_S*.yaml, e.g. cartpole_ppo")
    parser.add_argument("out", type=Path, help="output directory, e.g. results/hpo/cartpole_ppo")
    parser.add_argument("--report", action="store_true", help="only rebuild comparison.md")
    parser.add_argument(
        "--pbt-variant",
        default=None,
        metavar="V",
        help="also run configs/experiment/hpo_S_pbt_V.yaml as the PBT arm pbt_V (its tuning, "
        "its pick on the test seeds and its population there), e.g. another interval",
    )
    args = parser.parse_args(argv)
    out, base = args.out, f"experiment=hpo_{args.setting}"
    use_compile_cache("default")  # as scripts/train.py: a program compiled once is loaded after
    spec = load_study(STUDIES / f"hpo_{args.setting}_tpe.yaml")
    names = fields(spec)
    if args.report:
        print(report(out, fail_below(args.setting), names))
        return 0
    wall_file = out / "wall_clock.json"
    wall = json.loads(wall_file.read_text()) if wall_file.exists() else {}

    def timed(method: str, phase: str, run_dir: Path, step) -> Path:
        """Runs `step` unless `run_dir` holds its results already (a rerun after a crash or
        a deleted phase redoes only what is missing), recording its wall clock."""
        if not complete(run_dir):
            started = time.perf_counter()
            step()
            wall.setdefault(method, {})[phase] = time.perf_counter() - started
            write_wall(out, wall)
        return run_dir

    # A transfer setting: the one checkpoint every phase fine-tunes, pretrained once.
    fixed: list[str] = []
    if compose_config([base]).get("transfer") is not None:
        source = out / "source"
        if not (source / "checkpoint" / "checkpoint.json").exists():  # git-ignored: re-made
            started = time.perf_counter()
            pretrain(base, source)
            wall.setdefault("source", {})["pretrain_s"] = time.perf_counter() - started
            write_wall(out, wall)
        fixed = [f"transfer.checkpoint={source / 'checkpoint'}"]

    tune = out / "tune"
    picks: dict[str, dict[str, float]] = {"default": {}}
    wall.setdefault("default", {})["tune_s"] = 0.0
    timed("random", "tune_s", tune / "random",
          lambda: train([f"{base}_random", *fixed], tune / "random"))  # fmt: skip
    picks["random"] = pick_random(tune / "random", names)

    spec = {**spec, "overrides": [*(spec.get("overrides") or []), *fixed]}

    def tpe() -> None:
        run_study(spec, root=tune / "tpe")
        (tune / "tpe" / "done").write_text("")  # rerunning the study would add trials

    timed("tpe", "tune_s", tune / "tpe", tpe)
    picks["tpe"] = pick_tpe(spec, names)

    arms = ["pbt"] + ([f"pbt_{args.pbt_variant}"] if args.pbt_variant else [])
    for arm in arms:  # each PBT config: its tuning population and its pick
        timed(arm, "tune_s", tune / arm,
              lambda arm=arm: train([f"{base}_{arm}", *fixed], tune / arm))  # fmt: skip
        picks[arm] = pick_pbt(tune / arm, names)

    for method, values in picks.items():
        tuned = [f"agent.{k}={v!r}" for k, v in values.items()]
        test = out / "test" / method
        timed(method, "test_s", test,
              lambda tuned=tuned, test=test: train([base, *tuned, *fixed], test))  # fmt: skip
    # PBT as a training procedure: a population on the test seeds, its members' own returns.
    seed = parse_experiment(compose_config([base])).runs.base_seed
    for arm in arms:
        name = "pbt_population" + arm.removeprefix("pbt")
        test = out / "test" / name
        wall.setdefault(name, {})["tune_s"] = 0.0
        timed(name, "test_s", test, lambda arm=arm, test=test: train(
            [f"{base}_{arm}", f"runs.base_seed={seed}", *fixed], test))  # fmt: skip
    if fixed:  # what the checkpoint is worth: the defaults from scratch on the target
        test = out / "test" / "scratch"
        wall.setdefault("scratch", {})["tune_s"] = 0.0
        timed("scratch", "test_s", test, lambda: train_raw(scratch_raw_config(
            compose_config([base, *fixed, "progress=false"])), test))  # fmt: skip
    print(report(out, fail_below(args.setting), names))
    return 0


def train_raw(raw: dict, run_dir: Path) -> Path:
    """One run of a config mapping made here (not composed from overrides)."""
    return run(parse_experiment(raw), raw, run_dir)


def write_wall(out: Path, wall: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "wall_clock.json").write_text(json.dumps(wall, indent=2) + "\n")


def env_steps(run_dir: Path) -> int:
    """The env steps a run directory's batch trained (all its runs; a transfer run's
    fine-tuning runs)."""
    info = json.loads((runs_dir(run_dir) / "run.json").read_text())
    return info["num_runs"] * info["env_steps_per_run"]


def ci_text(x: np.ndarray) -> str:
    mean, low, high = bootstrap_mean_ci(x)
    return f"{float(mean):.1f} [{float(low):.1f}, {float(high):.1f}]"


def report(out: Path, fail_below: float, names: tuple[str, ...] = ("lr", "ent_coef")) -> str:
    """comparison.csv / .md from the run directories under `out` and wall_clock.json: per
    method the tested values, the test runs' final return and mean return over training
    (AUC / num_logs) with 95% bootstrap CIs, the IQM of the final return (stratified
    bootstrap CI), how many test seeds end at or below `fail_below` (never learnt), the
    final return minus the defaults' on the same test seed (mean, 95% bootstrap CI), the
    tuning env steps and the wall clock. Fine-tuning settings add, from the transfer
    pipeline's evaluations (transfer_runs.csv), the greedy final return on the target, how
    many runs end below the checkpoint's own greedy return there, and the forgetting of
    the source task (its greedy return before minus after)."""
    wall = json.loads((out / "wall_clock.json").read_text())
    tuning = {
        "default": 0,
        "random": env_steps(out / "tune" / "random"),
        "tpe": sum(env_steps(d) for d in sorted((out / "tune" / "tpe").glob("trial_*"))),
        "pbt": env_steps(out / "tune" / "pbt"),
        "pbt_population": 0,
        "pbt_best_member": env_steps(out / "tune" / "pbt"),
        "scratch": 0,
    }
    rows = []
    methods = ["default", "random", "tpe", "pbt", "pbt_population", "pbt_best_member", "scratch"]
    # PBT variants (--pbt-variant V): test/pbt_V, its pick, and test/pbt_population_V
    variants = sorted(d.name for d in (out / "test").iterdir() if d.name not in methods)
    for name in variants:  # a population on the test seeds has no tuning phase
        population = name.startswith("pbt_population")
        tuning[name] = 0 if population else env_steps(out / "tune" / name)
    methods += variants
    # Every test phase but the population runs the same test seeds: paired differences.
    default_final = metrics(out / "test" / "default")["episode_return"][:, -1]
    for method in methods:
        run_dir = out / "test" / method
        if not run_dir.exists():  # pbt_best_member: an earlier pick rule's run, where kept
            continue
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        m = metrics(run_dir)
        final, auc = m["episode_return"][:, -1], np.nanmean(m["episode_return"], axis=1)
        row = {"method": method}
        population = method.startswith("pbt_population")
        if not population:
            row.update({k: config["agent"][k] for k in names})
        row["final_return"], row["auc_return"] = ci_text(final), ci_text(auc)
        # Robust to a seed that never learns: the interquartile mean of the final returns.
        point, low, high = stratified_bootstrap_ci(final[:, None], iqm)
        row["final_iqm"] = f"{float(point):.1f} [{float(low):.1f}, {float(high):.1f}]"
        row["failed_seeds"] = int(np.sum(final <= fail_below))
        if method != "default" and not population and len(final) == len(default_final):
            row["final_vs_default"] = ci_text(final - default_final)  # paired by test seed
        if (run_dir / "transfer_runs.csv").exists():
            runs = pd.read_csv(run_dir / "transfer_runs.csv")
            runs = runs[runs["kind"] == "finetune"]
            row["greedy_final"] = ci_text(runs["final_return"].to_numpy())
            below = runs["final_return"] < runs["initial_return"]
            row["below_checkpoint"] = int(below.sum())
            row["forgetting"] = ci_text(runs["forgetting"].to_numpy())
        if population:
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
