"""Train a batch of runs from a Hydra config; a config with `transfer:` runs the transfer
pipeline (pretrain -> fine-tune -> compare with scratch) instead.

    python scripts/train.py agent=ppo env=cartpole runs.seeds=64 'sweep.lr=[1e-3,3e-4]'
    python scripts/train.py experiment=transfer_cartpole_ppo
"""

from __future__ import annotations

import sys

from research.platform import use_cpu_cores_as_devices

use_cpu_cores_as_devices()  # before anything (gymnax's import included) starts a JAX backend

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from research.config import parse_experiment  # noqa: E402
from research.errors import InputError, debug, report  # noqa: E402
from research.pipelines.run import run  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    raw = OmegaConf.to_container(cfg, resolve=True)
    try:
        run(parse_experiment(raw), raw, HydraConfig.get().runtime.output_dir)
    except InputError as error:
        if debug():
            raise
        sys.exit(report(error))


if __name__ == "__main__":
    main()
