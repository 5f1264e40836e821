"""Run any experiment config, resume one, or reproduce one from its run directory."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml

from research.config import ExperimentConfig, parse_experiment
from research.errors import InputError, debug, hydra_message, report, writable_dir
from research.pipelines.meta import run_meta
from research.pipelines.train import run_experiment
from research.pipelines.transfer import run_transfer
from research.platform import start_processes, use_compile_cache
from research.runner.execute import first_process_path


def run(config: ExperimentConfig, raw: dict, run_dir: str | Path) -> Path:
    """The pipeline the config asks for: transfer if it has `transfer:`, meta-learning if
    it has `meta:`, else training. A run_dir that cannot be written is an InputError."""
    writable_dir(run_dir, "run_dir", keep=False)  # before anything is built
    check_processes(config)
    use_compile_cache(config.compile_cache)
    if jax.process_count() > 1:
        first = Path(first_process_path(run_dir))  # a collective: every process calls it
        if jax.process_index() > 0:
            return _run_beside_first(config, raw, run_dir, first)
    if config.transfer is not None:
        return run_transfer(config, raw, run_dir)
    if config.meta is not None:
        return run_meta(config, raw, run_dir)
    return run_experiment(config, raw, run_dir)


def check_processes(config: ExperimentConfig) -> int:
    """The number of processes of this program (research.platform.start_processes); an
    InputError where runs.processes says another, or meta seeds do not split over the
    devices of several processes."""
    count = jax.process_count()
    wanted = config.runs.processes
    if wanted is not None and wanted != count:
        raise InputError(
            f"runs.processes: got {wanted}; this program has {count} process(es): start "
            f"{wanted} (RESEARCH_COORDINATOR, RESEARCH_NUM_PROCESSES, RESEARCH_PROCESS_ID, "
            "or srun --ntasks), or set runs.processes=null"
        )
    if count > 1 and config.meta is not None and config.meta.seeds % jax.device_count():
        raise InputError(
            f"meta.seeds: got {config.meta.seeds}; over {count} processes the meta seeds "
            f"must split evenly over the {jax.device_count()} devices: a multiple of "
            f"{jax.device_count()}"
        )
    return count


def _run_beside_first(
    config: ExperimentConfig, raw: dict, run_dir: str | Path, first: Path
) -> Path:
    """A process but the first of a multi-process program: it trains its devices' share
    of every batch with the others, and writes what the pipeline writes into a temporary
    directory, removed at the end; the first process's run directory is the result (its
    chunks are the batch's, research.runner.execute). Returns the first's directory."""
    # Its pipeline's lines would name the temporary directory: the first process reports.
    with (
        tempfile.TemporaryDirectory(prefix="research-process-") as scratch,
        contextlib.redirect_stdout(io.StringIO()),
    ):
        own = Path(scratch) / "run"
        if config.transfer is not None:
            run_transfer(config, raw, own)
        elif config.meta is not None:
            run_meta(config, raw, own)
        else:
            run_experiment(config, raw, own)
    if Path(run_dir).absolute() != first:
        remove_litter(run_dir)  # its own Hydra directory, if Hydra made one
    print(f"process {jax.process_index()}: trained its share of the runs in {first}")
    return first


def saved_config(run_dir: str | Path) -> tuple[ExperimentConfig, dict]:
    """(parsed, raw) config saved in a run directory; an InputError naming the directory
    when it is missing, is no run directory, or holds a config that is not YAML."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run_dir: {str(run_dir)!r} is not a directory; give a run directory")
    path = run_dir / "config.yaml"
    if (run_dir / "checkpoint.json").is_file():
        raise InputError(
            f"run_dir: {str(run_dir)!r} is a checkpoint directory, not a run directory; give "
            "the run directory it was saved in (its parent)"
        )
    if not path.is_file() and (run_dir / "multirun.yaml").is_file():
        jobs = sorted(p.name for p in run_dir.iterdir() if (p / "config.yaml").is_file())
        raise InputError(
            f"run_dir: {str(run_dir)!r} is a multirun's sweep directory, not a run directory; "
            f"give one of its jobs' directories ({', '.join(jobs) or 'none has a config.yaml'})"
        )
    if not path.is_file():
        raise InputError(
            f"run_dir: {str(run_dir)!r} has no config.yaml, so it is not a run directory "
            "(scripts/train.py writes one first)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{path}: not valid YAML ({line})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: got {type(raw).__name__}; must be a mapping of key: value")
    try:
        return parse_experiment(raw), raw
    except InputError as error:  # e.g. a config of another version of this code
        raise type(error)(f"{path}: {error}") from None


