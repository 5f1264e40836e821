"""The runner: the only training loop, and the batched, sharded, chunked runs axis."""

from research.runner.execute import BatchResult, ExecutionInfo, run_batch
from research.runner.train import RunnerState, Trainer, make_train

__all__ = ["BatchResult", "ExecutionInfo", "RunnerState", "Trainer", "make_train", "run_batch"]
