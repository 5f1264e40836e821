"""Plasticity interventions (issue 22) on the agents' (params, opt_state): pure functions.

`params` is a network's variables as the agents hold them ({"params": {module: ...}}, see
research/rl/networks.py: MLP torsos `*torso` with layers Dense_0, Dense_1, ... and an
optional LayerNorm_i after each, output layers `*head`). `opt_state` is the one optimiser's
`OptState` (research/rl/optim.py); its Adam moments mu and nu mirror the params tree.
`fresh` is a freshly initialised params tree of the same structure (e.g. the agent's `init`
with a new key): new weights come from the network's own initialisers.

All functions are jittable and vmappable over runs (every argument [R, ...]); which
parameters an intervention touches is decided from the static tree structure, and what
it does to them by selects, so untouched entries are bit-for-bit unchanged. None of them
moves Adam's step count (bias correction is global to the run) or the L2 anchor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from research.rl.optim import OptState, param_group

Path = tuple[str, ...]  # a leaf's key path as names: ("params", "torso", "Dense_0", "kernel")


def _names(path) -> Path:
    return tuple(str(getattr(entry, "key", getattr(entry, "name", entry))) for entry in path)


def _adam_index(opt_state: OptState) -> int:
    """Where optax's ScaleByAdamState sits in the inject_hyperparams state's inner chain."""
    inner = opt_state.adam.inner_state
    found = [i for i, s in enumerate(inner) if isinstance(s, optax.ScaleByAdamState)]
    if len(found) != 1:
        raise ValueError(f"expected one ScaleByAdamState in the optimiser state, got {inner}")
    return found[0]


def adam_moments(opt_state: OptState) -> optax.ScaleByAdamState:
    """(count, mu, nu) of the optimiser's Adam: opt_state.adam.inner_state[i]."""
    return opt_state.adam.inner_state[_adam_index(opt_state)]


def _map_moments(opt_state: OptState, fn: Callable[[Path, jax.Array], jax.Array]) -> OptState:
    """opt_state with fn(path, leaf) applied to every leaf of mu and nu (count unchanged)."""
    i = _adam_index(opt_state)
    inner = list(opt_state.adam.inner_state)
    moments = inner[i]
    apply = lambda tree: jax.tree_util.tree_map_with_path(lambda p, x: fn(_names(p), x), tree)
    inner[i] = moments._replace(mu=apply(moments.mu), nu=apply(moments.nu))
    return opt_state.replace(adam=opt_state.adam._replace(inner_state=tuple(inner)))


def _dense_layers(params: Any, torso: str) -> list[str]:
    """Names of the torso's Dense layers in order: Dense_0, Dense_1, ..."""
    layers = [k for k in params["params"][torso] if k.startswith("Dense_")]
    return sorted(layers, key=lambda k: int(k.removeprefix("Dense_")))


def _head_of(torso: str) -> str:
    """The output layer fed by `torso`: torso -> head, actor_torso -> actor_head."""
    return torso.removesuffix("torso") + "head"


# --- ReDo (Sokar et al. 2023) ----------------------------------------------------------


def redo(
    params: Any,
    opt_state: OptState,
    fresh: Any,
    masks: Sequence[jax.Array],
    torso: str = "torso",
) -> tuple[Any, OptState]:
    """Recycles the dormant units of `torso`'s hidden layers.

    masks: one [units_l] bool per hidden layer l (e.g. diagnostics.dormant_mask of
    diagnostics.hidden_activations). For each dormant unit j of layer l:
    - incoming weights (column j of Dense_l's kernel, bias j) <- fresh's;
    - outgoing weights (row j of the next Dense's kernel, or of the head's for the last
      hidden layer) <- 0, so the recycled unit starts with no effect on the output;
    - Adam's mu and nu of exactly those entries <- 0 (stale moments would push the new
      weights along the old unit's history).
    Where a row and a column meet (j dormant in layer l, k dormant in layer l + 1), the zero
    wins, as in the authors' code (dopamine/labs/redo: incoming resets, then outgoing).
    LayerNorm parameters are left as they are. All masks False: bit-for-bit identity.
    Returns (params, opt_state).
    """
    layers = _dense_layers(params, torso)
    if len(masks) != len(layers):
        raise ValueError(f"redo: {len(masks)} masks for the {len(layers)} layers of {torso!r}")
    # Leaf path -> its entries to reinitialise (incoming) or to zero (outgoing), as a mask
    # that broadcasts to the leaf.
    incoming: dict[Path, jax.Array] = {}
    outgoing: dict[Path, jax.Array] = {}
    for index, (name, mask) in enumerate(zip(layers, masks)):
        incoming[("params", torso, name, "kernel")] = mask[None, :]
        incoming[("params", torso, name, "bias")] = mask
        nxt = (torso, layers[index + 1]) if index + 1 < len(layers) else (_head_of(torso),)
        outgoing[("params", *nxt, "kernel")] = mask[:, None]

    def new_param(path: Path, x: jax.Array, x_fresh: jax.Array) -> jax.Array:
        if path in incoming:
            x = jnp.where(incoming[path], x_fresh, x)
        if path in outgoing:
            x = jnp.where(outgoing[path], jnp.zeros_like(x), x)
        return x

    def new_moment(path: Path, m: jax.Array) -> jax.Array:
        for touched in (incoming, outgoing):
            if path in touched:
                m = jnp.where(touched[path], jnp.zeros_like(m), m)
        return m

    params = jax.tree_util.tree_map_with_path(
        lambda p, x, f: new_param(_names(p), x, f), params, fresh
    )
    return params, _map_moments(opt_state, new_moment)


