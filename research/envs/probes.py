"""Probe environments (gymnax API) whose optimal values and policies are known.

Each isolates one thing a learner must get right, so a failing probe points at
the broken piece (value loss, discounting, policy gradient, ...).

| probe                       | obs        | reward                   | known answer               |
|-----------------------------|------------|--------------------------|----------------------------|
| ConstantReward-probe        | 0          | 1, episode of 1 step     | V = 1                      |
| ObsDependentReward-probe    | +1 or -1   | = obs, 1 step            | V(obs) = obs               |
| ActionDependentReward-probe | 0          | 1 if action == 1 else -1 | pi(1) -> 1, V -> 1         |
| ObsActionReward-probe       | +1 or -1   | 1 if action == (obs > 0) | pi(obs>0 given obs) -> 1   |
| TwoStepDiscount-probe       | 0 then 1   | 0 then 1, 2 steps        | V(0) = gamma, V(1) = 1     |

`AnyProbe-probe` is each of them, chosen by the traced `EnvParams.probe` (an index into
`PROBES`): one compiled program trains an agent on all five at once, one probe per run
(`+env.variants.probe=[0,1,2,3,4]`), where five env ids need five compiles.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from research.envs.registry import EnvEntry, Range, register


@struct.dataclass
class ProbeState(environment.EnvState):
    obs: jax.Array


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 10


class _Probe(environment.Environment[ProbeState, ProbeParams]):
    """One-dimensional observation, two actions, episodes of 1 or 2 steps."""

    episode_steps = 1
    random_obs = False

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams()

    def _first_obs(self, key: jax.Array) -> jax.Array:
        if self.random_obs:
            return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
        return jnp.asarray(0.0)

    def reward(self, state: ProbeState, action: jax.Array) -> jax.Array:
        raise NotImplementedError

    def reset_env(self, key: jax.Array, params: ProbeParams) -> tuple[jax.Array, ProbeState]:
        state = ProbeState(time=0, obs=self._first_obs(key))
        return state.obs[None], state

    def step_env(
        self, key: jax.Array, state: ProbeState, action: Any, params: ProbeParams
    ) -> tuple[jax.Array, ProbeState, jax.Array, jax.Array, dict]:
        reward = self.reward(state, action).astype(jnp.float32)
        time = state.time + 1
        next_obs = jnp.asarray(time, jnp.float32) if self.episode_steps > 1 else state.obs
        next_state = ProbeState(time=time, obs=next_obs)
        terminated = time >= self.episode_steps
        return next_state.obs[None], next_state, reward, terminated, {}

    def get_obs(self, state: ProbeState, params: Any = None, key: Any = None) -> jax.Array:
        return state.obs[None]

    def is_terminated(self, state: ProbeState, params: ProbeParams) -> jax.Array:
        return state.time >= self.episode_steps

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(2)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)


class ConstantReward(_Probe):
    def reward(self, state, action):
        return jnp.ones(())


class ObsDependentReward(_Probe):
    random_obs = True

    def reward(self, state, action):
        return state.obs


class ActionDependentReward(_Probe):
    def reward(self, state, action):
        return jnp.where(action == 1, 1.0, -1.0)


class ObsActionReward(_Probe):
    random_obs = True

    def reward(self, state, action):
        return jnp.where(action == (state.obs > 0), 1.0, -1.0)


class TwoStepDiscount(_Probe):
    episode_steps = 2

    def reward(self, state, action):
        return jnp.where(state.time == 1, 1.0, 0.0)


@struct.dataclass
class AnyProbeParams(ProbeParams):
    probe: int = 0  # index into PROBES


class AnyProbe(_Probe):
    """The probe `list(PROBES.values())[params.probe]`, step for step and key for key."""

    @property
    def default_params(self) -> AnyProbeParams:
        return AnyProbeParams()

    def _pick(self, params: AnyProbeParams, values: list) -> jax.Array:
        return jnp.stack([jnp.asarray(v, jnp.float32) for v in values])[params.probe]

    def _episode_steps(self, params: AnyProbeParams) -> jax.Array:
        return self._pick(params, [p.episode_steps for p in _EACH])

    def reset_env(self, key, params):
        obs = self._pick(params, [p._first_obs(key) for p in _EACH])
        state = ProbeState(time=0, obs=obs)
        return state.obs[None], state

    def step_env(self, key, state, action, params):
        reward = self._pick(params, [p.reward(state, action) for p in _EACH])
        time = state.time + 1
        steps = self._episode_steps(params)
        next_obs = jnp.where(steps > 1, jnp.asarray(time, jnp.float32), state.obs)
        next_state = ProbeState(time=time, obs=next_obs)
        return next_state.obs[None], next_state, reward, time >= steps, {}

    def is_terminated(self, state, params):
        return state.time >= self._episode_steps(params)


PROBES = {
    "ConstantReward-probe": ConstantReward,
    "ObsDependentReward-probe": ObsDependentReward,
    "ActionDependentReward-probe": ActionDependentReward,
    "ObsActionReward-probe": ObsActionReward,
    "TwoStepDiscount-probe": TwoStepDiscount,
}

_EACH = [probe() for probe in PROBES.values()]

for _env_id, _probe in PROBES.items():
    register(EnvEntry(_env_id, _probe))
_WHICH = Range(low=0, high=len(PROBES) - 1, why="an index into the five probes")
register(EnvEntry("AnyProbe-probe", AnyProbe, ranges={"probe": _WHICH}))
