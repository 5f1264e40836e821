"""What an extension costs: the same batch with and without it, timed in one process
(research/bench/extension_cost.py says how).

    python scripts/benchmark_extensions.py --transfer --runs 64 \
        --variant off= --variant forgetting_every_5=+transfer.forgetting.every=5
"""

from __future__ import annotations

import sys

from research.bench.extension_cost import main
from research.errors import cli

if __name__ == "__main__":
    sys.exit(cli(lambda: main(description=__doc__)))
