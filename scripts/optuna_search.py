"""An Optuna study over settings that change array shapes, stored so that it resumes.

    python scripts/optuna_search.py configs/optuna/ppo_cartpole_shapes.yaml [--trials N]

Each trial composes the project's Hydra config with the study's overrides and one choice
per `space` key, runs it as one batched program (seeds x traced hyperparameters), writes a
run directory under results/optuna/<study>/trial_<n>, and reports the mean final return.
"""

from __future__ import annotations

import sys
from pathlib import Path

from research.platform import use_cpu_cores_as_devices

use_cpu_cores_as_devices()

from research.errors import ArgumentParser, InputError, cli  # noqa: E402
from research.pipelines.search import load_study, run_study  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a study file, e.g. configs/optuna/*.yaml")
    parser.add_argument("--trials", type=int, default=None, help="overrides num_trials")
    args = parser.parse_args(argv)
    if args.trials is not None and args.trials < 1:
        raise InputError(f"--trials: got {args.trials}; must be an int with 1 <= x")
    spec = load_study(args.study)
    try:
        study = run_study(spec, num_trials=args.trials)
    except KeyboardInterrupt:
        print(
            f"interrupted: the finished trials are stored in {spec['storage']}; run the same "
            "command again to add the rest",
            file=sys.stderr,
        )
        return 130
    best = study.best_trial
    print(f"{len(study.trials)} trials in {spec['storage']}; best {best.value:.4g}: {best.params}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
