"""The ``actorsource`` command line: commands to inspect a store, and the benchmark suite.

Modules: :mod:`._parser` (every command's arguments), :mod:`._commands` (running an inspection
command over a store opened read-only by :mod:`._open`), :mod:`._inspect` and :mod:`._info`
(the commands), :mod:`._app` (``--app``: the user's classes), :mod:`._table` (what they print),
:mod:`._bench` (the benchmark suite).

Exit status: 0 done, 1 a command failed (one line on stderr), 2 a usage error (argparse's),
130 interrupted. A closed pipe (``| head``) ends the command quietly with status 0.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ._bench import run_bench
from ._commands import COMMANDS, run_command
from ._open import INTERRUPTED
from ._parser import parser as parser
from ._parser import version as version

__all__ = ["main", "parser", "version"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        line = parser()
        args = line.parse_args(argv)
        status = run_command(args) if args.command in COMMANDS else run_bench(line, args)
        # here, not at exit: a reader gone by now is a BrokenPipeError caught below
        sys.stdout.flush()
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # the reader took what it wanted (| head); what is left unwritten goes nowhere, so
        # that the interpreter's own flush at exit does not fail again
        _discard_stdout()
        return 0
    return status


def _discard_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor (a test's capture): nothing to flush
        pass
