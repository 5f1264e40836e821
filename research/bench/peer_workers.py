"""The peer libraries' side of the comparison (research.bench.peers), run in the worker
process: rejax's PPO and PQN and PureJaxRL's PPO vmapped over R keys, and one
stable-baselines3 PPO run, each at the numbers of this project's program for the same
overrides, so that the settings cannot drift apart. rejax, stable-baselines3, torch and a
PureJaxRL checkout are imported only here, and only when a peer is measured: the project
itself does not depend on them."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
import types
from pathlib import Path

from research.bench.program import device_name, prepared, tree_bytes


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


# PureJaxRL's wrappers.py imports brax and navix at the top for wrappers ppo.py never uses.
STUBBED = ("brax", "brax.envs", "brax.envs.wrappers", "brax.envs.wrappers.training", "navix")


def purejaxrl_files(directory) -> tuple[Path, Path]:
    """(ppo.py, wrappers.py) of a PureJaxRL checkout; ValueError naming what is missing."""
    root = Path(directory) / "purejaxrl"
    files = root / "ppo.py", root / "wrappers.py"
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"{directory}: not a PureJaxRL checkout (no {', '.join(missing)})")
    return files


class _Unused:
    """What a stubbed brax / navix name is bound to: fails loudly if ever used."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("stubbed for the PureJaxRL benchmark peer: brax / navix not installed")


@contextlib.contextmanager
def _import_scope(names: tuple[str, ...]):
    """Restores sys.modules' entries for `names` on exit (the stubs and PureJaxRL's bare
    `wrappers` module do not outlive the import)."""
    saved = {n: sys.modules.get(n) for n in names}
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _stub_modules() -> None:
    for name in STUBBED:
        module = types.ModuleType(name)
        module.__getattr__ = lambda attr: _Unused
        sys.modules[name] = module


def five_value_gymnax():
    """A stand-in for the `gymnax` module PureJaxRL's ppo.py calls: `make` returns
    gymnax's environment adapted to the pre-1.0 five-value step (`five_value_step`)."""
    import gymnax

    module = types.ModuleType("gymnax_five_value_step")

    def make(env_id, **kwargs):
        env, env_params = gymnax.make(env_id, **kwargs)
        return five_value_step(env), env_params

    module.make = make
    return module


def load_purejaxrl(directory):
    """PureJaxRL's unmodified purejaxrl/ppo.py from the checkout at `directory`, as a module:
    imported with its unused brax / navix imports stubbed and its `wrappers` module from the
    same folder, then its `gymnax` global replaced by `five_value_gymnax()` (the only two
    adaptations). sys.modules is left as it was, the module itself included."""
    ppo, wrappers = purejaxrl_files(directory)
    with _import_scope((*STUBBED, "wrappers")):
        _stub_modules()
        loaded = {}
        for name, path in (("wrappers", wrappers), ("purejaxrl_ppo", ppo)):
            spec = importlib.util.spec_from_file_location(name, path)
            loaded[name] = importlib.util.module_from_spec(spec)
            sys.modules["wrappers"] = loaded["wrappers"]  # ppo.py: `from wrappers import ...`
            spec.loader.exec_module(loaded[name])
    module = loaded["purejaxrl_ppo"]
    module.gymnax = five_value_gymnax()
    return module


def purejaxrl_config(p, steps_per_run: int) -> dict:
    """PureJaxRL's ppo.py config (its __main__ block's keys) with the numbers of prepared
    program `p` (ours): the same env steps per run, hence the same number of updates."""
    config, h = p.config.agent.config, p.config.agent.hparams
    return {
        "LR": h.lr,
        "NUM_ENVS": config.num_envs,
        "NUM_STEPS": config.num_steps,
        "TOTAL_TIMESTEPS": steps_per_run,
        "UPDATE_EPOCHS": config.num_epochs,
        "NUM_MINIBATCHES": config.num_minibatches,
        "GAMMA": h.gamma,
        "GAE_LAMBDA": h.gae_lambda,
        "CLIP_EPS": h.clip_eps,
        "ENT_COEF": h.ent_coef,
        "VF_COEF": h.vf_coef,
        "MAX_GRAD_NORM": h.max_grad_norm,
        "ACTIVATION": config.activation,
        "ENV_NAME": p.config.env.id,
        "ANNEAL_LR": config.anneal_lr,
        "DEBUG": False,  # its per-update print callback is not training work
    }


def check_purejaxrl_settings(p) -> None:
    """PureJaxRL's ActorCritic is fixed at 64x64 with no observation normalisation or
    LayerNorm: SystemExit where ours is configured otherwise."""
    config = p.config.agent.config
    net = (tuple(config.hidden_sizes), config.normalize_obs, config.layer_norm)
    if net != ((64, 64), False, False):
        raise SystemExit(
            "PureJaxRL's ActorCritic is fixed at 64x64 without observation normalisation or "
            f"LayerNorm; ours is hidden_sizes, normalize_obs, layer_norm = {net}"
        )


def final_return(metrics: dict, num_logs: int):
    """Mean return of the episodes that ended in the last of `num_logs` equal segments of
    updates, over all runs, as ours logs it; NaN if none ended. metrics: PureJaxRL's
    per-step info, [R, updates, steps, envs] leaves."""
    import numpy as np

    done = np.asarray(metrics["returned_episode"])
    last = done.shape[1] // num_logs
    ended = done[:, -last:]
    if not ended.any():
        return float("nan")
    return float(np.asarray(metrics["returned_episode_returns"])[:, -last:][ended].mean())


