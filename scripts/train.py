"""Train a batch of runs from a Hydra config; a config with `transfer:` runs the transfer
pipeline (pretrain -> fine-tune -> compare with scratch) instead.

    python scripts/train.py agent=ppo env=cartpole runs.seeds=64 'sweep.lr=[1e-3,3e-4]'
    python scripts/train.py experiment=transfer_cartpole_ppo
"""

from __future__ import annotations

import sys

from research.platform import start_processes, use_cpu_cores_as_devices

use_cpu_cores_as_devices()  # before anything (gymnax's import included) starts a JAX backend
start_processes()  # one program over several processes, when a launcher started them

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from research.errors import hydra_cli  # noqa: E402
from research.pipelines.run import hydra_task  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    # Bad input: one line, exit code 2 (research.errors); Ctrl-C: one line and the resume
    # command. The config is checked before Hydra makes the directory (hydra.callbacks).
    hydra_task(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    sys.exit(hydra_cli(main))
