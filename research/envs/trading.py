"""Trading one asset in a volatile market (gymnax API), with transaction costs.

Price process, simulated inside the env from its key: log returns per step

    r_t = drift[regime_t] + vol[regime_t] * z_t + sum of N_t jumps,   z_t ~ N(0, 1),
    N_t ~ Poisson(jump_rate) (jump_rate <= 1; counts above MAX_JUMPS = 8 are drawn as 8),
    each jump ~ N(jump_mean, jump_std^2),

where the hidden regime (calm or volatile) is a two-state Markov chain that switches
with probability p_calm_to_volatile / p_volatile_to_calm after each step, and starts
from its stationary distribution. So, per step and in the stationary chain,

    E[r]   = (1 - pi) drift_calm + pi drift_volatile + jump_rate jump_mean,
    Var[r] = (1 - pi) vol_calm^2 + pi vol_volatile^2 + pi (1 - pi) (drift_volatile - drift_calm)^2
             + jump_rate (jump_std^2 + jump_mean^2),
    pi = p_calm_to_volatile / (p_calm_to_volatile + p_volatile_to_calm)

(`log_return_moments`). Actions: 0 sell, 1 hold, 2 buy `trade_size` units at the current
price, the position clipped to +-max_position (only what is traded costs: a buy at the
limit is no trade and costs nothing). A trade of q units at price P costs
cost_rate * |q| * P + fixed_cost, paid in cash. Reward = change in portfolio value
(cash + position * price) over the step, costs included: position' * (P' - P) - cost.
Episodes start flat with initial_cash at initial_price and are only truncated (a trading
horizon of max_steps_in_episode).

Observation [WINDOW + 2]: the last WINDOW log returns and an exponentially weighted
volatility estimate (decay vol_decay), both in percent, and position / max_position.
At reset the returns window is filled by simulating WINDOW steps before the start.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from research.envs.registry import NONNEGATIVE, POSITIVE, PROBABILITY, EnvEntry, register

WINDOW = 8  # past log returns in the observation (static: it sets the observation shape)
MAX_JUMPS = 8  # a larger jump count is drawn as 8: P(N > 8) < 1.1e-6 at jump_rate <= 1
PERCENT = 100.0  # returns are observed in percent so that the network sees O(1) inputs


@struct.dataclass
class TradingState(environment.EnvState):
    price: jax.Array  # []
    position: jax.Array  # [] units held (negative: short)
    cash: jax.Array  # []
    volatile: jax.Array  # [] bool: the hidden regime of the next step
    returns: jax.Array  # [WINDOW] last log returns, newest last
    variance: jax.Array  # [] EWMA of squared log returns


@struct.dataclass
class TradingParams(environment.EnvParams):
    drift_calm: float = 5e-4  # mean log return per step, calm regime
    drift_volatile: float = -2e-3  # mean log return per step, volatile regime
    vol_calm: float = 0.01  # std of the diffusion part of a log return, calm regime
    vol_volatile: float = 0.03
    p_calm_to_volatile: float = 0.01  # regime switch probabilities per step
    p_volatile_to_calm: float = 0.05
    jump_rate: float = 0.01  # expected jumps per step (Poisson)
    jump_mean: float = -0.02  # mean log jump
    jump_std: float = 0.03
    cost_rate: float = 1e-3  # proportional cost: fraction of the traded notional
    fixed_cost: float = 0.0  # per trade
    trade_size: float = 1.0  # units per buy / sell
    max_position: float = 1.0  # |position| <= max_position
    initial_price: float = 100.0
    initial_cash: float = 100.0
    vol_decay: float = 0.9  # EWMA decay of the observed volatility estimate
    max_steps_in_episode: int = 200


# Drifts and the mean jump are free (rising and falling markets). Probabilities, the
# EWMA decay and the jump rate (jump_count draws at most MAX_JUMPS, exact for rate <= 1)
# lie in [0, 1]; scales and costs are >= 0; sizes, limits, the price and the cash that
# divide (position / max_position, the drawdown's peak) are > 0.
RANGES = {
    **{
        name: PROBABILITY
        for name in ("p_calm_to_volatile", "p_volatile_to_calm", "vol_decay", "jump_rate")
    },
    **{
        name: NONNEGATIVE
        for name in ("vol_calm", "vol_volatile", "jump_std", "cost_rate", "fixed_cost")
    },
    **{name: POSITIVE for name in ("trade_size", "max_position", "initial_price", "initial_cash")},
}


def volatile_probability(params: TradingParams) -> jax.Array:
    """Stationary probability [] of the volatile regime (0 when the chain never switches)."""
    total = params.p_calm_to_volatile + params.p_volatile_to_calm
    return jnp.where(total > 0, params.p_calm_to_volatile / jnp.maximum(total, 1e-12), 0.0)


def log_return_moments(params: TradingParams) -> tuple[jax.Array, jax.Array]:
    """(mean, variance) [] of one stationary log return (see the module docstring)."""
    pi = volatile_probability(params)
    mean = (
        (1 - pi) * params.drift_calm
        + pi * params.drift_volatile
        + params.jump_rate * params.jump_mean
    )
    var = (
        (1 - pi) * params.vol_calm**2
        + pi * params.vol_volatile**2
        + pi * (1 - pi) * (params.drift_volatile - params.drift_calm) ** 2
        + params.jump_rate * (params.jump_std**2 + params.jump_mean**2)
    )
    return mean, var


def jump_count(key: jax.Array, rate: jax.Array) -> jax.Array:
    """A Poisson(rate) draw [] float32 by inverting its CDF over 0..MAX_JUMPS.

    jax.random.poisson's rejection loop, run by every env at every step (and by each
    auto-reset's history), halved the training speed; rate <= 1 is checked.
    """
    k = jnp.arange(MAX_JUMPS, dtype=jnp.float32)
    # P(N = k) = exp(-rate) rate^k / k!, as a cumulative product of rate / k
    pmf = jnp.exp(-rate) * jnp.cumprod(jnp.where(k > 0, rate / jnp.maximum(k, 1.0), 1.0))
    return jnp.sum(jax.random.uniform(key) > jnp.cumsum(pmf)).astype(jnp.float32)


def log_return(
    key: jax.Array, volatile: jax.Array, params: TradingParams
) -> tuple[jax.Array, jax.Array]:
    """One step of the price process: (log return [], regime of the next step [] bool)."""
    k_diffusion, k_count, k_jump, k_switch = jax.random.split(key, 4)
    drift = jnp.where(volatile, params.drift_volatile, params.drift_calm)
    vol = jnp.where(volatile, params.vol_volatile, params.vol_calm)
    count = jump_count(k_count, params.jump_rate)
    # The sum of `count` normal jumps, drawn as one normal with the summed mean and variance.
    jumps = count * params.jump_mean + jnp.sqrt(count) * params.jump_std * jax.random.normal(k_jump)
    r = drift + vol * jax.random.normal(k_diffusion) + jumps
    switch = jnp.where(volatile, params.p_volatile_to_calm, params.p_calm_to_volatile)
    return r, jnp.logical_xor(volatile, jax.random.bernoulli(k_switch, switch))


def portfolio_value(state: TradingState) -> jax.Array:
    """Cash plus the position marked at the current price, []."""
    return state.cash + state.position * state.price


def trade_cost(traded: jax.Array, price: jax.Array, params: TradingParams) -> jax.Array:
    """Cost [] of trading `traded` units (either sign) at `price`; nothing when no trade."""
    return params.cost_rate * jnp.abs(traded) * price + params.fixed_cost * (traded != 0)


def max_drawdown(rewards: jax.Array, params: TradingParams) -> jax.Array:
    """Largest fall of the portfolio value from its running peak, as a fraction of that peak.

    rewards: [T] one episode's rewards from its start (zeros after it ended); the values are
    initial_cash + cumsum(rewards), since every episode starts flat with initial_cash.
    """
    values = params.initial_cash + jnp.concatenate([jnp.zeros(1), jnp.cumsum(rewards)])
    peak = jax.lax.cummax(values)
    return jnp.max((peak - values) / peak)


def _observe(
    returns: jax.Array, variance: jax.Array, position: jax.Array, params: TradingParams
) -> jax.Array:
    return jnp.concatenate(
        [
            PERCENT * returns,
            PERCENT * jnp.sqrt(variance)[None],
            (position / params.max_position)[None],
        ]
    ).astype(jnp.float32)


def _record(
    returns: jax.Array, variance: jax.Array, r: jax.Array, params: TradingParams
) -> tuple[jax.Array, jax.Array]:
    """The returns window and volatility estimate after observing log return r."""
    variance = params.vol_decay * variance + (1 - params.vol_decay) * r**2
    return jnp.concatenate([returns[1:], r[None]]), variance


class Trading(environment.Environment[TradingState, TradingParams]):
    """One asset, three actions (sell, hold, buy), proportional and fixed costs."""

    @property
    def default_params(self) -> TradingParams:
        return TradingParams()

    def step_env(
        self, key: jax.Array, state: TradingState, action: Any, params: TradingParams
    ) -> tuple[jax.Array, TradingState, jax.Array, jax.Array, dict]:
        wanted = state.position + (jnp.asarray(action, jnp.float32) - 1.0) * params.trade_size
        position = jnp.clip(wanted, -params.max_position, params.max_position)
        traded = position - state.position
        cost = trade_cost(traded, state.price, params)
        r, volatile = log_return(key, state.volatile, params)
        price = state.price * jnp.exp(r)
        returns, variance = _record(state.returns, state.variance, r, params)
        next_state = TradingState(
            time=state.time + 1,
            price=price,
            position=position,
            cash=state.cash - traded * state.price - cost,
            volatile=volatile,
            returns=returns,
            variance=variance,
        )
        # = value' - value, written so that float32 does not cancel two large values
        reward = position * (price - state.price) - cost
        return (
            self.get_obs(next_state, params),
            next_state,
            reward.astype(jnp.float32),
            jnp.asarray(False),
            {},
        )

    def reset_env(self, key: jax.Array, params: TradingParams) -> tuple[jax.Array, TradingState]:
        k_regime, k_history = jax.random.split(key)
        volatile = jax.random.bernoulli(k_regime, volatile_probability(params))

        def history(carry, k):
            volatile, returns, variance = carry
            r, volatile = log_return(k, volatile, params)
            return (volatile, *_record(returns, variance, r, params)), None

        start = (volatile, jnp.zeros(WINDOW), jnp.asarray(params.vol_calm**2, jnp.float32))
        (volatile, returns, variance), _ = jax.lax.scan(
            history, start, jax.random.split(k_history, WINDOW)
        )
        state = TradingState(
            time=0,
            price=jnp.asarray(params.initial_price, jnp.float32),
            position=jnp.zeros(()),
            cash=jnp.asarray(params.initial_cash, jnp.float32),
            volatile=volatile,
            returns=returns,
            variance=variance,
        )
        return self.get_obs(state, params), state

    def get_obs(self, state: TradingState, params: Any = None, key: Any = None) -> jax.Array:
        return _observe(
            state.returns, state.variance, state.position, params or self.default_params
        )

    def is_terminated(self, state: TradingState, params: TradingParams) -> jax.Array:
        return jnp.asarray(False)

    @property
    def num_actions(self) -> int:
        return 3

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(3)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (WINDOW + 2,), jnp.float32)


register(
    EnvEntry("Trading-v0", Trading, episode_metrics={"max_drawdown": max_drawdown}, ranges=RANGES)
)
