"""Throughput benchmark: R parallel runs of one agent as one batched program.

For each agent in --agent and each R in --runs, a fresh subprocess (with its own
XLA_FLAGS, CPU affinity and a timeout) composes the project's Hydra config
(configs/config.yaml + the agent's overrides + --env + --override), builds the runs
with `research.pipelines.train.prepare` -- exactly as `scripts/train.py` does -- runs
them with `research.pipelines.train.execute` (the config's chunking and memory budget), and
reports

    env-steps/s    R * env steps per run / run time (compile excluded)
    compile s      lowering + XLA compilation of the batched program
    program MiB    XLA's memory estimate per device (arguments + outputs + temporaries)
    peak RSS MiB   the subprocess's peak resident memory (getrusage ru_maxrss)
    device MiB     the device's peak bytes in use, where the backend reports it (GPU)
    state KiB/run  one run's agent state (parameters, optimiser state, replay buffer)
    buffer MiB/run one run's replay buffer (`research.rl.replay.buffer_bytes`; DQN mode)

Agents (--agent; their Hydra overrides, on top of configs/config.yaml):

    ppo         agent=ppo                       (configs/agent/ppo.yaml = PPOConfig defaults)
    pqn         agent=dqn agent.mode=pqn        (configs/agent/dqn.yaml, no replay)
    dqn         experiment=dqn_cartpole         (agent=dqn, agent.mode=dqn: tuned replay
                                                 settings, 50k-transition buffer per run)
    q_learning  agent=q_learning                (env default: cartpole_discrete)
    reinforce   agent=reinforce
    all         every one of the above

--env picks the Hydra env group (default: cartpole; cartpole_discrete for q_learning);
--override adds any Hydra override, e.g. --override agent.buffer_size=10000.

A fresh process per configuration keeps one configuration's peak memory, JIT
caches and thread pools out of the next. Results are written atomically to
<out>/<name>.csv and <out>/<name>.md after every configuration, so an
interrupted benchmark still leaves a consistent table. The cores that other
processes kept busy meanwhile are recorded; rows above 0.25 cores are marked busy.

Large batches may use fewer env steps per run (--max-batch-steps): the quantity
compared is env-steps/s. Every run does at least one update per log.

Examples (2-core CPU):

    python scripts/benchmark.py                                  # PPO, R = 1, 64, 1024
    python scripts/benchmark.py --runs 1 64 1024 4096 --append   # more runs, same table
    python scripts/benchmark.py --host-devices 2 --append        # runs sharded over 2 CPU devices
    python scripts/benchmark.py --no-multi-thread-eigen --append # Eigen intra-op threads off
    python scripts/benchmark.py --pin-cpus 0 --append            # process pinned to core 0
    python scripts/benchmark.py --agent all --host-devices 2 --name agents_cpu
    python scripts/benchmark.py --agent dqn --override agent.buffer_size=10000 --label buf10k
"""

from __future__ import annotations

import sys

from research.bench.agents import main
from research.errors import cli

if __name__ == "__main__":
    sys.exit(cli(lambda: main(description=__doc__)))
