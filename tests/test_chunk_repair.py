"""Damaged run state is repaired, not fatal, and concurrent resumes are safe (issue 25, 2 and 4).

A chunk file that is missing, truncated, unreadable or of another checksum is recomputed with
a warning naming it; a damaged manifest is rebuilt from the chunk files that verify (or the
batch restarts from scratch); either way the metrics are bit for bit the unbroken batch's. A
damaged checkpoint, which cannot be recomputed, is one clear InputError naming its file. A
chunk directory is owned by one batch at a time, so two resumes of one run directory at once
leave it complete and correct.

The batch: 4 PPO runs of 2048 steps, one run per chunk (4 chunks, on one device in this
process and in the scripts alike).
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from research.config import parse_experiment
from research.errors import InputError
from research.pipelines.train import execute, load_checkpoint, prepare, write_config
from research.results import load_metrics
from research.runner.execute import ChunkStore, RepairWarning
from tests.conftest import compose_raw, train
from tests.test_reproduce import TINY as RESUME_TINY

ROOT = Path(__file__).resolve().parents[1]
TINY = (*RESUME_TINY, "runs.max_runs_per_chunk=1")  # tests/test_reproduce's batch, one run a chunk
CHUNKS = [f"chunk_{c:05d}.npz" for c in range(4)]
TIMEOUT = 300  # seconds, for every process a test starts


@pytest.fixture(scope="module")
def prepared():
    return prepare(parse_experiment(compose_raw(*TINY)))


@pytest.fixture(scope="module")
def unbroken(prepared):
    """Metrics name -> [4, 4] of the batch run whole, without a chunk directory."""
    return execute(prepared, keep_states=False).metrics


@pytest.fixture(scope="module")
def pristine(prepared, tmp_path_factory):
    """A chunk directory holding all 4 chunks of the batch (fingerprint "a")."""
    path = tmp_path_factory.mktemp("pristine") / "chunks"
    execute(prepared, chunk_dir=path, fingerprint="a", keep_states=False)
    assert sorted(p.name for p in path.glob("chunk_*.npz")) == CHUNKS
    return path


def _copy(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "chunks"))


def _stamps(chunks: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in chunks.glob("chunk_*.npz")}


def _resume(prepared, chunks: Path, fingerprint: str = "a"):
    """(metrics, messages of the RepairWarnings) of the batch resumed from `chunks`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = execute(prepared, chunk_dir=chunks, fingerprint=fingerprint, keep_states=False)
    return result.metrics, [str(w.message) for w in caught if w.category is RepairWarning]


def _assert_equal(metrics, expected):
    assert metrics.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(metrics[k], expected[k], err_msg=k)


def _truncate(f: Path):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_a_byte(f: Path):
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


def _tamper_values(f: Path):
    """A valid npz, its identity key kept: only the checksum tells it from the original."""
    with np.load(f) as data:
        arrays = dict(data)
    arrays["metric/episode_return"] = arrays["metric/episode_return"] + 1.0
    np.savez_compressed(f, **arrays)


CHUNK_DAMAGE = {
    "truncated": _truncate,
    "empty": lambda f: f.write_bytes(b""),
    "one byte flipped": _flip_a_byte,
    "other values, a valid file": _tamper_values,
    "not a zip": lambda f: f.write_bytes(b"PK\x03\x04" + os.urandom(200)),
}


@pytest.mark.parametrize("damage", list(CHUNK_DAMAGE))
def test_a_damaged_chunk_is_recomputed_with_a_warning_naming_it(
    prepared, unbroken, pristine, tmp_path, damage
):
    chunks = _copy(pristine, tmp_path)
    CHUNK_DAMAGE[damage](chunks / "chunk_00002.npz")
    before = _stamps(chunks)
    metrics, warned = _resume(prepared, chunks)
    assert len(warned) == 1 and "chunk_00002.npz: its sha256 differs" in warned[0], warned
    _assert_equal(metrics, unbroken)  # the damaged values were not used
    after = _stamps(chunks)
    assert after.pop("chunk_00002.npz") != before.pop("chunk_00002.npz")  # written again
    assert after == before  # the sound chunks were loaded, not recomputed
    metrics, warned = _resume(prepared, chunks)  # repaired for good: loads cleanly
    assert warned == []
    _assert_equal(metrics, unbroken)


