"""Finish an interrupted run in its own directory, skipping the chunks it already finished.

python scripts/resume.py results/runs/<experiment>/<time>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from research.errors import cli
from research.platform import use_cpu_cores_as_devices

use_cpu_cores_as_devices()

from research.pipelines.run import run, saved_config  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    config, raw = saved_config(args.run_dir)
    run(config, raw, args.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
