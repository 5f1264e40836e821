"""Env throughput: env-steps/s of a uniformly random policy, N envs stepped as one jitted,
vmapped program through the project's own wrapper (`research.envs.Env`: auto-reset and
episode statistics included, as training sees it), no learner. What an env costs by itself,
against which an agent's env-steps/s (scripts/benchmark.py) can be read.

Each (env, N) is compiled once, run once to warm up, then timed `repeats` times on fresh keys;
the row keeps the best (least disturbed by neighbours) and the median, and the cores other
processes kept busy meanwhile (research.bench.load), so a busy row can be told apart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.bench.load import busy_cpu_seconds, is_busy
from research.envs import Env
from research.rl.rollout import reset_envs


def random_actions(env: Env, key: jax.Array, num_envs: int) -> jax.Array:
    """Uniform actions [N] (discrete) or [N, action_dim] within the action bounds."""
    spec = env.spec
    if spec.discrete:
        return jax.random.randint(key, (num_envs,), 0, spec.num_actions)
    low, high = jnp.asarray(spec.action_low), jnp.asarray(spec.action_high)
    return jax.random.uniform(key, (num_envs, spec.action_dim), minval=low, maxval=high)


def make_random_rollout(env: Env, num_envs: int, num_steps: int):
    """rollout(key) -> the sum of rewards []: num_steps steps of num_envs envs (reset
    included) under random actions; the sum keeps XLA from dropping the work."""
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def rollout(key):
        reset_key, run_key = jax.random.split(key)
        _, state = reset_envs(env, reset_key, env.default_params, num_envs)

        def one(carry, k):
            state, total = carry
            keys = jax.random.split(k, num_envs + 1)
            actions = random_actions(env, keys[0], num_envs)
            state, ts = step(keys[1:], state, actions, env.default_params)
            return (state, total + ts.reward.sum()), None

        (_, total), _ = jax.lax.scan(one, (state, 0.0), jax.random.split(run_key, num_steps))
        return total

    return jax.jit(rollout)


def measure_env(env_id: str, num_envs: int, num_steps: int, repeats: int = 3) -> dict:
    """One row: env-steps/s (best and median of `repeats` timed calls), compile seconds and
    the other processes' load (cores) while timing."""
    env = Env(env_id)
    rollout = make_random_rollout(env, num_envs, num_steps)
    start = time.perf_counter()
    rollout(jax.random.key(0)).block_until_ready()  # compile + first run
    compile_s = time.perf_counter() - start
    times, busy0, cpu0 = [], busy_cpu_seconds(), time.process_time()
    wall0 = time.perf_counter()
    for i in range(repeats):
        t = time.perf_counter()
        rollout(jax.random.key(i + 1)).block_until_ready()
        times.append(time.perf_counter() - t)
    wall, own = time.perf_counter() - wall0, time.process_time() - cpu0
    busy1 = busy_cpu_seconds()
    other = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0 - own) / wall)
    steps = num_envs * num_steps
    return {
        "env": env_id,
        "num_envs": num_envs,
        "steps_per_call": steps,
        "env_steps_per_s": steps / min(times),
        "env_steps_per_s_median": steps / float(np.median(times)),
        "compile_and_first_s": compile_s,
        "other_load": other,
    }


def measure_envs(
    env_ids: Sequence[str], num_envs: Sequence[int], steps_per_call: int, repeats: int = 3
) -> list[dict]:
    """Rows for every env x N; each call steps about steps_per_call env-steps in all (at
    least 8 steps per env), so that small and large batches are timed for similar work."""
    rows = []
    for env_id in env_ids:
        for n in num_envs:
            row = measure_env(env_id, n, max(8, steps_per_call // n), repeats)
            print(
                f"{env_id:>22} N={n:>6}: {row['env_steps_per_s']:>12,.0f} env-steps/s "
                f"(median {row['env_steps_per_s_median']:,.0f}; compile + first "
                f"{row['compile_and_first_s']:.1f} s; other load {row['other_load'] or 0:.2f})",
                flush=True,
            )
            rows.append(row)
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """The rows as a markdown table; rows measured under load (research.bench.load) marked."""
    lines = [
        "| env | envs | env-steps/s (best) | median | compile + first call s | other load |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        load = r["other_load"]
        mark = " (busy)" if is_busy(load) else ""
        lines.append(
            f"| {r['env']} | {r['num_envs']:,} | {r['env_steps_per_s']:,.0f} | "
            f"{r['env_steps_per_s_median']:,.0f} | {r['compile_and_first_s']:.1f} | "
            f"{'n/a' if load is None else f'{load:.2f}'}{mark} |"
        )
    return "\n".join(lines) + "\n"
