"""Meta-learning around the runner's Trainer: outer loops whose inner loop is the same
batched `train` every experiment uses.

- reptile: a meta-learned initialisation over a distribution of env variants (first order);
- es: evolution strategies (evosax) over fine-tuning hyperparameters and shaping parameters;
- multitask: the baselines' pretraining, one agent trained through a sequence of variants;
- batch: env variants drawn from per-field ranges (derived fields recomputed), and
  programs vmapped over meta seeds, sharded over the devices.
"""

from research.meta.batch import sample_variants, shard_over
from research.meta.es import SearchSpace, decode, finetune_fitness, make_es
from research.meta.multitask import make_sequential
from research.meta.reptile import make_reptile, reptile_step, step_size

__all__ = [
    "SearchSpace",
    "decode",
    "finetune_fitness",
    "make_es",
    "make_reptile",
    "make_sequential",
    "reptile_step",
    "sample_variants",
    "shard_over",
    "step_size",
]
