"""Thunks per loop iteration of our PPO program against PureJaxRL's (research.bench.op_counts).

PYTHONPATH=.:<purejaxrl deps> python scripts/hlo_op_counts.py --purejaxrl-dir /tmp/purejaxrl
"""

from __future__ import annotations

import argparse
import sys

from research.bench.op_counts import body_counts, markdown, programs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--purejaxrl-dir", required=True, help="a PureJaxRL checkout")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--total-timesteps", type=int, default=200_000)
    parser.add_argument("--num-logs", type=int, default=10)
    args = parser.parse_args(argv)
    texts = programs(args.purejaxrl_dir, args.runs, args.total_timesteps, args.num_logs)
    print(markdown({side: body_counts(text) for side, text in texts.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