# --- shrink and perturb (Ash & Adams 2020) ---------------------------------------------


def shrink_perturb(
    params: Any, fresh: Any, alpha: jax.Array | float, sigma: jax.Array | float
) -> Any:
    """theta <- alpha * theta + sigma * theta_fresh, on every parameter.

    The perturbation is a fresh initialisation (the paper's formulation), so each layer's
    noise has its initialiser's scale (and LayerNorm scales are pulled towards 1).
    alpha, sigma: [] (traced). alpha = 1, sigma = 0 returns params bit-for-bit (a select,
    so neither -0.0 + 0.0 nor a non-finite fresh value can leak through). The optimiser
    state is not touched (Ash & Adams train on with it), so this takes no opt_state.
    """
    off = (alpha == 1) & (sigma == 0)
    return jax.tree.map(lambda x, f: jnp.where(off, x, alpha * x + sigma * f), params, fresh)


# --- resetting layers (Nikishin et al. 2022) ----------------------------------------------


def reset_params(
    params: Any, opt_state: OptState, fresh: Any, pick: Callable[[Path], bool]
) -> tuple[Any, OptState]:
    """Parameters whose key path `pick` accepts <- fresh's, and their Adam mu, nu <- 0.

    pick: a static predicate on a leaf's path as names, e.g. ("params", "head", "kernel");
    see `in_groups` and `last_layers`. Everything else is bit-for-bit unchanged (a pick
    that accepts nothing is the identity). Returns (params, opt_state).
    """
    params = jax.tree_util.tree_map_with_path(
        lambda p, x, f: f if pick(_names(p)) else x, params, fresh
    )
    opt_state = _map_moments(opt_state, lambda p, m: jnp.zeros_like(m) if pick(p) else m)
    return params, opt_state


def in_groups(*groups: str) -> Callable[[Path], bool]:
    """A `pick` for the parameter groups of research.rl.optim.param_group ('torso', 'head')."""
    # param_group reads key-path entries (their .key), not the names a pick is given.
    return lambda path: param_group(tuple(jax.tree_util.DictKey(n) for n in path)) in groups


def last_layers(params: Any, k: int) -> Callable[[Path], bool]:
    """A `pick` for the last k Dense layers of every torso-head pair of `params`.

    Layer 1 is the head (with a Gaussian's log_std, which param_group counts as head: so
    last_layers(params, 1) picks what in_groups("head") does), layers 2..k the torso's last
    Dense layers with the LayerNorm that follows each.
    """
    if k < 0:
        raise ValueError(f"last_layers: k = {k} < 0")
    picked: set[Path] = set()
    for torso in (name for name in params["params"] if name.endswith("torso")):
        layers = _dense_layers(params, torso)
        if k >= 1:
            picked.add((_head_of(torso),))
        for name in layers[max(0, len(layers) - (k - 1)) :] if k > 1 else []:
            picked.add((torso, name))
            picked.add((torso, name.replace("Dense_", "LayerNorm_")))
    with_log_std = k >= 1 and "log_std" in params["params"]
    return lambda path: path[1:-1] in picked or (with_log_std and path[1:] == ("log_std",))