def test_a_recorded_chunk_gone_missing_is_recomputed_with_a_warning(
    prepared, unbroken, pristine, tmp_path
):
    chunks = _copy(pristine, tmp_path)
    (chunks / "chunk_00001.npz").unlink()
    metrics, warned = _resume(prepared, chunks)
    assert len(warned) == 1 and "chunk_00001.npz: missing, though manifest.json" in warned[0]
    _assert_equal(metrics, unbroken)
    assert sorted(_stamps(chunks)) == CHUNKS


def _interrupt_before(chunks: Path, c: int):
    """Leaves `chunks` as a batch killed before chunk c was begun: chunks 0..c-1 only."""
    manifest = json.loads((chunks / "manifest.json").read_text())
    for name in CHUNKS[c:]:
        (chunks / name).unlink()
        del manifest["chunks"][name]
    (chunks / "manifest.json").write_text(json.dumps(manifest))


def test_a_chunk_file_without_a_recorded_checksum_is_recomputed(
    prepared, unbroken, pristine, tmp_path
):
    chunks = _copy(pristine, tmp_path)
    manifest = json.loads((chunks / "manifest.json").read_text())
    del manifest["chunks"]["chunk_00000.npz"]
    (chunks / "manifest.json").write_text(json.dumps(manifest))
    _tamper_values(chunks / "chunk_00000.npz")  # so that loading it unverified would show
    metrics, warned = _resume(prepared, chunks)
    assert len(warned) == 1 and "chunk_00000.npz: no checksum recorded" in warned[0], warned
    _assert_equal(metrics, unbroken)


def _identity(chunks: Path) -> dict:
    manifest = json.loads((chunks / "manifest.json").read_text())
    manifest.pop("chunks")
    return manifest


MANIFEST_DAMAGE = {
    "is not valid JSON": lambda m: m.write_text('{"fingerprint": "a", "num_ru'),
    "is not valid JSON (UnicodeDecodeError)": lambda m: m.write_bytes(b"\xff\xfe\x00garbage"),
    "holds a JSON list": lambda m: m.write_text("[1, 2]"),
    "lacks ['chunk_size', 'keep_states', 'num_runs']": lambda m: m.write_text(
        '{"fingerprint": "a"}'
    ),
    'has a "chunks" field that is not': lambda m: m.write_text(
        json.dumps({**_identity(m.parent), "chunks": ["chunk_00000.npz"]})
    ),
    "has unknown fields ['extra']": lambda m: m.write_text(
        json.dumps({**json.loads(m.read_text()), "extra": 1})
    ),
    "is missing": lambda m: m.unlink(),
}


@pytest.mark.parametrize("problem", list(MANIFEST_DAMAGE))
def test_a_damaged_manifest_is_rebuilt_from_the_chunks(
    prepared, unbroken, pristine, tmp_path, problem
):
    chunks = _copy(pristine, tmp_path)
    MANIFEST_DAMAGE[problem](chunks / "manifest.json")
    before = _stamps(chunks)
    metrics, warned = _resume(prepared, chunks)
    assert len(warned) == 1, warned
    assert f"manifest.json {problem}" in warned[0]
    assert "rebuilt it from the 4 chunk file(s) that verify" in warned[0]
    _assert_equal(metrics, unbroken)
    assert _stamps(chunks) == before  # every chunk verified and was loaded
    rebuilt = json.loads((chunks / "manifest.json").read_text())
    assert sorted(rebuilt["chunks"]) == CHUNKS
    assert _resume(prepared, chunks)[1] == []


