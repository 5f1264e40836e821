"""This project's agents against peer libraries at identical settings, side by side.

For each R in --runs, each comparison in --compare runs this project's agent and the peer
one after the other (interleaved, so a change of machine load hits both), each in a fresh
subprocess with the same XLA_FLAGS, CPU affinity and timeout, through `scripts/benchmark.py`'s
machinery (`measure`, `write_tables`): the same columns, the same load detection, rows
marked busy where other processes kept more than 0.25 cores busy meanwhile.

Comparisons (--compare):

    ppo   ours: agent=ppo (configs/agent/ppo.yaml: 4 envs x 128 steps, 4 epochs x 4
          minibatches, 64x64 tanh actor and critic)  vs  rejax.PPO with the same numbers,
          read from the same composed config (num_envs, num_steps, num_epochs,
          num_minibatches, hidden sizes, activation, lr, gamma, gae_lambda, clip_eps,
          ent_coef, vf_coef, max_grad_norm), the same env steps per run and the same number
          of scan segments (num_logs = rejax's evaluations).
    pqn   ours: agent=dqn agent.mode=pqn agent.hidden_sizes=[64,64] (16 envs x 32 steps,
          2 epochs x 4 minibatches, LayerNorm + relu)  vs  rejax.PQN, whose Q-network is
          fixed at 64x64 LayerNorm + relu (hence our hidden_sizes override).
    sb3   stable-baselines3 PPO (torch, CPU) on gymnasium's CartPole-v1 with the same PPO
          numbers, one run (R = 1 only; it cannot batch runs): a reference figure.

What differs, and is left as each library does it: rejax uses one Adam per network and
clips gradients element-wise (optax.clip) where we clip the global norm and anneal the
learning rate; rejax's GAE does not bootstrap on truncation (ours does, from the final
observation). rejax's evaluation callback (128 greedy episodes after every segment) is
replaced by a no-op, so it does less work per segment than we do (we log training
episode returns and losses). rejax vmaps `algo.train` over R keys; with several devices
(--host-devices), its keys are sharded over them like our runs axis.

rejax 0.1.3 expects gymnax's old five-value `step`; with gymnax >= 1.0 it fails ("too many
values to unpack"). `five_value_step` below adapts an environment: a subclass whose `step`
returns `terminated | truncated` as the one done flag.

The peers are optional and conflict-prone, so install them in their own venv and run this
script with its interpreter (the project's rows then run there too, same versions):

    python3 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install jax==0.10.2 jaxlib==0.10.2 gymnax==1.0.1 -e .
    /tmp/peers-venv/bin/pip install rejax==0.1.3 torch==2.13.0 stable-baselines3 gymnasium \\
        -c <(printf 'jax==0.10.2\\njaxlib==0.10.2\\ngymnax==1.0.1\\nflax==0.12.8\\noptax==0.2.8\\n')
    /tmp/peers-venv/bin/python scripts/benchmark_peers.py --runs 1 64 1024 --name peers_cpu

Tables: <out>/<name>.csv and .md (default results/benchmarks/peers_<platform>), the
second with a section "Ours vs peer": ours / peer env-steps/s and compile times per R.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark as bench  # noqa: E402  (scripts/benchmark.py: worker, measure, tables)

# --compare name -> (our agent's label, our Hydra overrides, the peer's label)
COMPARISONS = {
    "ppo": ("ppo", ("agent=ppo", "env=cartpole"), "rejax_ppo"),
    "pqn": (
        "pqn",
        ("agent=dqn", "agent.mode=pqn", "agent.hidden_sizes=[64,64]", "env=cartpole"),
        "rejax_pqn",
    ),
    "sb3": ("ppo", ("agent=ppo", "env=cartpole"), "sb3_ppo"),
}
ORDER = ["ppo", "rejax_ppo", "sb3_ppo", "pqn", "rejax_pqn"]
PEER_OF = {peer: ours for ours, _, peer in COMPARISONS.values()}
INTRO = (
    "Each row one configuration in a fresh process: this project's agents as one batched "
    "program (`research.runner.run_batch`, built from the Hydra config with the overrides "
    "below), rejax's `jax.jit(jax.vmap(algo.train))` over R keys, stable-baselines3's "
    "`PPO.learn` (one run). Ours and the peer ran one after the other at each R.  "
)


# --------------------------------------------------------------------------- peers


def five_value_step(env):
    """A copy of gymnax environment `env` whose `step` returns gymnax's pre-1.0 five values,
    (obs, state, reward, done, info) with done = terminated | truncated: what rejax 0.1.3
    unpacks. A subclass, so rejax's deepcopy and jit (static self) treat it as the env."""
    base = type(env)

    class FiveValueStep(base):
        def step(self, key, state, action, params=None):
            obs, state, reward, terminated, truncated, info = base.step(
                self, key, state, action, params
            )
            return obs, state, reward, terminated | truncated, info

    FiveValueStep.__name__ = FiveValueStep.__qualname__ = f"FiveValueStep[{base.__name__}]"
    adapted = FiveValueStep.__new__(FiveValueStep)
    adapted.__dict__.update(env.__dict__)
    return adapted


