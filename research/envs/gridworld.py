"""A deterministic gridworld with one goal cell (gymnax API); the observation is the cell index.

The agent starts at (start_row, start_col) of a size x size grid and moves up, right,
down or left (actions 0..3); a move into the border leaves it where it is. Entering
the goal pays goal_reward and terminates; every other step pays step_reward. Episodes
are truncated after max_steps_in_episode steps.

The observation is row * size + col: an int32 in [0, MAX_SIZE**2). The table size
(`num_states`) is fixed by MAX_SIZE, not by the traced `size`, so variants of
different sizes share one program.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from research.envs.registry import EnvEntry, Range, register

MAX_SIZE = 10
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left: (d_row, d_col)


@struct.dataclass
class GridWorldState(environment.EnvState):
    row: jax.Array
    col: jax.Array


@struct.dataclass
class GridWorldParams(environment.EnvParams):
    size: int = 5
    goal_row: int = 4
    goal_col: int = 4
    start_row: int = 0
    start_col: int = 0
    step_reward: float = 0.0
    goal_reward: float = 1.0
    max_steps_in_episode: int = 100


# Rewards are free (a step cost is a negative step_reward); the table holds MAX_SIZE**2 cells.
RANGES = {
    "size": Range(low=2, high=MAX_SIZE, why=f"the table holds {MAX_SIZE} x {MAX_SIZE} cells"),
    **{name: Range(low=0) for name in ("goal_row", "goal_col", "start_row", "start_col")},
}


def check_params(params: GridWorldParams) -> tuple[str, str] | None:
    """(field, what is allowed) for the first inconsistent combination, else None (each
    field's own range is `RANGES`)."""
    for name in ("goal_row", "goal_col", "start_row", "start_col"):
        if not 0 <= getattr(params, name) < params.size:
            return name, f"an int with 0 <= x < size = {params.size}"
    if (params.start_row, params.start_col) == (params.goal_row, params.goal_col):
        return "start_row", "a start cell other than the goal cell"
    return None


class GridWorld(environment.Environment[GridWorldState, GridWorldParams]):
    """Deterministic grid, four moves, one terminating goal cell."""

    num_states = MAX_SIZE * MAX_SIZE

    @property
    def default_params(self) -> GridWorldParams:
        return GridWorldParams()

    def step_env(
        self, key: jax.Array, state: GridWorldState, action: Any, params: GridWorldParams
    ) -> tuple[jax.Array, GridWorldState, jax.Array, jax.Array, dict]:
        move = jnp.asarray(MOVES)[action]
        row = jnp.clip(state.row + move[0], 0, params.size - 1)
        col = jnp.clip(state.col + move[1], 0, params.size - 1)
        next_state = GridWorldState(time=state.time + 1, row=row, col=col)
        at_goal = self.is_terminated(next_state, params)
        reward = jnp.where(at_goal, params.goal_reward, params.step_reward).astype(jnp.float32)
        return self.get_obs(next_state, params), next_state, reward, at_goal, {}

    def reset_env(
        self, key: jax.Array, params: GridWorldParams
    ) -> tuple[jax.Array, GridWorldState]:
        state = GridWorldState(
            time=0,
            row=jnp.asarray(params.start_row, jnp.int32),
            col=jnp.asarray(params.start_col, jnp.int32),
        )
        return self.get_obs(state, params), state

    def get_obs(self, state: GridWorldState, params: Any = None, key: Any = None) -> jax.Array:
        size = (params or self.default_params).size
        return (state.row * size + state.col).astype(jnp.int32)

    def is_terminated(self, state: GridWorldState, params: GridWorldParams) -> jax.Array:
        return jnp.logical_and(state.row == params.goal_row, state.col == params.goal_col)

    @property
    def num_actions(self) -> int:
        return len(MOVES)

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(len(MOVES))

    def observation_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_states)


def distance_to_goal(obs: jax.Array, params: GridWorldParams) -> jax.Array:
    """Manhattan distance from the cell (obs = row * size + col) to the goal."""
    row, col = obs // params.size, obs % params.size
    return (jnp.abs(row - params.goal_row) + jnp.abs(col - params.goal_col)).astype(jnp.float32)


def progress(obs: jax.Array, params: GridWorldParams) -> jax.Array:
    """-distance to the goal / (2 (size - 1)): 0 at the goal, -1 in the far corner."""
    return -distance_to_goal(obs, params) / (2.0 * (params.size - 1))


register(
    EnvEntry(
        "GridWorld-tabular",
        GridWorld,
        check=check_params,
        potentials={"distance": progress},
        goal_distance=distance_to_goal,
        discrete_states=True,
        ranges=RANGES,
    )
)
