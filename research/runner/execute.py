"""Executes a batch of runs as jitted programs: vmapped, sharded, chunked.

Each chunk runs two executables: `init` (fresh, resumed or adopted agent states, env
resets) and `train` (every update, logged segment by segment). They are compiled apart so
that initialisation, which runs once, can be compiled cheaply (`init_compiler_options`).

The runs axis R is sharded over the devices (one mesh axis, "runs"). Runs execute
in chunks of equal size through the same two executables when the caller asks (a
chunk size, or a memory budget checked against XLA's own memory analysis of the
compiled programs) and, when they ask for neither, on CPU, where a chunk of
more than `CPU_RUNS_PER_DEVICE` runs per device trains more slowly per run
(`default_chunk_size`). The last chunk is padded with copies of a run and the
padding is dropped.

What is the same bit for bit (tests/test_runner.py): a run in the same program, whatever
the values of the other runs; and a program run again. A run in a program of another
per-device batch shape (alone, in a chunk of another size, over another device count)
runs a differently compiled program: its first log is the same, later ones drift apart
by float rounding, which learning can amplify (docs/design.md, "Execution").

With a chunk directory (`ChunkStore`), finished chunks survive a kill: each is written
atomically with its sha256 recorded first in the manifest, and on resume a chunk that is
missing, truncated, unreadable or of another checksum is recomputed (a `RepairWarning` names
it), as is a damaged manifest rebuilt from the chunk files that verify. One batch at a time
owns a directory: an exclusive flock on <chunk dir>/.lock, held for the whole `run_batch`
call; a second process resuming the same directory meanwhile stops at once with one line
(InputError) instead of computing the same chunks again.
"""

from __future__ import annotations

import fcntl
import io
import json
import math
import os
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from research import results
from research.errors import InputError
from research.platform import straight_line_threefry
from research.runner import progress as progress_module
from research.runner.extension import population
from research.runner.progress import ProgressBar
from research.runner.train import Trainer


@dataclass(frozen=True)
class ExecutionInfo:
    num_runs: int
    chunk_size: int
    num_chunks: int
    num_devices: int
    compile_s: float
    run_s: float
    program_bytes: int  # XLA's estimate for one chunk (see `program_bytes`)
    loaded_chunks: int = 0  # chunks loaded from chunk_dir (finished before), not computed
    loaded_runs: int = 0  # the runs of those chunks


@dataclass(frozen=True)
class BatchResult:
    agent_states: Any  # pytree of numpy arrays, leaves [R, ...]; None if not kept
    metrics: dict[str, np.ndarray]  # name -> [R, num_logs]
    info: ExecutionInfo


def _init_program(trainer: Trainer):
    """(seeds [C], hparams [C], env_params [C], init_state [C] | None) -> RunnerState [C]."""

    def init(seeds, hparams, env_params, init_state):
        keys = jax.vmap(jax.random.key)(seeds)
        vinit = jax.vmap(trainer.init, in_axes=(0, 0, 0, None if init_state is None else 0))
        return vinit(keys, hparams, env_params, init_state)

    return init


def _train_program(trainer: Trainer):
    """(runner [C], hparams [C], env_params [C], index []) -> (runner [C], hparams [C],
    metrics {name: [C]}): segment `index` of every run.

    One segment per call, the host looping over segments (`Programs`): the program holds
    no host callback (jax's persistent compilation cache refuses programs with one, and
    the progress bar is ticked between calls), and one executable serves any `num_logs`.
    The hyperparameters go through it, so that a method that changes them between
    segments (population-based training) passes them on to the next call."""
    segment = jax.vmap(trainer.segment, in_axes=(0, 0, 0, None))

    def train(runner, hparams, env_params, index):
        runner, metrics = segment(runner, hparams, env_params, index)
        # Run-mixing extensions (PBT) act on the block; none: nothing is traced here.
        return population(trainer.extensions, runner, hparams, metrics, index)

    return train


def init_compiler_options(platform: str) -> dict | None:
    """XLA options of the init program: LLVM -O1 on CPU, the defaults elsewhere.

    Initialisation runs once per chunk but its random draws and Gram-Schmidt loops cost
    seconds of LLVM -O3 time (measured: results/benchmarks/peers_cpu_analysis.md); at -O1
    it compiles in less than half the time and runs as fast. Training keeps -O3.
    """
    return {"xla_backend_optimization_level": 1} if platform == "cpu" else None


