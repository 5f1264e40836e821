"""Population-based training (Jaderberg et al. 2017) inside the one program (issue 23).

A population is `population_size` consecutive runs of the runs axis (`Extension.group_size`
keeps it inside one device's block of one chunk, so exploit is a gather within the block:
no collective, and chunks stay independent). Every `interval` segments, after the segment
(the batched `population` hook, research.runner.extension), each population:

1. ranks its members by fitness: the NaN-aware mean of a logged metric (`episode_return`)
   over the last `window` segments; a member with no finite value ranks last;
2. exploit: each of the bottom `k = int(fraction * P)` members copies the agent state
   (parameters, optimiser state, normalisation statistics, the update counter, so
   schedules read the parent's), its fitness window and all its hyperparameters from a
   member drawn uniformly from the top k;
3. explore: each field of `perturb` of a replaced member is multiplied by one of its factors
   (drawn uniformly) or, with `resample_probability`, redrawn from its bounds (log-uniform
   when low > 0, else uniform), then clipped to the bounds.

A member keeps its own key, env states, extension states and `diverged_at`. Every draw
comes from the member's own runner key (folded with a tag and the segment), so what a
member does depends on its population alone, not on the device count or the position of
its block. No generation follows the last segment (its states are the results).

Logged every segment, per run: `pbt.fitness`, `pbt.parent` (the member, 0..P-1, whose
state the run holds after this segment: itself unless replaced) and `pbt.<field>` (the
value in force during the segment), so the lineage is data (`lineage_table`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from research.config.schema import PBTConfig
from research.runner.extension import Extension, Start

_TAG = 0x9B7  # folded into a member's runner key: PBT's draws, apart from the loop's


def push(window: jax.Array, value: jax.Array) -> jax.Array:
    """window [..., W] with its oldest entry dropped and `value` [...] appended."""
    return jnp.concatenate([window[..., 1:], value[..., None]], axis=-1)


def window_fitness(window: jax.Array) -> jax.Array:
    """[...]: the mean of the finite entries of window [..., W]; NaN where none is."""
    finite = jnp.isfinite(window)
    total = jnp.sum(jnp.where(finite, window, 0.0), axis=-1)
    count = finite.sum(axis=-1)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def rank(fitness: jax.Array) -> jax.Array:
    """fitness [P] -> members best first [P] (NaN last; ties: the lower index first)."""
    score = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
    return jnp.argsort(-score, stable=True)


def choose_parents(fitness: jax.Array, keys: jax.Array, k: int) -> jax.Array:
    """parent [P] of each member: one of the top k (uniform, from its own key) for the
    bottom k, itself for the others. keys: [P] typed keys."""
    order = rank(fitness)
    size = fitness.shape[0]
    position = jnp.zeros(size, jnp.int32).at[order].set(jnp.arange(size, dtype=jnp.int32))
    pick = jax.vmap(lambda key: jax.random.randint(key, (), 0, k))(keys)
    return jnp.where(position >= size - k, order[pick], jnp.arange(size, dtype=jnp.int32))


def sample_space(key: jax.Array, low: float, high: float, shape=()) -> jax.Array:
    """Draws from [low, high]: log-uniform when low > 0, else uniform."""
    u = jax.random.uniform(key, shape)
    if low > 0:
        return jnp.exp(np.log(low) + u * (np.log(high) - np.log(low)))
    return low + u * (high - low)


def explore(
    value: jax.Array,
    keys: jax.Array,
    factors: tuple[float, ...],
    bounds: tuple[float, float],
    resample_probability: float,
) -> jax.Array:
    """value [P] (the parents' values) multiplied by a factor drawn from `factors`, or with
    resample_probability redrawn from `bounds`, clipped to them. keys: [P]."""

    def one(v, key):
        coin, which, fresh = jax.random.split(key, 3)
        factor = jnp.asarray(factors, jnp.float32)[jax.random.randint(which, (), 0, len(factors))]
        resampled = sample_space(fresh, *bounds)
        new = jnp.where(jax.random.uniform(coin) < resample_probability, resampled, v * factor)
        return jnp.clip(new, *bounds).astype(v.dtype)

    return jax.vmap(one)(value, keys)


def generation(
    agent_state: Any,
    window: jax.Array,
    hparams: Any,
    fitness: jax.Array,
    keys: jax.Array,
    config: PBTConfig,
) -> tuple[Any, jax.Array, Any, jax.Array]:
    """One population's exploit and explore. Leaves [P, ...]; fitness [P]; keys [P].

    Returns (agent_state, window, hparams, parent [P] int32)."""
    pair = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
    select, perturb = pair[:, 0], pair[:, 1]
    parent = choose_parents(fitness, select, config.num_replaced)
    replaced = parent != jnp.arange(parent.shape[0])
    take = lambda tree: jax.tree.map(lambda x: x[parent], tree)
    agent_state, window, copied = take(agent_state), take(window), take(hparams)
    new = {}
    for j, (name, factors) in enumerate(config.perturb):
        field_keys = jax.vmap(lambda k, j=j: jax.random.fold_in(k, j))(perturb)
        moved = explore(
            getattr(copied, name), field_keys, factors, config.bound(name),
            config.resample_probability,
        )  # fmt: skip
        new[name] = jnp.where(replaced, moved, getattr(copied, name))
    return agent_state, window, copied.replace(**new), parent


def by_population(tree: Any, size: int) -> Any:
    """Leaves [B, ...] -> [B // size, size, ...]."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] // size, size, *x.shape[1:]), tree)


def flat(tree: Any) -> Any:
    """Leaves [G, P, ...] -> [G * P, ...]."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)


@dataclass(frozen=True)
class PBT(Extension):
    """PBT over populations of `config.population_size` consecutive runs (see the module).

    num_logs: the run's segments (no generation after the last)."""

    config: PBTConfig
    num_logs: int
    name: str = "pbt"

    @property
    def group_size(self) -> int:
        return self.config.population_size

    def start(self, s: Start) -> tuple[Any, Any]:
        # The fitness window: NaN until segments fill it.
        return s.agent_state, jnp.full((self.config.window,), jnp.nan, jnp.float32)

    def due(self, index: jax.Array) -> jax.Array:
        """[] bool: a generation follows segment `index` (unbatched)."""
        done = index + 1
        return (done % self.config.interval == 0) & (done < self.num_logs)

    def population(self, runner, hparams, metrics, index, slot):
        c, size = self.config, self.config.population_size
        if c.fitness not in metrics:
            raise ValueError(
                f"pbt.fitness: {c.fitness!r} is not logged by this trainer; logged: "
                f"{sorted(metrics)}"
            )
        logged = {"pbt.fitness", "pbt.parent", *(f"pbt.{n}" for n in c.fields)}
        clash = sorted(logged & set(metrics))
        if clash:
            raise ValueError(f"extension 'pbt' logs {clash}, which are logged already")
        window = push(runner.ext[slot], metrics[c.fitness].astype(jnp.float32))
        fitness = window_fitness(window)
        keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, _TAG), index))(
            runner.key
        )
        # Built from the block's data (zeros_like), so that under shard_map it varies over
        # the runs axis as the exploit branch's parents do (cond needs equal types).
        members = jnp.zeros_like(fitness, jnp.int32) + jnp.tile(
            jnp.arange(size, dtype=jnp.int32), fitness.shape[0] // size
        )
        row = {
            "pbt.fitness": fitness,
            **{f"pbt.{n}": getattr(hparams, n) for n in c.fields},
        }

        def exploit(operands):
            agent_state, window, hparams = operands
            out = jax.vmap(lambda a, w, h, f, k: generation(a, w, h, f, k, c))(
                *by_population((agent_state, window, hparams, fitness, keys), size)
            )
            return flat(out)

        def keep(operands):
            return (*operands, members)

        agent_state, window, hparams, parent = jax.lax.cond(
            self.due(index), exploit, keep, (runner.agent_state, window, hparams)
        )
        ext = list(runner.ext)
        ext[slot] = window
        runner = runner.replace(agent_state=agent_state, ext=tuple(ext))
        return runner, hparams, {**metrics, **row, "pbt.parent": parent}


