"""A progress bar fed from inside the jitted program.

The callback carries only a global segment index (not per-run data), is called
outside the vmap, and only ever moves the bar forward, so duplicate calls from
several devices are harmless. Compiled programs call the module-level
`tick_active`, so they do not close over a bar and can be reused.
"""

from __future__ import annotations

import threading

from tqdm.auto import tqdm


class ProgressBar:
    """Env steps done (summed over runs), total, steps/s and time left."""

    def __init__(
        self, total_steps: int, steps_per_tick: int, desc: str = "train", enabled: bool = True
    ):
        self.steps_per_tick = steps_per_tick
        self._done_ticks = 0
        self._lock = threading.Lock()
        self._bar = tqdm(
            total=total_steps,
            desc=desc,
            unit="step",
            unit_scale=True,
            disable=not enabled,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    def tick(self, index) -> None:
        """Marks tick `index` (0-based, global) done; called from the device program."""
        with self._lock:
            ticks = int(index) + 1
            if ticks > self._done_ticks:
                room = self._bar.total - self._bar.n  # padded runs of a last chunk overshoot
                self._bar.update(min((ticks - self._done_ticks) * self.steps_per_tick, room))
                self._done_ticks = ticks

    def close(self) -> None:
        self._bar.close()


ACTIVE: ProgressBar | None = None  # the bar of the batch being executed, set by the runner


def tick_active(index) -> None:
    if ACTIVE is not None:
        ACTIVE.tick(index)