class Programs(NamedTuple):
    """A batch's two executables: `init` builds the runners, `train` runs one segment."""

    init: Any
    train: Any
    num_logs: int

    def __call__(self, seeds, hparams, env_params, init_state, tick0=0):
        """(agent states [C], metrics {name: [C, num_logs]}) of training the chunk; after
        each segment, `progress.tick_active(tick0 + segment)`.

        Segment i + 1 is dispatched before waiting for segment i, so the device never
        waits for the host between them."""
        runner = self.init(seeds, hparams, env_params, init_state)
        rows: list[dict] = []
        at = self.train.input_shardings[0][-1]  # the segment index's: whole on every device
        for i in range(self.num_logs):
            index = to_devices(np.int32(i), at)
            runner, hparams, row = self.train(runner, hparams, env_params, index)
            rows.append(row)
            if i:
                _tick_when_done(rows[i - 1], int(tick0) + i - 1)
        _tick_when_done(rows[-1], int(tick0) + self.num_logs - 1)
        rows = to_host(rows)
        return runner.agent_state, {k: np.stack([r[k] for r in rows], 1) for k in rows[0]}


def to_devices(tree: Any, sharding: Any) -> Any:
    """Host arrays, the same in every process, as arrays laid out by `sharding`. Over
    several processes (jax.distributed) each fills only its own devices' shards."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda i: np.asarray(x)[i]),
        tree,
    )


def to_host(tree: Any) -> Any:
    """Arrays as numpy, whole, in every process: over several processes each array's
    shards are gathered from all of them (a collective every process must call)."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def _tick_when_done(row: dict, tick: int) -> None:
    jax.block_until_ready(row)
    progress_module.tick_active(tick)


def _init_jit(trainer: Trainer, platform: str, mesh: Mesh | None = None):
    """The jitted init program, compiled with `init_compiler_options(platform)`, per
    device over `mesh` when given."""
    init = _init_program(trainer)
    init = init if mesh is None else per_device(init, mesh, replicated=0)
    return jax.jit(init, compiler_options=init_compiler_options(platform))


def per_device(program, mesh: Mesh, replicated: int):
    """`program` run as its own program on each device's block of the runs axis
    (`jax.shard_map`); its arguments have the runs axis first but for the last
    `replicated` ones, and its outputs all have it first.

    Each device runs the program of its own block, so a run's results depend on its
    block's size, not on how many blocks there are: on 2, 4 or 8 devices (or processes)
    with the same runs per device, every metric is bit for bit the same (tests/
    test_devices.py). The program holds no collective: runs exchange nothing across
    devices, and whatever mixes runs (population-based training) stays inside a block.
    One device is the exception: XLA compiles a one-partition program without its SPMD
    passes, whose rewrites (fusion, algebraic simplification) round some floats otherwise,
    so a run on one device matches them only for its first logs (measured: 5 of 320
    returns differed, from log 6 of 10, in a 32-run PPO CartPole batch).
    """
    runs, whole = PartitionSpec("runs"), PartitionSpec()

    def wrapped(*args):
        specs = (runs,) * (len(args) - replicated) + (whole,) * replicated
        # check_vma=False: the block is one program, not a map over devices; lax.cond
        # branches (diagnostics every K segments) need not agree on which values vary.
        mapped = jax.shard_map(program, mesh=mesh, in_specs=specs, out_specs=runs, check_vma=False)
        return mapped(*args)

    return wrapped


# jax's lowering platforms -> the platform of their devices (jax.Device.platform).
_DEVICE_PLATFORM = {"cuda": "gpu", "rocm": "gpu"}