def test_a_damaged_manifest_and_a_truncated_chunk_of_an_interrupted_batch(
    prepared, unbroken, pristine, tmp_path
):
    chunks = _copy(pristine, tmp_path)
    (chunks / "chunk_00003.npz").unlink()  # interrupted before its last chunk
    _truncate(chunks / "chunk_00001.npz")
    (chunks / "manifest.json").write_text("{not json")
    before = _stamps(chunks)
    metrics, warned = _resume(prepared, chunks)
    assert len(warned) == 2, warned
    assert "chunk_00001.npz: is unreadable (BadZipFile" in warned[0]
    assert "rebuilt it from the 2 chunk file(s) that verify" in warned[1]
    _assert_equal(metrics, unbroken)
    after = _stamps(chunks)
    assert {k: after[k] for k in ("chunk_00000.npz", "chunk_00002.npz")} == {
        k: before[k] for k in ("chunk_00000.npz", "chunk_00002.npz")
    }
    assert sorted(after) == CHUNKS


def test_with_nothing_to_verify_the_batch_restarts_from_scratch(
    prepared, unbroken, pristine, tmp_path
):
    chunks = _copy(pristine, tmp_path)
    (chunks / "manifest.json").write_text("")
    for name in CHUNKS:
        _truncate(chunks / name)
    metrics, warned = _resume(prepared, chunks)
    assert len(warned) == 5 and all("is unreadable" in w for w in warned[:4]), warned
    assert (
        "no chunk file verifies against this batch; the batch restarts from scratch" in (warned[4])
    )
    _assert_equal(metrics, unbroken)
    assert _resume(prepared, chunks)[1] == []


def test_chunks_of_another_batch_are_not_adopted_by_a_rebuilt_manifest(
    prepared, unbroken, pristine, tmp_path
):
    chunks = _copy(pristine, tmp_path)  # fingerprint "a"
    (chunks / "manifest.json").unlink()
    before = _stamps(chunks)
    metrics, warned = _resume(prepared, chunks, fingerprint="b")
    assert sum("belongs to another batch or chunk" in w for w in warned) == 4, warned
    assert "the batch restarts from scratch" in warned[-1]
    _assert_equal(metrics, unbroken)
    after = _stamps(chunks)
    assert all(after[k] != before[k] for k in CHUNKS)  # all four computed again
    # A sound manifest of another program is still refused, with one line.
    with pytest.raises(InputError, match="holds chunks of another program"):
        _resume(prepared, chunks, fingerprint="a")


def test_a_chunk_directory_from_before_checksums_still_resumes(
    prepared, unbroken, pristine, tmp_path
):
    chunks = _copy(pristine, tmp_path)
    identity = _identity(chunks)
    (chunks / "manifest.json").write_text(json.dumps(identity))  # identity only, as before
    for name in CHUNKS:  # chunk files without their own identity, as before
        with np.load(chunks / name) as data:
            arrays = {k: data[k] for k in data.files if k != "chunk"}
        np.savez_compressed(chunks / name, **arrays)
    _truncate(chunks / "chunk_00003.npz")
    before = _stamps(chunks)
    metrics, warned = _resume(prepared, chunks)
    assert len(warned) == 1 and "chunk_00003.npz: is unreadable" in warned[0], warned
    _assert_equal(metrics, unbroken)
    after = _stamps(chunks)
    assert after.pop("chunk_00003.npz") != before.pop("chunk_00003.npz")
    assert after == before
    assert sorted(json.loads((chunks / "manifest.json").read_text())["chunks"]) == CHUNKS


def test_a_busy_chunk_directory_stops_a_second_batch_with_one_line(
    prepared, unbroken, pristine, tmp_path
):
    chunks = _copy(pristine, tmp_path)
    _interrupt_before(chunks, 2)
    before = _stamps(chunks)
    holder = ChunkStore(chunks, _identity(chunks))  # another batch on it, in this process
    try:
        with pytest.raises(InputError, match=rf"another process \(pid {os.getpid()}\)") as error:
            execute(prepared, chunk_dir=chunks, fingerprint="a", keep_states=False)
        assert "\n" not in str(error.value)
        assert _stamps(chunks) == before  # it touched nothing
    finally:
        holder.close()
    # A process holding the lock, then killed: its lock dies with it.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
            str(chunks / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=rf"another process \(pid {proc.pid}\)"):
            execute(prepared, chunk_dir=chunks, fingerprint="a", keep_states=False)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
        proc.stdout.close()
    metrics, warned = _resume(prepared, chunks)
    assert warned == []
    _assert_equal(metrics, unbroken)