def compare_runs(expected: str | Path, actual: str | Path) -> list[str]:
    """Differences between the metrics of two run directories ([] = bit for bit equal):
    every metrics.npz below `expected`, metric by metric. A sub-run reproduced by its
    parent pipeline (a transfer's finetune/) is compared with the same sub-run of `actual`."""
    expected, actual = Path(expected), Path(actual)
    problems = []
    for path in sorted(expected.rglob("metrics.npz")):
        rel = path.relative_to(expected)
        other = actual / rel
        if not other.exists() and (actual / expected.name / rel).exists():
            other = actual / expected.name / rel
        if not other.exists():
            problems.append(f"{rel}: missing from the reproduction")
            continue
        with np.load(path) as a, np.load(other) as b:
            for name in a.files:
                x, y = a[name], b[name] if name in b.files else None
                if y is None or x.shape != y.shape:
                    problems.append(
                        f"{rel}:{name}: shape {x.shape} vs {None if y is None else y.shape}"
                    )
                elif not np.array_equal(x, y, equal_nan=True):
                    diff = np.abs(x.astype(np.float64) - y)
                    problems.append(
                        f"{rel}:{name}: {np.mean(x != y):.1%} of values differ, "
                        f"max |diff| {np.nanmax(diff):.3g}"
                    )
    return problems


def _run_json(run_dir: str | Path) -> dict:
    """A run directory's run.json; {} when it is missing or not a JSON mapping."""
    try:
        info = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def check_metrics(run_dir: str | Path) -> None:
    """Every metrics.npz below `run_dir` readable (reproduce compares against them): an
    InputError naming the first that is not, before anything is trained."""
    for path in sorted(Path(run_dir).rglob("metrics.npz")):
        try:
            with np.load(path) as data:
                for name in data.files:
                    data[name]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            raise InputError(
                f"{path}: unreadable ({type(error).__name__}); the metrics to compare with "
                "must be a whole npz file"
            ) from None


def provenance_differences(expected: str | Path, actual: str | Path) -> list[str]:
    """Versions, device and XLA flags that differ between two run directories' run.json."""
    a, b = (_run_json(d) for d in (expected, actual))
    out = []
    for key in ("versions", "devices", "xla_flags", "python"):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)} vs {b.get(key)}")
    return out


# ------------------------------------------------------------------------- the command line

HYDRA_FILES = {".hydra": {"config.yaml", "hydra.yaml", "overrides.yaml"}, "train.log": None}


def only_hydra_files(run_dir: Path) -> bool:
    """True when `run_dir` holds nothing but what Hydra writes before the task starts."""
    if not run_dir.is_dir():
        return False
    for entry in run_dir.iterdir():
        if entry.name not in HYDRA_FILES:
            return False
        inside = HYDRA_FILES[entry.name]
        if inside is None and not entry.is_file():
            return False
        if inside is not None and not (
            entry.is_dir() and {e.name for e in entry.iterdir()} <= inside
        ):
            return False
    return True


HYDRA_DIR_HINT = "give a writable one with output_root=DIR or hydra.run.dir=DIR"


class _Made:
    """The first directory this process's Hydra run created (for a multirun: its sweep
    directory), recorded by `CheckFirst` so that only what this run made is removed."""

    top: Path | None = None
    sweep: Path | None = None  # a multirun's sweep directory, when this process created it


def remove_litter(run_dir: str | Path) -> bool:
    """Removes `run_dir` (and the parents this run created, when empty) if this process's
    Hydra run created it and it holds nothing but Hydra's files: a run rejected before it
    wrote anything leaves no directory behind. Never touches a directory with results."""
    run_dir = Path(run_dir).absolute()
    top = _Made.top
    if top is None or not (run_dir == top or top in run_dir.parents):
        if _Made.sweep is None or run_dir.parent != _Made.sweep:
            return False
        top = run_dir  # a job of a multirun whose sweep directory this process created
    if not only_hydra_files(run_dir):
        return False
    shutil.rmtree(run_dir)
    for parent in [*run_dir.parents]:
        if parent == top.parent or not (parent == top or top in parent.parents):
            break
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
    return True


