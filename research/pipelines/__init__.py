"""Pipelines: config -> runs -> programs -> a run directory.

- train: from scratch (or from a given checkpoint), one batched program;
- transfer: pretrain on source variants, fine-tune every checkpoint on every target, and
  compare with training from scratch;
- meta: Reptile or evolution strategies over fine-tuning, evaluated on held-out variants;
- search: an Optuna study, one process per trial (shape-changing settings);
- run: the one entry that dispatches a parsed config to the pipeline it names.
"""
