"""Checkpoints: a batch of trained agent states with their config and provenance.

A checkpoint is one directory, written atomically (`results.atomic_dir`):

    arrays.npz       every state leaf under its key path, leading axis [K] (one per run)
    checkpoint.json  agent name, env spec, the agent's static config, leaf shapes,
                     provenance (versions, commit, devices), and under "sha256" the
                     checksum of each of the three other files
    runs.csv         the K runs it holds: seed, hyperparameters, env variant
    config.yaml      the resolved config that trained them (a transfer's pretraining:
                     the transfer config with phase: source, which parses to it)

Reading verifies the checksums (`read_info`: runs.csv and config.yaml; `load`: arrays.npz):
a file truncated or changed since it was saved is an InputError naming it, since a
checkpoint, unlike a chunk of a run, cannot be recomputed. Checkpoints saved before
checksums (no "sha256") still load; a damaged file among them fails to parse, which is
also an InputError naming it.

Loading reads plain arrays (`allow_pickle=False`) into the structure of a template
state built by the loading side's own agent: nothing in a checkpoint is executed.
A checkpoint that does not fit that agent stops with a message naming what differs.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
import yaml

from research import results
from research.agents import AGENTS
from research.config import ConfigError
from research.envs import EnvSpec
from research.errors import InputError

FORMAT = 1
# Files whose sha256 checkpoint.json records (it cannot record its own).
CHECKSUMMED = ("arrays.npz", "runs.csv", "config.yaml")


def path_name(path: tuple) -> str:
    """A leaf's key path as 'field/key/...', e.g. 'params/params/actor_head/kernel'."""
    names = (getattr(e, "key", getattr(e, "name", getattr(e, "idx", e))) for e in path)
    return "/".join(str(n) for n in names)


