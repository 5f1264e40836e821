"""Methods plugged into the one training loop, one module each (research.runner.extension).

- env_shift: the environment changes during training (a step or a linear drift);
- shaping: potential-based shaping or a proximity bonus, with weight schedules;
- finetune: a run starts from an adopted checkpoint state;
- l2_init: an L2 pull towards the parameters a run started from;
- keep: methods against forgetting (distillation, behaviour cloning, EWC, guide-policy
  roll-in) and the source task's return measured during training;
- plasticity: diagnostics (dormant units, feature rank, weight norm, churn) and
  interventions (ReDo, shrink-and-perturb, resets of the last layers);
- env_schedule: the environment runs through a sequence of phases (a continual setting);
- pbt: population-based training over groups of runs (the batched `population` hook).
"""

from research.extensions.env_schedule import EnvSchedule
from research.extensions.env_shift import ShiftEnvParams
from research.extensions.finetune import Finetune, adopt
from research.extensions.keep import EWC, BehaviourCloning, Distill, GuideRollIn, SourceEval
from research.extensions.l2_init import L2Init, l2_penalty
from research.extensions.pbt import PBT
from research.extensions.plasticity import Diagnostics, Redo, ResetLayers, ShrinkPerturb
from research.extensions.shaping import RewardShaping, ShapingStats

__all__ = [
    "Diagnostics",
    "EnvSchedule",
    "Redo",
    "ResetLayers",
    "ShrinkPerturb",
    "EWC",
    "BehaviourCloning",
    "Distill",
    "GuideRollIn",
    "SourceEval",
    "Finetune",
    "L2Init",
    "PBT",
    "RewardShaping",
    "ShapingStats",
    "ShiftEnvParams",
    "adopt",
    "l2_penalty",
]
