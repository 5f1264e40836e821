"""Bad input, and how the entry points answer it: one line, exit code 2, no traceback.

Every error a user can fix (a config value, a path, a file that is missing or malformed) is
an `InputError` whose message names what is wrong, where, and what is expected
(research.config.ConfigError is one). Entry points run their main through `cli`; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class InputError(ValueError):
    """Input the user can fix; the message names what, where and what is expected."""

    kind = "error"  # how the one line starts


def debug() -> bool:
    """Tracebacks asked for: RESEARCH_DEBUG=1, or Hydra's own HYDRA_FULL_ERROR=1."""
    return "1" in (os.environ.get("RESEARCH_DEBUG"), os.environ.get("HYDRA_FULL_ERROR"))


def report(error: InputError) -> int:
    """Prints `error` as one line on stderr; returns the exit code (2)."""
    print(f"{error.kind}: {error}", file=sys.stderr)
    return 2


def cli(main: Callable[[], int]) -> int:
    """main's exit code; an InputError is one line and exit code 2 unless debugging."""
    try:
        return main()
    except InputError as error:
        if debug():
            raise
        return report(error)