def resolved(config) -> dict:
    """`config` (without a hydra node) as a resolved mapping; an interpolation that does not
    resolve is an InputError naming its key."""
    from omegaconf import OmegaConf, open_dict, read_write
    from omegaconf.errors import OmegaConfBaseException

    if "hydra" in config:
        config = copy.deepcopy(config)
        with read_write(config), open_dict(config):
            del config["hydra"]
    try:
        return OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException as error:
        raise InputError(hydra_message(error)) from None


def _stop(error: InputError) -> None:
    """Inside a Hydra callback (which turns exceptions into warnings): one line, exit 2."""
    sys.exit(report(error))


try:
    from hydra.experimental.callback import Callback as _Callback
except ImportError:  # pragma: no cover - Hydra is a dependency
    _Callback = object


class CheckFirst(_Callback):
    """Hydra callback (configs/config.yaml, hydra.callbacks): every job's config is checked,
    and the output directory made, before Hydra creates anything or a job starts. A single
    run is parsed before its directory exists; a multirun parses each job's config (the basic
    sweeper's expansion of the overrides) before the first job runs, and names the job."""

    def on_run_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        if debug():  # main raises the same error with its traceback
            return
        try:
            parse_experiment(resolved(config))
            run_dir = OmegaConf.select(config, "hydra.run.dir")
            _Made.top = writable_dir(run_dir, "hydra.run.dir", HYDRA_DIR_HINT)
        except InputError as error:
            _stop(error)

    def on_multirun_start(self, config, config_name=None, **kwargs) -> None:
        from hydra import compose
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        if debug():
            return
        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        sweeper = OmegaConf.select(config, "hydra.sweeper._target_") or ""
        jobs = [list(overrides)]
        if sweeper.endswith("BasicSweeper"):
            parsed = OverridesParser.create().parse_overrides(overrides)
            jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        try:
            for n, job in enumerate(jobs):
                try:
                    parse_experiment(resolved(compose(config_name, overrides=job)))
                except InputError as error:
                    where = f"job {n} of {len(jobs)} ({' '.join(job)})"
                    raise type(error)(f"{where}: {error}") from None
            sweep_dir = Path(OmegaConf.select(config, "hydra.sweep.dir"))
            if writable_dir(sweep_dir, "hydra.sweep.dir", HYDRA_DIR_HINT) is not None:
                _Made.sweep = sweep_dir.absolute()
        except InputError as error:
            _stop(error)


def hydra_task(cfg, output_dir: str | Path) -> None:
    """scripts/train.py's task: runs the config into `output_dir`; a bad input is one line and
    exit code 2 (and no directory left behind when nothing was written), Ctrl-C one line
    saying what was saved and how to resume (exit code 130)."""
    # Under a launcher that starts the task in a fresh process (submitit's SLURM tasks),
    # the script's own start_processes did not run there: join the program here.
    start_processes()
    try:
        raw = resolved(cfg)
        run(parse_experiment(raw), raw, output_dir)
    except InputError as error:
        if debug():
            raise
        remove_litter(output_dir)
        sys.exit(report(error))
    except KeyboardInterrupt:
        sys.exit(interrupted(output_dir))


