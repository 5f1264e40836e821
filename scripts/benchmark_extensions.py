"""What an extension costs: the same batch with and without it, timed in one process
(research/bench/extension_cost.py says how).

    python scripts/benchmark_extensions.py --transfer --runs 64 \
        --variant off= --variant forgetting_every_5=+transfer.forgetting.every=5
"""

from __future__ import annotations

import sys

from research.bench.extension_cost import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
