"""The runner: the only training loop, the batched, sharded, chunked runs axis, evaluation."""

from research.runner.evaluate import collect_batch, evaluate_batch, make_collect, make_evaluate
from research.runner.execute import (
    BatchResult,
    ExecutionInfo,
    initial_agent_states,
    run_batch,
    take,
)
from research.runner.extension import Extension, RunParams, Start, Step, split_params
from research.runner.train import RunnerState, Trainer, make_train

__all__ = [
    "BatchResult",
    "ExecutionInfo",
    "RunnerState",
    "Extension",
    "RunParams",
    "Start",
    "Step",
    "split_params",
    "Trainer",
    "collect_batch",
    "evaluate_batch",
    "initial_agent_states",
    "make_collect",
    "make_evaluate",
    "make_train",
    "run_batch",
    "take",
]