def rejax_algo(peer: str, p, steps_per_run: int):
    """The rejax algorithm with the numbers of prepared program `p` (ours), evaluation off."""
    import gymnax
    import rejax

    config, h = p.config.agent.config, p.config.agent.hparams
    env, env_params = gymnax.make(p.config.env.id)
    common = dict(
        env=five_value_step(env),
        env_params=env_params,
        total_timesteps=steps_per_run,
        eval_freq=steps_per_run // p.trainer.num_logs,
        skip_initial_evaluation=True,
        num_envs=config.num_envs,
        num_steps=config.num_steps,
        num_epochs=config.num_epochs,
        num_minibatches=config.num_minibatches,
        learning_rate=h.lr,
        gamma=h.gamma,
        max_grad_norm=h.max_grad_norm,
    )
    if peer == "rejax_ppo":
        algo = rejax.PPO.create(
            **common,
            gae_lambda=h.gae_lambda,
            clip_eps=h.clip_eps,
            ent_coef=h.ent_coef,
            vf_coef=h.vf_coef,
            agent_kwargs={
                "activation": config.activation,
                "hidden_layer_sizes": tuple(config.hidden_sizes),
            },
        )
    else:
        net = (tuple(config.hidden_sizes), config.activation, config.layer_norm)
        if net != ((64, 64), "relu", True):
            raise SystemExit(
                f"rejax.PQN's network is fixed at 64x64 LayerNorm + relu; ours is "
                f"{net}: add agent.hidden_sizes=[64,64]"
            )
        algo = rejax.PQN.create(
            **common,
            td_lambda=h.q_lambda,
            eps_start=h.epsilon_start,
            eps_end=h.epsilon_end,
            exploration_fraction=h.epsilon_fraction,
        )
    # Evaluation off: the 128 greedy episodes after every segment are not training work.
    return algo.replace(eval_callback=lambda algo, ts, rng: ())


