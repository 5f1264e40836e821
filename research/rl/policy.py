"""What the policy-gradient agents (PPO, REINFORCE) share: an ActorCritic network behind
optional observation normalisation, its initialisation, and acting with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from research.envs import EnvSpec
from research.rl.networks import ActorCritic, init_params
from research.rl.normalization import RunningMeanStd


@dataclass(frozen=True)
class Policy:
    """An ActorCritic whose inputs are normalised by running statistics when `normalize_obs`."""

    network: ActorCritic
    normalize_obs: bool

    @classmethod
    def create(cls, spec: EnvSpec, config: Any) -> Policy:
        """From an agent config with hidden_sizes, activation and normalize_obs."""
        return cls(ActorCritic(spec, config.hidden_sizes, config.activation), config.normalize_obs)

    def init(self, key: jax.Array, init_log_std: jax.Array) -> tuple[Any, RunningMeanStd]:
        """(params, empty observation statistics); init_log_std shifts a Gaussian's log_std."""
        spec = self.network.spec
        params = init_params(self.network, key, jnp.zeros((1, *spec.obs_shape)))
        if not spec.discrete:
            params["params"]["log_std"] = params["params"]["log_std"] + init_log_std
        return params, RunningMeanStd.create(spec.obs_shape)

    def observe(self, obs_stats: RunningMeanStd, obs: jax.Array) -> jax.Array:
        """What the network sees of obs [..., *obs_shape]."""
        return obs_stats.normalize(obs) if self.normalize_obs else obs

    def act(
        self, params: Any, obs_stats: RunningMeanStd, obs: jax.Array, key: jax.Array, explore: bool
    ) -> tuple[jax.Array, dict]:
        """A sampled (explore) or modal action for obs [N, ...], with its log-prob and V(obs)."""
        dist, value = self.network.apply(params, self.observe(obs_stats, obs))
        action = dist.sample(key) if explore else dist.mode()
        return action, {"log_prob": dist.log_prob(action), "value": value}

    def value(self, params: Any, obs_stats: RunningMeanStd, obs: jax.Array) -> jax.Array:
        """The critic's V(obs) [...] for obs [..., *obs_shape]."""
        return self.network.apply(params, self.observe(obs_stats, obs))[1]

    def update_stats(self, obs_stats: RunningMeanStd, obs: jax.Array) -> RunningMeanStd:
        """Merges a batch obs [..., *obs_shape]. Call after the update, so that acting and
        learning on this batch saw the same normalisation."""
        return obs_stats.update(obs) if self.normalize_obs else obs_stats


def standardize(x: jax.Array) -> jax.Array:
    """x (e.g. advantages [B]) to zero mean and unit std over all its elements."""
    return (x - x.mean()) / (x.std() + 1e-8)


def actor_critic_objective(
    policy_loss: jax.Array,
    value_loss: jax.Array,
    entropy: jax.Array,
    vf_coef: jax.Array,
    ent_coef: jax.Array,
) -> tuple[jax.Array, dict]:
    """policy_loss + vf_coef * value_loss - ent_coef * entropy, with its parts as metrics."""
    total = policy_loss + vf_coef * value_loss - ent_coef * entropy
    return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}
