"""Bad input, and how the entry points answer it: one line, exit code 2, no traceback.

Every error a user can fix (a config value, a path, a file that is missing or malformed) is
an `InputError` whose message names what is wrong, where, and what is expected
(research.config.ConfigError is one). Entry points run their main through `cli`; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path


class InputError(ValueError):
    """Input the user can fix; the message names what, where and what is expected."""

    kind = "error"  # how the one line starts


_ASKED: bool | None = None  # debug() as the user asked, once `hydra_cli` has set the variable


def debug() -> bool:
    """Tracebacks asked for: RESEARCH_DEBUG=1, or Hydra's own HYDRA_FULL_ERROR=1."""
    if _ASKED is not None:
        return _ASKED
    return "1" in (os.environ.get("RESEARCH_DEBUG"), os.environ.get("HYDRA_FULL_ERROR"))


def hydra_message(error: Exception) -> str:
    """One line of a Hydra or OmegaConf error: its first line, the key it is about, the
    options Hydra lists (a config group option that does not exist)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    if any(x.startswith("Available options in") for x in lines):
        start = next(i for i, x in enumerate(lines) if x.startswith("Available options in"))
        options = []
        for x in lines[start + 1 :]:
            if x.startswith(("Config search path", "provider=")):
                break
            options.append(x)
        line += f"; available: {', '.join(options)}"
    key = getattr(error, "full_key", None) or getattr(error, "override", None)
    return f"{key}: {line}" if key and not line.startswith(str(key)) else line


def hydra_cli(main: Callable[[], object]) -> int:
    """An entry point's @hydra.main run with Hydra's own errors (an override that does not
    parse, a config option that does not exist, an interpolation that does not resolve) as
    one line and exit code 2, like every other bad input, instead of Hydra's trace hint and
    exit code 1. Anything else keeps its traceback."""
    global _ASKED
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _ASKED = debug()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises its errors, to be reported here
    try:
        main()
        return 0
    except (HydraException, OmegaConfBaseException) as error:
        if _ASKED:
            raise
        return report(InputError(hydra_message(error)))
    except KeyboardInterrupt:  # outside a job (composing, starting): nothing was saved
        print("interrupted: nothing was saved (before training began)", file=sys.stderr)
        return 130


def report(error: InputError) -> int:
    """Prints `error` as one line on stderr; returns the exit code (2)."""
    print(f"{error.kind}: {error}", file=sys.stderr)
    return 2


def cli(main: Callable[[], int]) -> int:
    """main's exit code; an InputError is one line and exit code 2 unless debugging; Ctrl-C
    one line and exit code 130 (entry points that can say more, e.g. how to resume, catch it
    themselves)."""
    try:
        return main()
    except InputError as error:
        if debug():
            raise
        return report(error)
    except KeyboardInterrupt:
        if debug():
            raise
        print(
            "interrupted: what was written so far is kept (every file is written atomically)",
            file=sys.stderr,
        )
        return 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, its usage errors an InputError (one line through `cli`, exit code 2)
    instead of argparse's usage block."""

    def error(self, message: str):
        raise InputError(f"{self.prog}: {message}; see {self.prog} --help")


def readable_file(path: Path, what: str, example: str) -> Path:
    """`path` if it is a readable file, else an InputError naming it as `what`."""
    if not path.exists():
        raise InputError(f"{what}: {str(path)!r} does not exist; give {example}")
    if not path.is_file():
        raise InputError(f"{what}: {str(path)!r} is not a file; give {example}")
    return path


def writable_dir(path: str | Path, what: str, hint: str = "", keep: bool = True) -> Path | None:
    """Creates directory `path` (and parents) if needed; returns the first directory it
    created (None if it existed). An InputError naming `what` when it cannot be created or
    written (a file in the way, a read-only place, /proc). keep=False: only tries, and removes
    the (empty) directories it made."""
    path = Path(path).absolute()
    top = next((p for p in [*reversed(path.parents), path] if not p.exists()), None)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(
            f"{what}: cannot write the directory {str(path)!r} ({reason}); "
            + (hint or "give a writable directory")
        ) from None
    if not keep and top is not None:
        for made in [path, *path.parents]:
            made.rmdir()
            if made == top:
                break
    return top