def rejax_worker(
    peer: str,
    runs: int,
    total_timesteps: int,
    num_logs: int,
    num_devices: int | None,
    overrides: list[str],
) -> dict:
    """R rejax runs at the settings of our program for `overrides`; one result row."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from research.results import peak_memory

    p = bench.prepared(runs, total_timesteps, num_logs, num_devices, overrides)
    steps_per_run = p.trainer.steps_per_segment * p.trainer.num_logs
    algo = rejax_algo(peer, p, steps_per_run)
    keys = jax.random.split(jax.random.key(0), runs)
    devices = list(p.devices)[:runs]
    if len(devices) > 1 and runs % len(devices) == 0:  # shard the runs like our runner does
        keys = jax.device_put(
            keys, NamedSharding(Mesh(np.array(devices), ("runs",)), PartitionSpec("runs"))
        )
    else:
        devices = devices[:1]
    started = time.perf_counter()
    compiled = jax.jit(jax.vmap(algo.train)).lower(keys).compile()
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    states, _ = jax.device_get(compiled(keys))  # to the host, as run_batch does
    run_s = time.perf_counter() - started
    done = np.asarray(states.global_step)
    if not (done == steps_per_run).all():
        raise SystemExit(
            f"rejax ran {sorted(set(done.tolist()))} env steps per run, expected {steps_per_run}"
        )
    stats = compiled.memory_analysis()
    program = (
        None
        if stats is None
        else (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes)
    )
    fields = (
        "num_envs",
        "num_steps",
        "num_epochs",
        "num_minibatches",
        "learning_rate",
        "gamma",
        "max_grad_norm",
        "gae_lambda",
        "clip_eps",
        "ent_coef",
        "vf_coef",
        "td_lambda",
        "eps_start",
        "eps_end",
        "exploration_fraction",
    )
    net = algo.actor.hidden_layer_sizes if peer == "rejax_ppo" else "(64, 64) LayerNorm relu"
    settings = [f"{k}={getattr(algo, k)}" for k in fields if hasattr(algo, k)]
    import importlib.metadata as metadata

    rate = runs * steps_per_run / run_s
    return {
        "device": bench._device_name(jax),
        "platform": devices[0].platform,
        "num_devices": len(devices),
        "runs": runs,
        "env_id": p.config.env.id,
        "agent_settings": f"rejax {metadata.version('rejax')}: "
        + ", ".join(settings)
        + f", hidden={net}, eval off",
        "env_steps_per_run": steps_per_run,
        "num_updates": p.num_updates,
        "num_logs": p.trainer.num_logs,
        "chunk_size": runs,
        "num_chunks": 1,
        "env_steps_per_s": rate,
        "env_steps_per_s_per_run": rate / runs,
        "compile_s": compile_s,
        "run_s": run_s,
        "program_mib": None if program is None else program / 2**20,
        **peak_memory(devices),
        "state_kib_per_run": bench.tree_bytes(jax.tree.map(lambda x: x[0], states)) / 2**10,
        "final_return": None,
        "cpu_s": time.process_time(),
        "jax": jax.__version__,
    }


def sb3_worker(total_timesteps: int, overrides: list[str]) -> dict:
    """One stable-baselines3 PPO run on gymnasium's CartPole-v1 with our PPO's numbers."""
    import importlib.metadata as metadata

    import jax
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from research.results import peak_memory

    p = bench.prepared(1, total_timesteps, 1, None, overrides)
    config, h = p.config.agent.config, p.config.agent.hparams
    batch = config.num_envs * config.num_steps
    started = time.perf_counter()
    env = make_vec_env(p.config.env.id, n_envs=config.num_envs, seed=0)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=config.num_steps,
        batch_size=batch // config.num_minibatches,
        n_epochs=config.num_epochs,
        learning_rate=h.lr,
        gamma=h.gamma,
        gae_lambda=h.gae_lambda,
        clip_range=h.clip_eps,
        ent_coef=h.ent_coef,
        vf_coef=h.vf_coef,
        max_grad_norm=h.max_grad_norm,
        seed=0,
        device="cpu",
        policy_kwargs={
            "net_arch": list(config.hidden_sizes),
            "activation_fn": {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[config.activation],
        },
    )
    setup_s = time.perf_counter() - started
    steps = max(total_timesteps // batch, 1) * batch
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    run_s = time.perf_counter() - started
    returns = [info["r"] for info in model.ep_info_buffer]
    rate = model.num_timesteps / run_s
    return {
        "device": bench._device_name(jax),
        "platform": "cpu",
        "num_devices": 1,
        "runs": 1,
        "env_id": f"{p.config.env.id} (gymnasium)",
        "agent_settings": f"stable-baselines3 {metadata.version('stable-baselines3')}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads): n_envs={config.num_envs} "
        f"(DummyVecEnv), n_steps={config.num_steps}, n_epochs={config.num_epochs}, "
        f"batch_size={batch // config.num_minibatches}, net_arch={list(config.hidden_sizes)}, "
        f"activation={config.activation}; setup {setup_s:.1f} s",
        "env_steps_per_run": model.num_timesteps,
        "num_updates": model.num_timesteps // batch,
        "num_logs": None,
        "chunk_size": 1,
        "num_chunks": 1,
        "env_steps_per_s": rate,
        "env_steps_per_s_per_run": rate,
        "compile_s": None,
        "run_s": run_s,
        "program_mib": None,
        **peak_memory(),
        "final_return": float(np.mean(returns[-20:])) if returns else None,
        "cpu_s": time.process_time(),
        "jax": None,
    }


# --------------------------------------------------------------------------- tables


def comparison(frame) -> list[str]:
    """Markdown lines: ours / peer env-steps/s and compile time at each setting and R."""
    ok = frame[frame["status"] == "ok"]
    lines = [
        "",
        "## Ours vs peer",
        "",
        "ratio = ours / peer env-steps/s (> 1: ours faster); compile ratio = ours / peer "
        "compile s (< 1: ours compiles faster). *busy*: either row ran under load.",
        "",
        "| ours | peer | setting | R | ours env-steps/s | peer env-steps/s | ratio "
        "| ours compile s | peer compile s | compile ratio | other load ours / peer |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for peer_row in ok[ok["agent"].isin(list(PEER_OF))].to_dict("records"):
        ours_label = PEER_OF[peer_row["agent"]]
        match = ok[
            (ok["agent"] == ours_label)
            & (ok["setting"] == peer_row["setting"])
            & (ok["runs"] == peer_row["runs"])
            & (ok["env"] == peer_row["env"])
        ]
        if not len(match):
            continue
        ours = match.iloc[0]
        num = lambda row, k: None if row[k] is None or row[k] != row[k] else float(row[k])
        ratio = lambda a, b: "-" if a is None or b is None else f"{a / b:.2f}x"
        loads = [num(ours, "other_load"), num(peer_row, "other_load")]
        busy = " *busy*" if any(bench.is_busy(x) for x in loads) else ""
        lines.append(
            f"| {ours_label} | {peer_row['agent']} | {peer_row['setting']} "
            f"| {int(peer_row['runs'])} | {bench.fmt(num(ours, 'env_steps_per_s'), 0)} "
            f"| {bench.fmt(num(peer_row, 'env_steps_per_s'), 0)} "
            f"| {ratio(num(ours, 'env_steps_per_s'), num(peer_row, 'env_steps_per_s'))} "
            f"| {bench.fmt(num(ours, 'compile_s'), 1)} "
            f"| {bench.fmt(num(peer_row, 'compile_s'), 1)} "
            f"| {ratio(num(ours, 'compile_s'), num(peer_row, 'compile_s'))} "
            f"| {' / '.join(bench.fmt(x, 2) for x in loads)}{busy} |"
        )
    return lines


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        default=["ppo", "pqn", "sb3"],
        choices=list(COMPARISONS),
        help="comparisons to run at every R (default: ppo pqn sb3; sb3 only at R = 1)",
    )
    parser.add_argument(
        "--sb3-timesteps",
        type=int,
        default=20_480,
        help="env steps of the stable-baselines3 run (default: 20480)",
    )
    bench.add_common_arguments(
        parser, [1, 64], 51_200, "file stem of the CSV / markdown (default: peers_<platform>)"
    )
    parser.add_argument("--_peer", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._probe:
        print(json.dumps(bench.probe()))
        return 0
    if args._worker:
        overrides = json.loads(args._overrides)
        if args._peer == "sb3_ppo":
            row = sb3_worker(args.total_timesteps, overrides)
        else:
            row = rejax_worker(
                args._peer,
                args.runs[0],
                args.total_timesteps,
                args.num_logs,
                args.num_devices,
                overrides,
            )
        print(json.dumps(row))
        return 0

    session = bench.start_session(args, argv, "scripts/benchmark_peers.py")
    name = args.name or f"peers_{session.info['platform']}"
    rows = []
    for runs in args.runs:
        for what in args.compare:
            ours, overrides, peer = COMPARISONS[what]
            overrides = list(overrides)
            if what == "sb3":
                if runs != 1:
                    continue
                steps = args.sb3_timesteps
                jobs = [
                    (
                        peer,
                        steps,
                        [
                            "--_worker",
                            "--_peer",
                            peer,
                            "--total-timesteps",
                            str(steps),
                            "--_overrides",
                            json.dumps(overrides),
                        ],
                        __file__,
                    )
                ]
            else:
                steps, payload = bench.ours_payload(args, runs, overrides)
                jobs = [
                    (ours, steps, payload, bench.__file__),
                    (peer, steps, [*payload, "--_peer", peer], __file__),
                ]
            for label, steps, payload, script in jobs:
                if label == ours and any(r["agent"] == ours and r["runs"] == runs for r in rows):
                    continue  # ours already measured at this R (ppo vs rejax and vs sb3)
                rows.append(
                    bench.measure(
                        args,
                        session,
                        label,
                        runs,
                        steps,
                        payload,
                        script,
                        agent=label,
                        env="cartpole",
                        overrides=" ".join(overrides),
                    )
                )
                path = bench.write_tables(
                    rows,
                    args.out,
                    name,
                    args.append,
                    session.info["device"],
                    order=ORDER,
                    intro=INTRO,
                    extra=comparison,
                )
    print(f"-> {path} and {path.with_suffix('.md')}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
