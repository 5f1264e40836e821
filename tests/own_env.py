"""A user's own environment and potential, defined outside research/ and registered on import.

What docs/environments.md ("Your own environment") describes: `import_modules=[tests.own_env]`
on the command line imports this module, whose `register` call makes `LineWalk-own` an env.id
with its own progress potential and goal distance.

LineWalk-own: cells 0 .. size - 1 on a line, the agent starts in cell 0 and moves left
or right (actions 0, 1; the ends are walls). Reaching the last cell pays goal_reward and
terminates; every other step pays step_reward. The observation [1] is the cell / (size - 1),
a float in [0, 1], so the agent sees continuous observations (not a tabular env).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from research.envs import EnvEntry, register

ENV_ID = "LineWalk-own"


@struct.dataclass
class LineWalkState(environment.EnvState):
    cell: jax.Array


@struct.dataclass
class LineWalkParams(environment.EnvParams):
    size: int = 6
    step_reward: float = 0.0
    goal_reward: float = 1.0
    max_steps_in_episode: int = 30


class LineWalk(environment.Environment[LineWalkState, LineWalkParams]):
    """A walk to the right end of a line: the smallest sparse-reward task shaping helps."""

    @property
    def default_params(self) -> LineWalkParams:
        return LineWalkParams()

    def step_env(
        self, key: jax.Array, state: LineWalkState, action: Any, params: LineWalkParams
    ) -> tuple[jax.Array, LineWalkState, jax.Array, jax.Array, dict]:
        cell = jnp.clip(state.cell + 2 * action - 1, 0, params.size - 1)
        next_state = LineWalkState(time=state.time + 1, cell=cell)
        at_goal = self.is_terminated(next_state, params)
        reward = jnp.where(at_goal, params.goal_reward, params.step_reward).astype(jnp.float32)
        return self.get_obs(next_state, params), next_state, reward, at_goal, {}

    def reset_env(self, key: jax.Array, params: LineWalkParams) -> tuple[jax.Array, LineWalkState]:
        state = LineWalkState(time=0, cell=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def get_obs(self, state: LineWalkState, params: Any = None, key: Any = None) -> jax.Array:
        size = (params or self.default_params).size
        return (state.cell / (size - 1)).astype(jnp.float32)[None]

    def is_terminated(self, state: LineWalkState, params: LineWalkParams) -> jax.Array:
        return state.cell == params.size - 1

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(2)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (1,), jnp.float32)


def closeness(obs: jax.Array, params: LineWalkParams) -> jax.Array:
    """Progress potential: fraction of the way - 1, so 0 at the goal and -1 at the start."""
    return obs[..., 0] - 1.0


def cells_to_goal(obs: jax.Array, params: LineWalkParams) -> jax.Array:
    """Goal distance in cells, for the bonus shaping."""
    return (1.0 - obs[..., 0]) * (params.size - 1)


def check_params(params: LineWalkParams) -> tuple[str, str] | None:
    """A line of one cell would start on the goal."""
    return ("size", "an int with 2 <= x") if params.size < 2 else None


register(
    EnvEntry(
        ENV_ID,
        LineWalk,
        check=check_params,
        potentials={"closeness": closeness},
        goal_distance=cells_to_goal,
    )
)
