"""Finish an interrupted run in its own directory, skipping the chunks it already finished.

    python scripts/resume.py results/runs/<experiment>/<time>

It says how many chunks were finished before and how many it trains; a run that is finished
already is left as it is (nothing is trained or rewritten). Bad input: one line, exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from research.errors import ArgumentParser, cli
from research.platform import start_processes, use_devices_of

use_devices_of(sys.argv[1:])  # as many CPU devices as the run recorded
start_processes()  # one program over several processes, when a launcher started them

from research.pipelines.run import resume  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    return resume(parser.parse_args(argv).run_dir)


if __name__ == "__main__":
    sys.exit(cli(main))
