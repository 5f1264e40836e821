"""Benchmarks as library code: throughput, compile time and memory of R parallel runs, one
fresh worker process per configuration, and tables (CSV, markdown, plot) that say under what
load each row ran. scripts/benchmark*.py are thin entry points into the modules here:

    program.py         the measured program: the project's config and `prepare`, as train.py
    worker.py          the measured process (`python -m research.bench.worker`): one JSON row
    measure.py         the measuring parent: XLA_FLAGS, CPU affinity, timeout, one row each
    load.py            other processes' load, and which rows it marks busy
    tables.py          <name>.csv / .md / .png, merged by key with --append
    cli.py             the options the benchmark scripts share
    agents.py          scripts/benchmark.py: this project's agents at each R
    peers.py           scripts/benchmark_peers.py: ours against rejax and stable-baselines3
    peer_workers.py    the peers' side, run in the worker
    compile_levels.py  scripts/benchmark_compile_levels.py: LLVM levels timed in one process
    op_counts.py       thunks per loop body of a compiled program, ours against PureJaxRL

It sits at the top beside research.pipelines, which it imports; nothing else in research
imports it. Importing any module here does not import JAX (the functions that need it do):
the measuring parent must not start a backend, since only its workers get the XLA_FLAGS."""

from research.bench.load import BUSY_CORES, is_busy
from research.bench.measure import Session, measure, ours_payload, start_session, steps_for
from research.bench.program import AGENTS, agent_overrides, prepared
from research.bench.tables import COLUMNS, fmt, markdown, write_tables

__all__ = [
    "AGENTS",
    "BUSY_CORES",
    "COLUMNS",
    "Session",
    "agent_overrides",
    "fmt",
    "is_busy",
    "markdown",
    "measure",
    "ours_payload",
    "prepared",
    "start_session",
    "steps_for",
    "write_tables",
]