def chunk_progress(run_dir: str | Path) -> tuple[int, int] | None:
    """(chunks finished, chunks in all) recorded in run_dir/chunks/manifest.json; None when
    there is no readable manifest (execute repairs a damaged one)."""
    try:
        manifest = json.loads((Path(run_dir) / "chunks" / "manifest.json").read_text())
        total = -(-int(manifest["num_runs"]) // int(manifest["chunk_size"]))
        chunks = Path(run_dir) / "chunks"
        done = sum((chunks / name).is_file() for name in manifest.get("chunks") or {})
        return done, total
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None


def interrupted(run_dir: str | Path) -> int:
    """The one line of a run stopped by Ctrl-C: what is saved and the resume command; 130."""
    run_dir = Path(run_dir)
    resume = f"resume with: python scripts/resume.py {run_dir}"
    progress = chunk_progress(run_dir)
    if remove_litter(run_dir) or not (run_dir / "config.yaml").is_file():
        line = "nothing was saved (interrupted before training began)"
    elif progress is not None:
        line = (
            f"{progress[0]} of {progress[1]} chunk(s) finished and saved in "
            f"{run_dir / 'chunks'}; {resume}"
        )
    elif (run_dir / "chunks").is_dir():
        line = f"no chunk had finished; the config is saved in {run_dir}; {resume}"
    else:
        line = f"the config is saved in {run_dir}, no results; {resume} (it trains from the start)"
    print(f"interrupted: {line}", file=sys.stderr)
    return 130


def finished(run_dir: str | Path) -> bool:
    """A run directory whose pipeline finished: its run.json written and no chunks left."""
    run_dir = Path(run_dir)
    return (run_dir / "run.json").is_file() and not (run_dir / "chunks").exists()


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def config_differences(a: dict, b: dict) -> list[str]:
    """'key: a vs b' for every leaf of two config mappings that differs."""
    fa, fb = _flat(a), _flat(b)
    missing = object()
    show = lambda v: "(absent)" if v is missing else repr(v)
    return [
        f"{key}: {show(fa.get(key, missing))} vs {show(fb.get(key, missing))}"
        for key in sorted(set(fa) | set(fb))
        if fa.get(key, missing) != fb.get(key, missing)
    ]


def _commit(git: dict) -> str:
    """A results.git_commit record as a short hash (+ uncommitted changes)."""
    text = str(git.get("commit") or "unknown")[:10]
    return text + (" (+ uncommitted changes)" if git.get("dirty") else "")


def saved_vs_current(run_dir: str | Path, raw: dict) -> list[str]:
    """What differs between a run directory and what this checkout would run for it, before
    any training: config.yaml edited since the run (vs the copy Hydra saved in .hydra/, or the
    checksum in run.json), the configs/ defaults now giving another config for the run's
    overrides, and the code (git commit, package versions) against run.json's."""
    from omegaconf import OmegaConf

    from research.pipelines.search import compose_config

    run_dir = Path(run_dir)
    out = []
    base = raw  # the config the run trained (Hydra's copy of it, where there is one)
    saved = run_dir / ".hydra" / "config.yaml"
    if saved.is_file():
        try:
            original = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
        except Exception as error:  # an unreadable copy is only a missing comparison
            out.append(f"config: .hydra/config.yaml unreadable ({type(error).__name__})")
        else:
            base = original
            edited = config_differences(original, raw)
            out += [f"config.yaml edited since the run (ran with vs now): {d}" for d in edited]
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        try:
            task = [
                o for o in yaml.safe_load(overrides.read_text()) or [] if not o.startswith("hydra.")
            ]
            now = compose_config(task)
        except Exception as error:
            problem = f"{type(error).__name__}: {error}".splitlines()[0]
            out.append(f"config: the run's overrides no longer compose ({problem})")
        else:
            current = config_differences(base, now)
            out += [f"configs/ changed since (ran with vs now): {d}" for d in current]
    then = _run_json(run_dir)
    recorded = then.get("config_sha256")
    if not saved.is_file() and recorded:  # no Hydra copy (resumed, or made through the API)
        text = (run_dir / "config.yaml").read_text()
        if hashlib.sha256(text.encode()).hexdigest() != recorded:
            out.append("config.yaml edited since the run: its sha256 differs from run.json's")
    if then:
        from research.results import git_commit, provenance

        commit = git_commit(Path(__file__).parent)
        if isinstance(then.get("git"), dict) and then["git"] != commit:
            out.append(f"code: commit {_commit(then['git'])} vs {_commit(commit)}")
        current = provenance()["versions"]
        for name, version in (then.get("versions") or {}).items():
            if current.get(name) != version:
                out.append(f"code: {name} {version} vs {current.get(name)}")
    return out


def resume(run_dir: str | Path) -> int:
    """scripts/resume.py: finishes `run_dir` from its saved config, loading the chunks it
    finished; says what it skips and trains. A finished run is left untouched."""
    run_dir = Path(run_dir)
    config, raw = saved_config(run_dir)
    if finished(run_dir):
        print(
            f"resume: {run_dir} is finished already (run.json written, no chunks left); nothing "
            f"to do. To train it again: python scripts/reproduce.py {run_dir} --out DIR"
        )
        return 0
    progress = chunk_progress(run_dir)
    if progress is None:
        print(f"resume: {run_dir}: no finished chunks recorded; training every run")
    else:
        done, total = progress
        print(
            f"resume: {run_dir}: {done} of {total} chunk(s) finished before, {total - done} to run"
        )
    try:
        run(config, raw, run_dir)
    except KeyboardInterrupt:
        return interrupted(run_dir)
    try:
        info = json.loads((run_dir / "run.json").read_text())
        execution = info["execution"]
        print(
            f"resume: loaded {execution['loaded_chunks']} chunk(s), trained "
            f"{execution['num_chunks'] - execution['loaded_chunks']} "
            f"({info['env_steps_per_second']:.4g} env-steps/s over the trained ones)"
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a transfer or meta run directory: no chunk counts to report
    return 0