# ----------------------------------------------------------------- through scripts/resume.py

# What `run_experiment` does up to its cleanup, in a process set up as scripts/resume.py is
# (one CPU device per core): every chunk of the run directory's config, and the metrics of
# that unbroken batch.
_CHUNKED = """
import sys
from pathlib import Path
from research.platform import use_cpu_cores_as_devices
use_cpu_cores_as_devices()
import numpy as np
from research.pipelines.run import saved_config
from research.pipelines.train import execute, prepare, write_config
run_dir = Path(sys.argv[1])
config, raw = saved_config(run_dir)
result = execute(prepare(config), chunk_dir=run_dir / "chunks",
                 fingerprint=write_config(run_dir, raw), keep_states=False)
np.savez(sys.argv[2], **result.metrics)
"""


@pytest.fixture(scope="module")
def chunked_run(tmp_path_factory):
    """(run directory with config.yaml and all 4 chunks, unbroken metrics)."""
    root = tmp_path_factory.mktemp("chunked")
    run_dir = root / "run"
    write_config(run_dir, compose_raw(*TINY))
    proc = subprocess.run(
        [sys.executable, "-c", _CHUNKED, str(run_dir), str(root / "unbroken.npz")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (run_dir / "chunks").glob("chunk_*.npz")) == CHUNKS
    with np.load(root / "unbroken.npz") as data:
        return run_dir, {k: data[k] for k in data.files}


def _assert_complete(run_dir: Path, expected: dict):
    assert not (run_dir / "chunks").exists()  # cleaned up once all is in metrics.npz
    assert not list(run_dir.rglob("*.tmp"))
    _, metrics = load_metrics(run_dir)
    _assert_equal(metrics, expected)


def _resume_script(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "scripts/resume.py", str(run_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_resume_repairs_a_killed_sweep_with_a_truncated_chunk_and_a_corrupt_manifest(
    chunked_run, tmp_path
):
    original, unbroken = chunked_run
    run_dir = Path(shutil.copytree(original, tmp_path / "run"))
    chunks = run_dir / "chunks"
    (chunks / "chunk_00003.npz").unlink()  # killed before its last chunk
    _truncate(chunks / "chunk_00001.npz")
    (chunks / "manifest.json").write_text('{"fingerprint": ')
    proc = _resume_script(run_dir)
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "chunk_00001.npz: is unreadable" in stderr
    assert "manifest.json is not valid JSON" in stderr and "from the 2 chunk file(s)" in stderr
    assert "chunk_00000.npz" not in stderr and "chunk_00002.npz" not in stderr
    _assert_complete(run_dir, unbroken)


def test_two_resumes_of_one_run_directory_at_once_leave_it_complete_and_correct(
    chunked_run, tmp_path
):
    original, unbroken = chunked_run
    run_dir = Path(shutil.copytree(original, tmp_path / "run"))
    _interrupt_before(run_dir / "chunks", 1)  # killed after its first chunk
    procs = [_resume_script(run_dir) for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    codes = [p.returncode for p in procs]
    # One finishes the run; the other either found the directory busy and stopped with one
    # line, or came after the first had let go and finished it again, to the same bits.
    assert 0 in codes, outs
    for code, (_, stderr) in zip(codes, outs):
        assert "Traceback" not in stderr, stderr
        if code != 0:
            assert code == 2, stderr
            last = stderr.strip().splitlines()[-1]
            assert last.startswith("error: ") and "another process (pid " in last, stderr
            assert "is running this batch" in last
    _assert_complete(run_dir, unbroken)


# ----------------------------------------------------------------------------- checkpoints

CKPT = (
    "progress=false",
    "runs.seeds=2",
    "train.num_logs=2",
    "agent=ppo",
    "agent.num_envs=4",
    "agent.num_steps=16",
    "train.total_timesteps=256",
)


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """(prepared, trained states, checkpoint path)."""
    from research import checkpoint

    prepared, result = train(*CKPT)
    path = checkpoint.save(
        tmp_path_factory.mktemp("ckpt") / "ppo",
        result.agent_states,
        agent=prepared.config.agent.name,
        spec=prepared.env.spec,
        agent_config=prepared.config.agent.config,
        runs=prepared.runs.table,
        raw_config=compose_raw(*CKPT),
    )
    return prepared, result.agent_states, path


def _assert_trees_equal(a, b):
    import jax

    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _drop_checksums(path: Path):
    """Makes `path` a checkpoint as saved before checksums."""
    meta = json.loads((path / "checkpoint.json").read_text())
    del meta["sha256"]
    (path / "checkpoint.json").write_text(json.dumps(meta))


CHECKPOINT_DAMAGE = [
    ("arrays.npz", _truncate, "is damaged: its sha256 differs from the one saved"),
    ("arrays.npz", _flip_a_byte, "is damaged: its sha256 differs from the one saved"),
    ("runs.csv", lambda f: f.write_text(f.read_text() + "0\n"), "is damaged: its sha256"),
    ("config.yaml", _flip_a_byte, "is damaged: its sha256 differs"),
    ("checkpoint.json", _truncate, "is damaged: not valid JSON (JSONDecodeError)"),
    ("checkpoint.json", lambda f: f.write_text("[]"), "is damaged: holds a JSON list"),
]


@pytest.mark.parametrize("name, damage, message", CHECKPOINT_DAMAGE)
def test_a_damaged_checkpoint_is_one_clear_error_naming_its_file(
    saved_checkpoint, tmp_path, name, damage, message
):
    prepared, states, original = saved_checkpoint
    path = Path(shutil.copytree(original, tmp_path / "ppo"))
    _assert_trees_equal(load_checkpoint(prepared, path), states)  # intact, it loads
    damage(path / name)
    with pytest.raises(InputError) as error:
        load_checkpoint(prepared, path)
    text = str(error.value)
    assert repr(str(path / name)) in text and message in text and "\n" not in text, text


def test_a_checkpoint_from_before_checksums_loads_and_a_damaged_one_is_one_line(
    saved_checkpoint, tmp_path
):
    prepared, states, original = saved_checkpoint
    path = Path(shutil.copytree(original, tmp_path / "ppo"))
    _drop_checksums(path)
    _assert_trees_equal(load_checkpoint(prepared, path), states)
    _truncate(path / "arrays.npz")
    with pytest.raises(InputError, match="arrays.npz' is damaged: unreadable") as error:
        load_checkpoint(prepared, path)
    assert "\n" not in str(error.value)


def test_a_chunk_of_another_code_version_is_recomputed(prepared, unbroken, pristine, tmp_path):
    """A chunk written before a metric was added (e.g. diverged_at), with its checksum
    recorded: a valid file of another program's outputs, recomputed rather than mixed in."""
    chunks = _copy(pristine, tmp_path)
    f = chunks / "chunk_00001.npz"
    with np.load(f) as data:
        arrays = {k: v for k, v in data.items() if k != "metric/diverged_at"}
    np.savez_compressed(f, **arrays)
    manifest = json.loads((chunks / "manifest.json").read_text())
    manifest["chunks"][f.name] = hashlib.sha256(f.read_bytes()).hexdigest()
    (chunks / "manifest.json").write_text(json.dumps(manifest))
    metrics, warned = _resume(prepared, chunks)
    assert len(warned) == 1, warned
    assert "chunk_00001.npz: written by another version of the code" in warned[0]
    assert "missing ['diverged_at']" in warned[0]
    _assert_equal(metrics, unbroken)