def lower(
    trainer: Trainer,
    args: tuple,
    platform: str,
    sharding: Any = None,
    *,
    lowering_platform: str | None = None,
) -> tuple[Any, Any]:
    """(init, train) lowered for `platform` and args = (seeds, hparams, env_params,
    init_state, index), each leaf with leading [C] but the segment index []; `sharding`
    is where the runners live (that of the args' runs axis). None: jit's own placement,
    for arguments on one device only.

    lowering_platform: lower for another platform than the args' devices ("cuda", "rocm",
    "tpu"), with `platform` its device platform ("gpu", "gpu", "tpu"): such programs can
    be inspected (`as_text()`) but not compiled here. This is how a machine without an
    accelerator checks that the accelerator's programs lower (tests/test_platform.py).
    """
    if lowering_platform is not None:
        expected = _DEVICE_PLATFORM.get(lowering_platform, lowering_platform)
        if platform != expected:
            raise ValueError(
                f"lower: lowering_platform {lowering_platform!r} runs on "
                f"{expected!r} devices, but platform is {platform!r}"
            )
    seeds, hparams, env_params, init_state, index = args
    mesh = None if sharding is None else sharding.mesh
    init = _init_jit(trainer, platform, mesh)
    train = _train_program(trainer)
    train = train if mesh is None else per_device(train, mesh, replicated=1)
    # The runners are the train program's to consume: donating them spares a second copy
    # of the agent states (replay buffers included).
    train = jax.jit(train, donate_argnums=0)
    platforms = {} if lowering_platform is None else {"lowering_platforms": (lowering_platform,)}
    with straight_line_threefry():
        init = init.trace(seeds, hparams, env_params, init_state).lower(**platforms)
        runner = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), init.out_info
        )
        return init, train.trace(runner, hparams, env_params, index).lower(**platforms)


def compile_programs(
    lowered: tuple[Any, Any], num_logs: int, train_options: dict | None = None
) -> Programs:
    """Compiles `lower`'s pair: init with its own options, train with train_options;
    the Programs train `num_logs` segments."""
    init, train = lowered
    return Programs(init.compile(), train.compile(train_options), num_logs)


# Compiled executables by (trainer, devices, argument shapes): calling run_batch again with
# new seeds, hyperparameter or env values reuses the programs instead of recompiling.
_COMPILED: dict[Any, Any] = {}
_MAX_COMPILED = 16


def _compiled_program(
    trainer: Trainer, args: tuple, devices: Sequence[jax.Device], sharding: Any
) -> tuple[Programs, float]:
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), args)
    key = (trainer, tuple(d.id for d in devices), jax.tree.structure(args), str(shapes))
    if key not in _COMPILED:
        if len(_COMPILED) >= _MAX_COMPILED:
            _COMPILED.pop(next(iter(_COMPILED)))
        started = time.perf_counter()
        lowered = lower(trainer, args, devices[0].platform, sharding)
        programs = compile_programs(lowered, trainer.num_logs)
        _COMPILED[key] = (programs, time.perf_counter() - started)
        return _COMPILED[key]
    return _COMPILED[key][0], 0.0


def take(tree: Any, index: np.ndarray) -> Any:
    """Every leaf of `tree` (numpy-convertible, runs axis first) at the runs `index`."""
    return jax.tree.map(lambda x: np.asarray(x)[index], tree)


def program_bytes(programs: Programs) -> int:
    """XLA's estimate of a chunk's peak: the larger of the two programs' arguments + outputs
    + temporaries (outputs written into donated arguments counted once), where train's also
    counts init's arguments, which stay alive while it runs (an `init_state` can be large;
    the hyperparameters it counts twice are small)."""
    totals = []
    for compiled in (programs.init, programs.train):
        stats = compiled.memory_analysis()
        if stats is None:
            return 0
        totals.append(
            (
                int(
                    stats.argument_size_in_bytes
                    + stats.output_size_in_bytes
                    - stats.alias_size_in_bytes
                    + stats.temp_size_in_bytes
                ),
                int(stats.argument_size_in_bytes),
            )
        )
    (init_total, init_args), (train_total, _) = totals
    return max(init_total, train_total + init_args)


# Runs per device in one CPU chunk unless the caller chooses. Measured on CartPole, 2-core
# EPYC (results/benchmarks/cpu_chunking_analysis.md): 4096 runs trained in one program at
# 0.68x (PPO) and 0.57x (PQN) of their speed in chunks of 64, and chunks of 256 or 16 were
# slower than 64 for PPO, as the batch outgrows the caches.
CPU_RUNS_PER_DEVICE = 64