def purejaxrl_worker(
    directory: str,
    runs: int,
    total_timesteps: int,
    num_logs: int,
    num_devices: int | None,
    overrides: list[str],
) -> dict:
    """R runs of PureJaxRL's own `make_train` (purejaxrl/ppo.py of the checkout at
    `directory`), `jax.jit(jax.vmap(train))` over R keys, at the settings of our program for
    `overrides`; one result row. Run time ends when its outputs are ready on the device (its
    per-step info, [R, updates, steps, envs] arrays, is not copied to the host in it)."""
    import importlib.metadata as metadata

    import jax

    p = prepared(runs, total_timesteps, num_logs, num_devices, overrides)
    check_purejaxrl_settings(p)
    steps_per_run = p.trainer.steps_per_segment * p.trainer.num_logs
    config = purejaxrl_config(p, steps_per_run)
    train = load_purejaxrl(directory).make_train(config)
    keys, devices = sharded_keys(runs, list(p.devices))
    started = time.perf_counter()
    compiled = jax.jit(jax.vmap(train)).lower(keys).compile()
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    out = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - started
    if config["NUM_UPDATES"] != p.num_updates:
        raise SystemExit(f"PureJaxRL ran {config['NUM_UPDATES']} updates, ours {p.num_updates}")
    params = out["runner_state"][0].params
    settings = {k: v for k, v in config.items() if k not in ("DEBUG",)}
    return {
        **peer_row(devices, runs, steps_per_run, compile_s, run_s, compiled, params),
        "env_id": p.config.env.id,
        "agent_settings": f"PureJaxRL ppo.py ({directory}), jax {jax.__version__}, gymnax "
        f"{metadata.version('gymnax')} (five-value step): "
        + ", ".join(f"{k}={v}" for k, v in settings.items()),
        "num_updates": config["NUM_UPDATES"],
        "num_logs": num_logs,
        "final_return": final_return(jax.device_get(out["metrics"]), num_logs),
    }


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

    p = prepared(runs, total_timesteps, num_logs, num_devices, overrides)
    steps_per_run = p.trainer.steps_per_segment * p.trainer.num_logs
    algo = rejax_algo(peer, p, steps_per_run)
    keys, devices = sharded_keys(runs, list(p.devices))
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
    return {
        **peer_row(devices, runs, steps_per_run, compile_s, run_s, compiled, states),
        "env_id": p.config.env.id,
        "agent_settings": rejax_settings(peer, algo),
        "num_updates": p.num_updates,
        "num_logs": p.trainer.num_logs,
        "final_return": None,
    }


def peer_row(devices, runs, steps_per_run, compile_s, run_s, compiled, states) -> dict:
    """The fields every jitted peer's row shares: its devices, R runs of steps_per_run env
    steps in one program (one chunk), timings, XLA's memory estimate of `compiled`, peak
    memory and the bytes of one run's `states` (leaves [R, ...])."""
    import jax

    from research.results import peak_memory

    program = program_bytes(compiled)
    rate = runs * steps_per_run / run_s
    return {
        "device": device_name(jax),
        "platform": devices[0].platform,
        "num_devices": len(devices),
        "runs": runs,
        "env_steps_per_run": steps_per_run,
        "chunk_size": runs,
        "num_chunks": 1,
        "env_steps_per_s": rate,
        "env_steps_per_s_per_run": rate / runs,
        "compile_s": compile_s,
        "run_s": run_s,
        "program_mib": None if program is None else program / 2**20,
        **peak_memory(devices),
        "state_kib_per_run": tree_bytes(jax.tree.map(lambda x: x[0], states)) / 2**10,
        "cpu_s": time.process_time(),
        "jax": jax.__version__,
    }


def sharded_keys(runs: int, devices: list):
    """R PRNG keys, sharded over the devices like our runner shards the runs axis (where R
    divides evenly), and the devices used."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    keys = jax.random.split(jax.random.key(0), runs)
    devices = devices[:runs]
    if len(devices) > 1 and runs % len(devices) == 0:
        mesh = Mesh(np.array(devices), ("runs",))
        return jax.device_put(keys, NamedSharding(mesh, PartitionSpec("runs"))), devices
    return keys, devices[:1]


def program_bytes(compiled) -> int | None:
    """XLA's memory estimate of a compiled program, as `program_mib` is for ours."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes


def rejax_settings(peer: str, algo) -> str:
    """The `agent_settings` cell: rejax's version and the numbers it actually ran with."""
    import importlib.metadata as metadata

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
    version = metadata.version("rejax")
    return f"rejax {version}: " + ", ".join(settings) + f", hidden={net}, eval off"


def sb3_worker(total_timesteps: int, overrides: list[str]) -> dict:
    """One stable-baselines3 PPO run on gymnasium's CartPole-v1 with our PPO's numbers."""
    import importlib.metadata as metadata

    import jax
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from research.results import peak_memory

    p = prepared(1, total_timesteps, 1, None, overrides)
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
        "device": device_name(jax),
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