def _leaves(tree: Any) -> dict[str, Any]:
    """Key path name -> leaf."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_name(path): leaf for path, leaf in flat}


def _network_settings(agent: str, agent_config: Any) -> dict[str, Any]:
    """The agent's `network_fields` (AgentEntry): settings that change what its saved
    parameters compute without always changing their shapes, or their structure."""
    names = AGENTS[agent].network_fields
    values = dataclasses.asdict(agent_config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k in names}


def _spec_dict(spec: EnvSpec) -> dict[str, Any]:
    out = dataclasses.asdict(spec)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def save(
    path: str | Path,
    states: Any,
    *,
    agent: str,
    spec: EnvSpec,
    agent_config: Any,
    runs: pd.DataFrame,
    raw_config: Mapping[str, Any],
) -> Path:
    """Writes K agent states (every leaf [K, ...]) as the checkpoint directory `path`."""
    arrays = {k: np.asarray(v) for k, v in _leaves(states).items()}
    sizes = {v.shape[0] for v in arrays.values()}
    if sizes != {len(runs)}:
        raise ValueError(f"states hold {sorted(sizes)} runs, the runs table {len(runs)}")
    meta = {
        "format": FORMAT,
        "agent": agent,
        "env_spec": _spec_dict(spec),
        "network": _network_settings(agent, agent_config),
        "agent_config": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(agent_config).items()
        },
        "leaves": {
            k: {"shape": list(v.shape[1:]), "dtype": str(v.dtype)} for k, v in arrays.items()
        },
        "num_runs": len(runs),
        "provenance": results.provenance(),
    }
    with results.atomic_dir(path) as tmp:
        np.savez(tmp / "arrays.npz", **arrays)
        runs.to_csv(tmp / "runs.csv", index=False)
        (tmp / "config.yaml").write_text(yaml.safe_dump(dict(raw_config), sort_keys=False))
        meta["sha256"] = {name: results.sha256_file(tmp / name) for name in CHECKSUMMED}
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return Path(path)


def verify(path: str | Path, meta: Mapping[str, Any], name: str) -> None:
    """An InputError if checkpoint file `name` differs from the sha256 saved for it in
    `meta` (checkpoint.json); nothing to check in a checkpoint saved before checksums."""
    sums = meta.get("sha256")
    want = sums.get(name) if isinstance(sums, Mapping) else None
    if want is None:
        return
    file = Path(path) / name
    try:
        have = results.sha256_file(file)
    except OSError as error:
        raise InputError(f"checkpoint: {str(file)!r} cannot be read ({error})") from None
    if have != want:
        raise InputError(
            f"checkpoint: {str(file)!r} is damaged: its sha256 differs from the one saved in "
            "checkpoint.json (truncated or changed since); a checkpoint cannot be recomputed, "
            "so restore it from a copy or train it again"
        )


def read_info(path: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """(checkpoint.json contents, runs table) of a checkpoint directory."""
    path = Path(path)
    if not (path / "checkpoint.json").is_file() or not (path / "arrays.npz").is_file():
        raise ConfigError(
            f"checkpoint: {str(path)!r} is not a checkpoint directory "
            "(needs checkpoint.json and arrays.npz)"
        )
    info = path / "checkpoint.json"
    try:
        meta = json.loads(info.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(
            f"checkpoint: {str(info)!r} is damaged: not valid JSON ({type(error).__name__})"
        ) from None
    if not isinstance(meta, dict):
        raise InputError(
            f"checkpoint: {str(info)!r} is damaged: holds a JSON {type(meta).__name__}, "
            "not a mapping"
        )
    if meta.get("format") != FORMAT:
        raise ConfigError(
            f"checkpoint: {str(path)!r} has format {meta.get('format')!r}; "
            f"this version reads format {FORMAT}"
        )
    verify(path, meta, "runs.csv")
    verify(path, meta, "config.yaml")
    return meta, pd.read_csv(path / "runs.csv")


def mismatches(
    meta: Mapping[str, Any], template: Any, *, agent: str, spec: EnvSpec, agent_config: Any
) -> list[str]:
    """What differs between a checkpoint and the agent that wants to load it ([] = fits)."""
    if meta["agent"] != agent:
        return [
            f"agent: the checkpoint holds a {meta['agent']!r} agent, the config asks for {agent!r}"
        ]
    problems = []
    want_spec = _spec_dict(spec)
    for name in ("obs_shape", "discrete", "num_actions", "action_dim", "num_states"):
        have, want = meta["env_spec"].get(name), want_spec[name]
        if have != want:
            problems.append(
                f"env {name}: checkpoint {have!r} ({meta['env_spec']['env_id']}), "
                f"target {want!r} ({spec.env_id})"
            )
    want_net = _network_settings(agent, agent_config)
    for name, want in want_net.items():
        have = meta["network"].get(name)
        if have != want:
            problems.append(f"agent.{name}: checkpoint {have!r}, config {want!r}")
    want_leaves = {k: (list(v.shape), str(v.dtype)) for k, v in _leaves(template).items()}
    have_leaves = {k: (v["shape"], v["dtype"]) for k, v in meta["leaves"].items()}
    for key in sorted(want_leaves.keys() - have_leaves.keys()):
        problems.append(f"parameter {key}: missing from the checkpoint")
    for key in sorted(have_leaves.keys() - want_leaves.keys()):
        problems.append(f"parameter {key}: in the checkpoint but not in this agent")
    for key in sorted(want_leaves.keys() & have_leaves.keys()):
        if have_leaves[key] != want_leaves[key]:
            (hs, hd), (ws, wd) = have_leaves[key], want_leaves[key]
            problems.append(f"parameter {key}: checkpoint shape {hs} {hd}, agent {ws} {wd}")
    return problems


def load(
    path: str | Path,
    template: Any,
    *,
    agent: str,
    spec: EnvSpec,
    agent_config: Any,
    indices: Sequence[int] | None = None,
) -> Any:
    """States of the checkpoint's runs `indices` (all if None): every leaf [K, ...].

    template: one run's state of the loading agent, e.g. jax.eval_shape(agent.init, ...).
    """
    path = Path(path)
    meta, runs = read_info(path)
    problems = mismatches(meta, template, agent=agent, spec=spec, agent_config=agent_config)
    if problems:
        raise ConfigError(
            f"checkpoint {str(path)!r} does not fit the configured agent:\n  "
            + "\n  ".join(problems)
        )
    index = np.arange(len(runs)) if indices is None else np.asarray(indices, np.int64)
    if index.ndim != 1 or len(index) == 0 or index.min() < 0 or index.max() >= len(runs):
        raise ConfigError(
            f"checkpoint runs: got {np.atleast_1d(index).tolist()}; the checkpoint "
            f"holds runs 0..{len(runs) - 1}"
        )
    verify(path, meta, "arrays.npz")
    try:
        with np.load(path / "arrays.npz", allow_pickle=False) as data:
            arrays = {k: data[k][index] for k in data.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, SyntaxError) as error:
        # A checkpoint saved before checksums, damaged, or holding an object array (which
        # only pickle could read, and is refused): one line naming it, as above.
        raise InputError(
            f"checkpoint: {str(path / 'arrays.npz')!r} is damaged: unreadable "
            f"({type(error).__name__}: {error})"
        ) from None
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = [arrays[path_name(p)].astype(leaf.dtype) for p, leaf in flat]
    return jax.tree_util.tree_unflatten(treedef, leaves)