def default_chunk_size(platform: str, num_runs: int, num_devices: int) -> int | None:
    """Runs per chunk when the caller sets neither a chunk size nor a memory budget: on
    CPU, as few chunks of at most CPU_RUNS_PER_DEVICE runs per device as hold the runs,
    balanced so that little padding runs (65 runs on one device: two chunks of 33, not
    64 + 64); None (one chunk) on GPU and TPU, where a larger batch
    only fills the device better."""
    if platform != "cpu":
        return None
    num_chunks = math.ceil(num_runs / (CPU_RUNS_PER_DEVICE * num_devices))
    return math.ceil(num_runs / num_chunks)


def group_size(trainer: Trainer, num_runs: int) -> int:
    """Runs that must share one device's block: the least common multiple of the
    extensions' `group_size` (a population of PBT members exchanges state); a ValueError
    if `num_runs` is not a whole number of groups."""
    group = math.lcm(*(e.group_size for e in trainer.extensions), 1)
    if num_runs % group:
        raise ValueError(f"{num_runs} runs do not split into groups of {group} runs")
    return group


def _recorded_devices(devices: list, recorded: int | None, chunk_dir: Path) -> list:
    """The first `recorded` of `devices`: the device count a chunk directory's chunks were
    computed on, so that the rest of the batch runs the same per-device programs (bit for
    bit, see `per_device`). With fewer devices here, all of them, and a warning."""
    if recorded is None or len(devices) >= recorded:
        return devices[: recorded or len(devices)]
    warnings.warn(
        f"{chunk_dir}: its chunks ran on {recorded} devices, this process has "
        f"{len(devices)}; the remaining chunks run on {len(devices)} and can differ from "
        "an unbroken run in float rounding (docs/design.md, 'What is bit-for-bit')",
        stacklevel=3,
    )
    return devices


