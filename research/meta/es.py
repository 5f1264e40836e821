"""Evolution strategies (evosax) over traced hyperparameters, and the fine-tuning fitness.

A candidate is a point x in R^d; field i takes the value low_i + sigmoid(x_i) (high_i -
low_i) (log-uniformly between them for log ranges), so every candidate is a valid
setting and the search starts (x = 0) in the middle of each range. Each generation is
one batch of runs: candidates x variants x seeds fine-tuned by the runner's `train`,
vmapped, and the generations are a `lax.scan`: the whole search is one program.
evosax minimises, so it is told the negated fitness.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.config import FieldRange
from research.runner.extension import RunParams
from research.runner.train import Trainer


@dataclass(frozen=True)
class SearchSpace:
    """d searched fields: agent hyperparameters by name, shaping ones as shaping.<field>."""

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    log: tuple[bool, ...]

    @classmethod
    def from_ranges(cls, ranges: Mapping[str, FieldRange]) -> SearchSpace:
        return cls(
            tuple(ranges),
            tuple(r.low for r in ranges.values()),
            tuple(r.high for r in ranges.values()),
            tuple(r.log for r in ranges.values()),
        )

    def __len__(self) -> int:
        return len(self.names)


def decode(space: SearchSpace, x: jax.Array) -> jax.Array:
    """Candidates x [..., d] -> field values [..., d], each inside its [low, high]."""
    log = np.asarray(space.log)
    low = np.where(log, np.log(np.maximum(space.low, 1e-30)), space.low).astype(np.float32)
    high = np.where(log, np.log(np.maximum(space.high, 1e-30)), space.high).astype(np.float32)
    value = low + jax.nn.sigmoid(x) * (high - low)
    return jnp.where(log, jnp.exp(value), value)


def with_values(base: Any, space: SearchSpace, values: jax.Array, prefix: str = "") -> Any:
    """The dataclass `base` (scalar fields) with every field [R]: the searched fields named
    prefix + field from values [R, d], the others broadcast."""
    n = values.shape[0]
    fields = {
        f.name: jnp.broadcast_to(jnp.asarray(getattr(base, f.name), jnp.float32), (n,))
        for f in dataclasses.fields(base)
    }
    for i, name in enumerate(space.names):
        if name.startswith(prefix) and name[len(prefix) :] in fields:
            fields[name[len(prefix) :]] = values[:, i]
    return base.replace(**fields)


def make_strategy(
    algorithm: str, population: int, num_dims: int, std_init: float, lr: float
) -> tuple[Any, Any]:
    """(evosax strategy, its params): "snes" (separable NES, adapted per-field std) or
    "open_es" (OpenAI-ES, antithetic, fixed std); the mean moves by SGD with step `lr`."""
    from evosax.algorithms import SNES, Open_ES  # imported when used: keeps `import research` light

    solution = jnp.zeros(num_dims)
    if algorithm == "snes":
        strategy = SNES(population, solution, optimizer=optax.sgd(lr))
        return strategy, strategy.default_params.replace(std_init=jnp.float32(std_init))
    if algorithm == "open_es":
        strategy = Open_ES(
            population,
            solution,
            optimizer=optax.sgd(lr),
            std_schedule=optax.constant_schedule(std_init),
        )
        return strategy, strategy.default_params
    raise ValueError(f"unknown ES algorithm {algorithm!r}; allowed: snes, open_es")


def make_es(
    fitness: Callable,
    space: SearchSpace,
    algorithm: str,
    population: int,
    generations: int,
    std_init: float = 1.0,
    lr: float = 1.0,
) -> Callable:
    """es_run(key, context, xs) -> (values [d], history), pure and jittable.

    fitness(key, values [P, d], context, x) -> [P], higher is better, NaN the worst;
    x: the generation's slice of xs (every leaf [generations, ...]), e.g. its variants.
    values: the search distribution's centre after the last generation, decoded.
    history, per generation: fitness_mean [G], fitness_best [G], mean [G, d] (the centre
    after that generation's update, decoded).
    """
    strategy, params = make_strategy(algorithm, population, len(space), std_init, lr)

    def es_run(key, context, xs):
        init_key, key = jax.random.split(key)
        state = strategy.init(init_key, jnp.zeros(len(space)), params)

        def generation(state, inputs):
            k, x = inputs
            ask_key, fitness_key, tell_key = jax.random.split(k, 3)
            population_x, state = strategy.ask(ask_key, state, params)
            f = fitness(fitness_key, decode(space, population_x), context, x)
            state, _ = strategy.tell(tell_key, population_x, -f, state, params)
            return state, {
                "fitness_mean": jnp.nanmean(f),
                "fitness_best": jnp.nanmax(f),
                "mean": decode(space, state.mean),
            }

        state, history = jax.lax.scan(generation, state, (jax.random.split(key, generations), xs))
        return decode(space, state.mean), history

    return es_run


def finetune_fitness(
    trainer: Trainer, space: SearchSpace, hparams: Any, shaping: Any, seeds: int, score: str = "auc"
) -> Callable:
    """fitness(key, values [P, d], init_state, variants) -> [P] for `make_es`.

    Every candidate fine-tunes `init_state` (one agent state; None: from scratch) on each
    variant (env params, leaves [V, ...]) x `seeds` seeds: P x V x seeds runs of the
    runner's `train` in one vmapped batch. Candidates share the runs' keys (common random
    numbers: they are ranked on the same episodes' noise). Fitness: the mean over a
    candidate's runs of the unshaped training return, averaged over the logs ("auc") or
    at the last log ("final"); NaN logs (no episode ended) are ignored.
    hparams: the base agent hyperparameters; shaping: the base ShapingHParams (None when
    the trainer has no shaping).
    """
    train = jax.vmap(trainer.train, in_axes=(0, 0, 0, None))

    def fitness(key, values, init_state, variants):
        num, per = values.shape[0], jax.tree.leaves(variants)[0].shape[0] * seeds
        candidate = jnp.repeat(jnp.arange(num), per)  # [R], R = P * V * seeds
        variant = jnp.tile(jnp.repeat(jnp.arange(per // seeds), seeds), num)
        keys = jax.random.split(key, per)[jnp.tile(jnp.arange(per), num)]
        env_params = jax.tree.map(lambda x: x[variant], variants)
        if shaping is not None:
            shaped = with_values(shaping, space, values[candidate], "shaping.")
            env_params = RunParams(env_params, {"shaping": shaped})
        _, metrics = train(
            keys, with_values(hparams, space, values[candidate]), env_params, init_state
        )
        curves = metrics["episode_return"]  # [R, logs], unshaped
        runs = jnp.nanmean(curves, axis=1) if score == "auc" else curves[:, -1]
        return jnp.nanmean(runs.reshape(num, per), axis=1)

    return fitness
