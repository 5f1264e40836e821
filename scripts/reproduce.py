"""Re-run an experiment from its run directory's saved config and compare the metrics.

    python scripts/reproduce.py results/runs/ppo_CartPole-v1/<time> [--out DIR]

Exit status 0 when every metric is equal bit for bit, 1 when something differs (the
differences are listed, with any version, device or XLA-flag differences that explain them).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from research.errors import ArgumentParser, InputError, cli, writable_dir
from research.platform import start_processes, use_devices_of

use_devices_of(sys.argv[1:])  # as many CPU devices as the run recorded, so programs match
start_processes()  # one program over several processes, when a launcher started them

from research.pipelines.run import (  # noqa: E402
    check_metrics,
    compare_runs,
    interrupted,
    provenance_differences,
    run,
    saved_config,
    saved_vs_current,
)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the re-run goes (default: a temporary directory)",
    )
    args = parser.parse_args(argv)
    config, raw = saved_config(args.run_dir)
    check_metrics(args.run_dir)
    if args.out is not None and args.out.is_dir() and any(args.out.iterdir()):
        raise InputError(f"--out: {str(args.out)!r} is not empty; give a new directory")
    if args.out is not None:
        writable_dir(args.out, "--out", keep=False)
    differences = saved_vs_current(args.run_dir, raw)
    if differences:  # said before training, so a mismatch afterwards is not a surprise
        print(
            f"{len(differences)} difference(s) between the run and this checkout (re-running "
            "from config.yaml as it is; the metrics may differ for these reasons):"
        )
        for line in differences:
            print("  " + line)
    else:
        print("the saved config and code match this checkout's; re-running")
    sys.stdout.flush()  # said before the training starts, also into a pipe
    out = args.out or Path(tempfile.mkdtemp(prefix="reproduce_"))
    try:
        run(config, raw, out)
    except KeyboardInterrupt:
        return interrupted(out)
    problems = compare_runs(args.run_dir, out)
    if not problems:
        print(f"reproduced bit for bit: {args.run_dir} == {out}")
        return 0
    print(f"{len(problems)} difference(s) between {args.run_dir} and {out}:")
    for line in problems + provenance_differences(args.run_dir, out):
        print("  " + line)
    return 1


if __name__ == "__main__":
    sys.exit(cli(main))