def run_batch(
    trainer: Trainer,
    seeds: np.ndarray,
    hparams: Any,
    env_params: Any,
    init_state: Any = None,
    *,
    devices: Sequence[jax.Device] | None = None,
    chunk_size: int | None = None,
    memory_budget_bytes: float | None = None,
    progress: bool = False,
    desc: str = "train",
    chunk_dir: str | Path | None = None,
    fingerprint: str = "",
    keep_states: bool = True,
) -> BatchResult:
    """Trains R runs; every leaf of hparams / env_params / init_state has leading [R].

    seeds: [R] integers; a run's PRNG key is jax.random.key(seed).
    chunk_size: at most this many runs per chunk. memory_budget_bytes: shrinks the chunk
    until XLA's estimate of its programs fits. Neither: `default_chunk_size` (on CPU, at
    most 64 runs per device; elsewhere one chunk).
    chunk_dir: each finished chunk is written there atomically, and chunks already there
    (from an interrupted call with the same `fingerprint` and chunking) are loaded instead
    of run again: a killed sweep resumes and loses nothing. Damaged chunks are recomputed
    (a RepairWarning names each), and the directory is locked for the call: a second call
    on it meanwhile stops with an InputError (`ChunkStore`).
    keep_states: False drops final agent states (metrics only), sparing host memory and disk.
    """
    seeds = np.asarray(seeds, np.uint32)
    num_runs = len(seeds)
    group = group_size(trainer, num_runs)
    devices = list(devices or jax.devices())
    chunk_dir = first_process_path(chunk_dir)
    recorded = None if chunk_dir is None else ChunkStore.recorded(Path(chunk_dir))
    if recorded is not None and chunk_size is None:
        chunk_size, memory_budget_bytes = recorded["chunk_size"], None
        devices = _recorded_devices(devices, recorded.get("num_devices"), Path(chunk_dir))
    # Never more devices than groups of runs in a chunk: padding a device is pure waste.
    devices = devices[: max(1, min(chunk_size or num_runs, num_runs) // group)]
    num_dev = len(devices)
    if chunk_size is None and memory_budget_bytes is None:
        chunk_size = default_chunk_size(devices[0].platform, num_runs, num_dev)
    mesh = Mesh(np.array(devices), ("runs",), axis_types=(AxisType.Auto,))
    sharded = NamedSharding(mesh, PartitionSpec("runs"))
    replicated = NamedSharding(mesh, PartitionSpec())

    unit = num_dev * group  # a chunk is whole groups on every device

    def round_up(n: int) -> int:
        return max(unit, math.ceil(n / unit) * unit)

    chunk = round_up(min(chunk_size or num_runs, num_runs))
    steps_per_run = trainer.steps_per_segment * trainer.num_logs

    def chunk_args(start: int, size: int):
        index = np.minimum(np.arange(start, start + size), num_runs - 1)  # pad with the last run
        host = (
            seeds[index],
            take(hparams, index),
            take(env_params, index),
            None if init_state is None else take(init_state, index),
        )
        return to_devices(host, sharded) + (to_devices(np.int32(0), replicated),)

    def compile_for(size: int):
        return _compiled_program(trainer, chunk_args(0, size), devices, sharded)

    compiled, compile_s = compile_for(chunk)
    used = program_bytes(compiled)
    while memory_budget_bytes is not None and used > memory_budget_bytes and chunk > unit:
        # Memory is nearly linear in the chunk; shrink proportionally, by at least one step.
        smaller = int(chunk * memory_budget_bytes / used) // unit * unit
        chunk = max(unit, min(smaller, chunk - unit))
        compiled, extra_s = compile_for(chunk)
        compile_s += extra_s
        used = program_bytes(compiled)
    if memory_budget_bytes is not None and used > memory_budget_bytes:
        warnings.warn(
            f"one run per device needs {used / 2**20:.1f} MiB, over the memory "
            f"budget of {memory_budget_bytes / 2**20:.1f} MiB; running anyway",
            stacklevel=2,
        )
    bar = ProgressBar(
        num_runs * steps_per_run,
        trainer.steps_per_segment * chunk,
        desc=desc,
        enabled=progress and jax.process_index() == 0,
    )

    num_chunks = math.ceil(num_runs / chunk)
    identity = {
        "fingerprint": fingerprint,
        "num_runs": num_runs,
        "chunk_size": chunk,
        "keep_states": keep_states,
    }
    store = None if chunk_dir is None else _open_store(Path(chunk_dir), identity, num_dev)
    names = set(compiled.train.out_info[2])  # the metrics the train program logs
    states, metrics = [], []
    loaded = [0, 0]  # chunks, runs
    started = time.perf_counter()
    try:
        progress_module.ACTIVE = bar
        for c in range(num_chunks):
            keep = min(chunk, num_runs - c * chunk)
            done = None if store is None else store.load(c, names)
            if done is None:
                args = chunk_args(c * chunk, chunk)
                out_states, out_metrics = compiled(*args[:-1], c * trainer.num_logs)
                out_states = to_host(out_states) if keep_states else None
                done = (
                    {k: v[:keep] for k, v in out_metrics.items()},
                    jax.tree.map(lambda x, keep=keep: x[:keep], out_states),
                )
                if store is not None:
                    store.save(c, *done)
            else:
                bar.tick((c + 1) * trainer.num_logs - 1)  # a loaded chunk counts as done
                loaded = [loaded[0] + 1, loaded[1] + keep]
            metrics.append(done[0])
            states.append(done[1])
    finally:
        progress_module.ACTIVE = None
        bar.close()
        if store is not None:
            store.close()
    run_s = time.perf_counter() - started
    cat = lambda *xs: np.concatenate(xs, axis=0)
    if keep_states and store is not None:  # chunks loaded from disk are flat: rebuild trees
        treedef = jax.tree.structure(
            jax.eval_shape(_init_program(trainer), *chunk_args(0, chunk)[:-1]).agent_state
        )
        states = [s if not isinstance(s, list) else jax.tree.unflatten(treedef, s) for s in states]
    return BatchResult(
        agent_states=jax.tree.map(cat, *states) if keep_states else None,
        metrics={k: cat(*(m[k] for m in metrics)) for k in metrics[0]},
        info=ExecutionInfo(num_runs, chunk, num_chunks, num_dev, compile_s, run_s, used, *loaded),
    )


def first_process_path(path: str | Path | None) -> str | Path | None:
    """`path` as the first process gives it: over several processes, only that one's run
    directory holds the chunks (the others write theirs elsewhere, research.pipelines.run)."""
    if jax.process_count() == 1 or path is None:
        return path
    from jax.experimental import multihost_utils

    text = np.zeros(4096, np.uint8)
    raw = str(Path(path).absolute()).encode()
    text[: len(raw)] = np.frombuffer(raw, np.uint8)
    text = np.asarray(multihost_utils.broadcast_one_to_all(text))
    return Path(bytes(text[text > 0]).decode())


def _open_store(path: Path, identity: dict, num_devices: int) -> ChunkStore:
    """The batch's ChunkStore. Over several processes, the first opens it (lock, repair)
    and writes every chunk; the others then read the same files, so every process loads
    the same chunks and computes the others together with it."""
    if jax.process_count() == 1:
        return ChunkStore(path, identity, num_devices=num_devices)
    from jax.experimental import multihost_utils

    first = jax.process_index() == 0
    store = ChunkStore(path, identity, num_devices=num_devices) if first else None
    multihost_utils.sync_global_devices("chunk store opened")
    if not first:
        store = ChunkStore(path, identity, num_devices=num_devices, readonly=True)
    multihost_utils.sync_global_devices("chunk store read")  # before the first one writes
    return store


class RepairWarning(UserWarning):
    """Damaged chunk state was found and is being repaired (recomputed or rebuilt)."""


def _warn(message: str) -> None:
    # The message names the file; which line of the store noticed matters little.
    warnings.warn(message, RepairWarning, stacklevel=2)


_CHUNK_NAME = re.compile(r"chunk_(\d{5})\.npz")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Damaged(Exception):
    """A chunk file that cannot be used; the message says why."""


def _claim(lock: Path) -> int:
    """An exclusive flock on `lock` (created if need be), as an open descriptor; an
    InputError naming the holder's pid if another open file already holds it."""
    for attempt in range(10):
        # The directory can vanish between mkdir and open: a run that just finished
        # deletes its chunks (pipelines.train.run_experiment). Make it again and retry.
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            break
        except FileNotFoundError:
            if attempt == 9:
                raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise InputError(
            f"{lock.parent}: another process (pid {holder}) is running this batch and holds "
            f"{lock.name}; let it finish (if it has died, resume again: its lock died with it)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class ChunkStore:
    """Finished chunks of one batch: chunk_<c>.npz files beside manifest.json in `path`.

    manifest.json holds the batch's identity (`identity`: fingerprint of the config, runs,
    chunk size, keep_states), which refuses chunks of another program, and under "chunks"
    the sha256 of each chunk file's bytes, {"chunk_00003.npz": hex}. Each chunk file also
    holds its own identity and index (key "chunk", JSON text) beside metric/<name> [C, L]
    and state/<i> (leaf i of the agent states, [C, ...]), so that a lost manifest can be
    rebuilt from the chunks.

    A kill leaves either a whole chunk with its checksum recorded, or none: a chunk's
    checksum goes into the manifest before its file is written, each atomically (a kill in
    between leaves a checksum without a file, which counts as no chunk).

    Repair, never a traceback (each with a RepairWarning naming the file): a chunk whose
    file is missing though its checksum is recorded, unreadable, or of another checksum is
    recomputed, by the same program, so the batch ends bit for bit as an unbroken one. A
    manifest that is not JSON or has other fields is rebuilt from the chunk files whose own
    identity matches and that read back whole (zip CRC-32); if none does, the batch restarts
    from scratch. A manifest with the right fields but another program's values is
    refused (InputError): that is a wrong directory, not damage. A manifest written before
    checksums (identity only) is upgraded: its chunk files are used if they read back.

    Concurrency: the store holds an exclusive `fcntl.flock` on path/.lock from creation to
    `close()` (run_batch holds it for the whole batch). A second store on the same
    directory, in another process or this one, stops at once with an InputError naming the
    holder's pid, rather than waiting to redo a batch the first is finishing. The lock dies
    with its process, so a killed run never leaves the directory locked. Correctness does
    not rest on the lock alone: every file is written atomically and every chunk is
    verified when loaded, so even a store that slipped past it (its directory deleted and
    made again under it) only redoes work; the lock keeps two writers from losing each
    other's manifest entries and from computing the same chunks twice.
    """

    def __init__(
        self, path: Path, identity: dict, num_devices: int | None = None, readonly: bool = False
    ):
        self.path = Path(path)
        self.identity = dict(identity)
        self.num_devices = num_devices  # recorded beside the identity, not part of it
        # readonly: a second process of a multi-process batch reads what the first writes:
        # no lock, no file written, no warning repeated.
        self.readonly = readonly
        self._rejected: set[int] = set()  # chunk files found bad while rebuilding (warned)
        self.sums: dict[int, str] = {}  # chunk index -> sha256 of its file
        self._lock: int | None = None if readonly else _claim(self.path / ".lock")
        try:
            self._open_manifest()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Releases the directory's lock (closing its descriptor drops the flock)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    @property
    def _manifest(self) -> Path:
        return self.path / "manifest.json"

    def _file(self, c: int) -> Path:
        return self.path / f"chunk_{c:05d}.npz"

    def _warn(self, message: str) -> None:
        if not self.readonly:
            _warn(message)

    def _write_manifest(self) -> None:
        if self.readonly:
            return
        chunks = {self._file(c).name: s for c, s in sorted(self.sums.items())}
        devices = {} if self.num_devices is None else {"num_devices": self.num_devices}
        results.write_json(self._manifest, {**self.identity, **devices, "chunks": chunks})

    @staticmethod
    def recorded(path: Path) -> dict | None:
        """The chunking a chunk directory's manifest records ({"chunk_size", and
        "num_devices" where written}), or None if there is none that reads."""
        try:
            old = json.loads((Path(path) / "manifest.json").read_text())
            chunk = old["chunk_size"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            return None
        if not isinstance(chunk, int) or chunk < 1:
            return None
        devices = old.get("num_devices")
        ok = isinstance(devices, int) and devices >= 1
        return {"chunk_size": chunk, **({"num_devices": devices} if ok else {})}

    def _open_manifest(self) -> None:
        """Sets `sums` from the manifest or, if it is damaged, rebuilds both."""
        try:
            old = json.loads(self._manifest.read_text())
        except FileNotFoundError:
            if not any(self._chunk_files()):  # a fresh batch
                self._write_manifest()
                return
            problem = "is missing"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            problem = f"is not valid JSON ({type(error).__name__})"
        else:
            problem = self._check_manifest(old)
            if problem is None:
                if "chunks" not in old:  # written before checksums: adopt its chunk files
                    self.sums = self._verify_files(require_identity=False)
                    self._write_manifest()
                    return
                self.sums = {int(_CHUNK_NAME.fullmatch(k)[1]): v for k, v in old["chunks"].items()}
                return
        self.sums = self._verify_files(require_identity=True)
        self._write_manifest()
        if self.sums:
            self._warn(
                f"{self._manifest} {problem}; rebuilt it from the {len(self.sums)} chunk "
                "file(s) that verify, the others are recomputed"
            )
        else:
            self._warn(
                f"{self._manifest} {problem} and no chunk file verifies against this "
                "batch; the batch restarts from scratch"
            )

    def _check_manifest(self, old: Any) -> str | None:
        """Why `old` is no manifest of a batch (None if it is one); an InputError if it is
        another program's."""
        if not isinstance(old, dict):
            return f"holds a JSON {type(old).__name__}, not a mapping"
        if not self.identity.keys() <= old.keys():
            return f"lacks {sorted(self.identity.keys() - old.keys())}"
        mine = {k: old[k] for k in self.identity}
        if mine != self.identity:
            raise InputError(
                f"{self.path} holds chunks of another program ({mine}); this one is "
                f"{self.identity}. Use a fresh run directory or delete them."
            )
        extra = old.keys() - self.identity.keys() - {"chunks", "num_devices"}
        if extra:
            return f"has unknown fields {sorted(extra)}"
        chunks = old.get("chunks", {})
        if not isinstance(chunks, dict) or not all(
            isinstance(k, str)
            and _CHUNK_NAME.fullmatch(k)
            and isinstance(v, str)
            and _SHA256.fullmatch(v)
            for k, v in chunks.items()
        ):
            return 'has a "chunks" field that is not {"chunk_<c>.npz": sha256}'
        return None

    def _chunk_files(self) -> Iterator[tuple[int, Path]]:
        for f in sorted(self.path.glob("chunk_*.npz")):
            if match := _CHUNK_NAME.fullmatch(f.name):
                yield int(match[1]), f

    def _verify_files(self, require_identity: bool) -> dict[int, str]:
        """sha256 of every chunk file here that reads back whole (and, if require_identity,
        names this batch and its own index); each other one is warned about."""
        sums = {}
        for c, f in self._chunk_files():
            try:
                data = f.read_bytes()
                self._parse(data, c, require_identity)
            except (OSError, _Damaged) as error:
                self._warn(f"{f}: {error}; it is recomputed")
                self._rejected.add(c)
                continue
            sums[c] = results.sha256_bytes(data)
        return sums

    def _parse(self, data: bytes, c: int, require_identity: bool) -> tuple[dict, list | None]:
        """(metrics, flat state leaves or None) of chunk c's file bytes; _Damaged if they do
        not read back whole or name another batch or chunk."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}  # reading every member checks its CRC
        except Exception as error:
            # Damaged bytes surface as many types (BadZipFile, zlib.error, EOFError,
            # ValueError, SyntaxError from the .npy header...): any of them means unreadable.
            raise _Damaged(f"is unreadable ({type(error).__name__}: {error})") from None
        if "chunk" in arrays:
            try:
                own = json.loads(str(arrays["chunk"][()]))
            except (json.JSONDecodeError, TypeError, ValueError):
                own = None
            if own != {**self.identity, "chunk": c}:
                raise _Damaged("belongs to another batch or chunk")
        elif require_identity:
            raise _Damaged("does not name its batch, so it cannot be verified")
        metrics = {k[7:]: v for k, v in arrays.items() if k.startswith("metric/")}
        if not metrics:
            raise _Damaged("holds no metrics")
        leaves = [arrays[k] for k in sorted(arrays) if k.startswith("state/")]
        return metrics, leaves or None

    def save(self, c: int, metrics: dict, states: Any) -> None:
        """Writes chunk c: metrics name -> [C, L], states a pytree of leaves [C, ...] or None."""
        if self.readonly:
            return
        arrays = {f"metric/{k}": v for k, v in metrics.items()}
        if states is not None:
            arrays.update({f"state/{i:04d}": x for i, x in enumerate(jax.tree.leaves(states))})
        arrays["chunk"] = np.array(json.dumps({**self.identity, "chunk": c}, sort_keys=True))
        data = results.npz_bytes(arrays)
        # Checksum first, file second: a kill in between leaves a checksum without a file
        # (no chunk), never a file that cannot be verified.
        self.sums[c] = results.sha256_bytes(data)
        self._write_manifest()
        results.write_bytes(self._file(c), data)
        self._rejected.discard(c)

    def load(self, c: int, names: set[str] | None = None) -> tuple[dict, Any] | None:
        """(metrics, flat list of state leaves or None), or None if chunk c is to be run:
        not done yet, damaged, or (`names`: the metrics this program logs) written by a
        program that logged other metrics (another version of the code); each warned."""
        f, expected = self._file(c), self.sums.get(c)
        if expected is None:
            if f.exists() and c not in self._rejected:
                self._warn(f"{f}: no checksum recorded in {self._manifest.name}; it is recomputed")
            return None
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            self._warn(f"{f}: missing, though {self._manifest.name} records it; it is recomputed")
            return None
        except OSError as error:
            self._warn(f"{f}: unreadable ({error}); it is recomputed")
            return None
        if results.sha256_bytes(data) != expected:
            self._warn(
                f"{f}: its sha256 differs from the one in {self._manifest.name} (truncated or "
                "changed since written); it is recomputed"
            )
            return None
        try:
            done = self._parse(data, c, require_identity=False)
        except _Damaged as error:
            self._warn(f"{f}: {error}; it is recomputed")
            return None
        if names is not None and set(done[0]) != names:
            missing, extra = sorted(names - set(done[0])), sorted(set(done[0]) - names)
            self._warn(
                f"{f}: written by another version of the code (metrics missing {missing}, "
                f"extra {extra}); it is recomputed"
            )
            return None
        return done


def initial_agent_states(trainer: Trainer, runs: Any, init_state: Any = None) -> Any:
    """The agent states R runs start training from (fresh, resumed or adopted), leaves [R].

    runs: anything with seeds [R], hparams and env_params (e.g. a RunsAxis).
    """
    init = _init_jit(trainer, jax.default_backend())
    with straight_line_threefry():
        return init(
            np.asarray(runs.seeds, np.uint32), runs.hparams, runs.env_params, init_state
        ).agent_state
