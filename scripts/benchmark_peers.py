"""This project's agents against peer libraries at identical settings, side by side.

For each R in --runs, each comparison in --compare runs this project's agent and the peer
one after the other (interleaved, so a change of machine load hits both), each in a fresh
subprocess with the same XLA_FLAGS, CPU affinity and timeout, through the machinery of
`scripts/benchmark.py` (`research.bench`: `measure`, `write_tables`): the same columns, the
same load detection, rows marked busy where other processes kept more than 0.25 cores busy
meanwhile. The peers' code is `research.bench.peer_workers`.

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
    purejaxrl
          ours: agent=ppo  vs  PureJaxRL's own purejaxrl/ppo.py `make_train`, unmodified,
          from the checkout at --purejaxrl-dir (PureJaxRL is not a package), with its
          config dict filled from the same composed config (its defaults are ours: 4 envs x
          128 steps, 4 epochs x 4 minibatches, 64x64 tanh, lr 2.5e-4 annealed, global-norm
          clip 0.5), DEBUG off, `jax.jit(jax.vmap(train))` over R keys. Two adaptations, at
          import time in the worker: gymnax 1.0's six-value step returns PureJaxRL's five
          values (done = terminated | truncated), and its wrappers.py's unused brax / navix
          imports are stubbed. Its run time ends when its outputs are ready on the device.
          A checkout: git clone https://github.com/luchris429/purejaxrl /tmp/purejaxrl
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
values to unpack"). `research.bench.peer_workers.five_value_step` adapts an environment: a
subclass whose `step` returns `terminated | truncated` as the one done flag.

The peers are optional and conflict-prone, so install them in their own venv and run this
script with its interpreter (the project's rows then run there too, same versions):

    python3 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install jax==0.10.2 jaxlib==0.10.2 gymnax==1.0.1 -e .
    /tmp/peers-venv/bin/pip install rejax==0.1.3 torch==2.13.0 stable-baselines3 gymnasium \\
        -c <(printf 'jax==0.10.2\\njaxlib==0.10.2\\ngymnax==1.0.1\\nflax==0.12.8\\noptax==0.2.8\\n')
    /tmp/peers-venv/bin/python scripts/benchmark_peers.py --runs 1 64 1024 --name peers_cpu
    /tmp/peers-venv/bin/python scripts/benchmark_peers.py --compare ppo purejaxrl \\
        --purejaxrl-dir /tmp/purejaxrl --runs 1 4 16 64 1024 --total-timesteps 500000 \\
        --name peers_purejaxrl_cpu

Tables: <out>/<name>.csv and .md (default results/benchmarks/peers_<platform>), the
second with a section "Ours vs peer": ours / peer env-steps/s and compile times per R.
"""

from __future__ import annotations

import sys

from research.bench.peers import main
from research.errors import cli

if __name__ == "__main__":
    sys.exit(cli(lambda: main(description=__doc__)))
