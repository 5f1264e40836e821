"""Run directories: atomic writes, provenance (versions, commit, devices), metrics tables.

Nothing here is ever half-written: every file goes to a temporary name in the
same directory first and is renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_UMASK = os.umask(0)
os.umask(_UMASK)

PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "gymnax", "hydra-core", "numpy", "pandas")


def atomic_write(path: str | Path, write: Callable[[Any], None], binary: bool = False) -> Path:
    """Calls write(file) on a temporary file beside `path`, then renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yields a temporary directory beside `path`; on success it replaces `path` whole.

    A reader sees the old directory or the new one, never a mix; on error nothing changes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of a compressed .npz holding `arrays` (what `write_npz` writes)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), binary=True)


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    return write_bytes(path, npz_bytes(arrays))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (a checkpoint can outgrow memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_csv(path: str | Path, frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda f: frame.to_csv(f, index=False))


def git_commit(cwd: str | Path | None = None) -> dict[str, Any]:
    """The commit of the checkout and whether it has uncommitted changes (None if no git)."""
    try:
        run = lambda *a: subprocess.run(
            ["git", *a], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def provenance() -> dict[str, Any]:
    """Versions, commit, devices and XLA flags: what a reproduction must match."""
    import jax

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "git": git_commit(Path(__file__).parent),
        "devices": {
            "platform": devices[0].platform,
            "kind": devices[0].device_kind,
            "count": len(devices),
        },
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "argv": sys.argv,
    }


def peak_memory(devices=None) -> dict[str, float | None]:
    """Peak memory of this process so far: host RSS and, where the backend reports it
    (GPU, TPU), the largest peak bytes in use over `devices` (default: all local ones);
    MiB, None where unknown."""
    import resource
    import sys

    import jax

    # Linux reports ru_maxrss in KiB, macOS in bytes.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        2**20 if sys.platform == "darwin" else 2**10
    )
    peaks = [
        (d.memory_stats() or {}).get("peak_bytes_in_use")
        for d in (devices or jax.local_devices())
        if d.platform != "cpu"
    ]
    peaks = [p for p in peaks if p is not None]
    return {"peak_rss_mib": rss, "device_peak_mib": max(peaks) / 2**20 if peaks else None}


def metrics_table(runs: pd.DataFrame, metrics: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Long format: one row per run per logged step, the run's columns repeated beside it.

    runs: one row per run (R rows); metrics: name -> [R, L].
    """
    num_runs, num_logs = next(iter(metrics.values())).shape
    frame = runs.loc[np.repeat(np.arange(num_runs), num_logs)].reset_index(drop=True)
    frame.insert(len(runs.columns), "log", np.tile(np.arange(num_logs), num_runs))
    for name, values in metrics.items():
        frame[name] = np.asarray(values).reshape(-1)
    return frame


def load_metrics(run_dir: str | Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(runs table, metrics name -> [R, L]) of a run directory."""
    run_dir = Path(run_dir)
    runs = pd.read_csv(run_dir / "runs.csv")
    with np.load(run_dir / "metrics.npz") as data:
        metrics = {k: data[k] for k in data.files}
    return runs, metrics
