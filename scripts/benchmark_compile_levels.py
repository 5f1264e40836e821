"""One batched program compiled at several LLVM optimisation levels, timed in one process.

scripts/benchmark.py starts a fresh process per row, and on a small shared machine the run
time of the same program moves by about 10% between processes: too much to see what a
compiler setting costs. Here one process builds the program once (the project's Hydra config
+ the agent's overrides, as `scripts/benchmark.py` does), compiles its training program once
per level (`xla_backend_optimization_level`, i.e. LLVM -O<level> on XLA:CPU; the init
program keeps the runner's own options, so compile s includes it), runs each executable
once to warm up, then times --reps calls of each, alternating the order every repetition,
on the same inputs. Reported: compile seconds, and env-steps/s at the median and best call.

    python scripts/benchmark_compile_levels.py --agent ppo pqn --runs 64 1024

Writes <out>/<name>.csv and .md (default results/benchmarks/xla_opt_level_paired_<platform>).
"""

from __future__ import annotations

import sys

from research.bench.compile_levels import main
from research.errors import cli

if __name__ == "__main__":
    sys.exit(cli(lambda: main(description=__doc__)))