# ------------------------------------------------------------------------------ the host


def initial_values(config: PBTConfig, num_runs: int, seed: int) -> dict[str, np.ndarray]:
    """initial "sample": each perturbed field's starting value of every run [R] float32,
    drawn from its bounds (log-uniform when low > 0) with numpy's generator of `seed`."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in config.fields:
        low, high = config.bound(name)
        u = rng.uniform(size=num_runs)
        values = np.exp(np.log(low) + u * np.log(high / low)) if low > 0 else low + u * (high - low)
        out[name] = values.astype(np.float32)
    return out


def lineage_table(
    config: PBTConfig, metrics: Mapping[str, np.ndarray], env_steps: np.ndarray
) -> pd.DataFrame:
    """pbt_lineage.csv: per run and generation (0: the start), its population and member,
    the segment after which the generation happened, the env steps then, the member whose
    state it took (`parent`; itself when kept), the fitness it was ranked by (NaN at 0) and
    each perturbed hyperparameter from then on. metrics: name -> [R, L]."""
    num_runs, num_logs = metrics["pbt.parent"].shape
    size, names = config.population_size, config.fields
    run = np.arange(num_runs)
    segments = [t for t in range(num_logs - 1) if (t + 1) % config.interval == 0]
    columns: dict[str, list] = {k: [] for k in ("generation", "segment", "env_steps", "parent")}
    columns.update({"fitness": [], **{n: [] for n in names}})
    for g, t in enumerate([-1, *segments]):
        columns["generation"].append(np.full(num_runs, g))
        columns["segment"].append(np.full(num_runs, t))
        columns["env_steps"].append(env_steps[:, t] if g else np.zeros(num_runs, np.int64))
        columns["parent"].append(metrics["pbt.parent"][:, t] if g else run % size)
        columns["fitness"].append(metrics["pbt.fitness"][:, t] if g else np.full(num_runs, np.nan))
        for n in names:  # from then on: in force during the next segment
            columns[n].append(metrics[f"pbt.{n}"][:, t + 1])
    num = len(segments) + 1
    table = pd.DataFrame(
        {
            "run": np.tile(run, num),
            "population": np.tile(run // size, num),
            "member": np.tile(run % size, num),
            **{k: np.concatenate(v) for k, v in columns.items()},
        }
    )
    return table.sort_values(["run", "generation"], kind="stable", ignore_index=True)


def plot_lineage(config: PBTConfig, lineage: pd.DataFrame, path, populations: int = 4) -> None:
    """pbt_hparams.png (each perturbed field's value over training, a line per member) and
    pbt_lineage.png (member by generation, a segment from parent to child, coloured by the
    fitness), for the first `populations` populations, a column each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = dict(path)
    names = config.fields
    shown = sorted(lineage["population"].unique())[:populations]
    fig, axes = plt.subplots(
        len(names), len(shown), figsize=(4 * len(shown), 2.6 * len(names)), squeeze=False
    )
    for col, p in enumerate(shown):
        sub = lineage[lineage["population"] == p]
        for row, name in enumerate(names):
            ax = axes[row, col]
            for _, member in sub.groupby("member"):
                ax.step(member["env_steps"], member[name], where="post", lw=0.9)
            if config.bound(name)[0] > 0:
                ax.set_yscale("log")
            ax.set_title(f"population {p}", fontsize=9)
            ax.set_xlabel("env steps")
            ax.set_ylabel(name)
    fig.tight_layout()
    fig.savefig(path["hparams"], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.2), squeeze=False)
    finite = lineage["fitness"][np.isfinite(lineage["fitness"])]
    low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    cmap = plt.get_cmap("viridis")
    for col, p in enumerate(shown):
        ax = axes[0, col]
        sub = lineage[(lineage["population"] == p) & (lineage["generation"] > 0)]
        for _, r in sub.iterrows():
            g, child, parent = r["generation"], r["member"], r["parent"]
            shade = (r["fitness"] - low) / (high - low) if high > low else 0.5
            colour = cmap(shade) if np.isfinite(shade) else "lightgrey"
            ax.plot([g - 1, g], [parent, child], color=colour, lw=2.0 if parent != child else 0.8)
        ax.set_title(f"population {p}: parent -> member", fontsize=9)
        ax.set_xlabel("generation")
        ax.set_ylabel("member")
    fig.colorbar(
        plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(low, high)),
        ax=axes[0, -1],
        label="fitness (ranked by)",
    )
    fig.savefig(path["lineage"], dpi=110, bbox_inches="tight")
    plt.close(fig)
