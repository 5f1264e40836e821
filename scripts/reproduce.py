"""Re-run an experiment from its run directory's saved config and compare the metrics.

    python scripts/reproduce.py results/runs/ppo_CartPole-v1/<time> [--out DIR]

Exit status 0 when every metric is equal bit for bit, 1 when something differs (the
differences are listed, with any version, device or XLA-flag differences that explain them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from research.errors import cli
from research.platform import use_cpu_cores_as_devices

use_cpu_cores_as_devices()  # as scripts/train.py does, so programs match

from research.pipelines.run import (
    compare_runs,
    provenance_differences,
    run,  # noqa: E402
    saved_config,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the re-run goes (default: a temporary directory)",
    )
    args = parser.parse_args()
    config, raw = saved_config(args.run_dir)
    out = args.out or Path(tempfile.mkdtemp(prefix="reproduce_"))
    run(config, raw, out)
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
