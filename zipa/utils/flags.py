"""Helpers for command-line flags that several layers declare."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator


def str2bool(value: str) -> bool:
    """icefall's boolean flags: --use-ctc True / --use-ctc false / --causal 1."""
    if isinstance(value, bool):
        return value
    lowered = value.lower()
    if lowered in ("true", "t", "yes", "y", "1"):
        return True
    if lowered in ("false", "f", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


class UsageError(ValueError):
    """A command line a recipe cannot run as given (a missing data flag, a checkpoint that is
    not there, flags that contradict each other). Its message is one line naming the flag and
    the fix; `usage_errors_exit` turns it into that line on stderr and exit status 2, as
    argparse does for a flag it cannot parse. A bug raises anything else and keeps its traceback."""


@contextlib.contextmanager
def usage_errors_exit(prog: str) -> Iterator[None]:
    """Run a command's body: a `UsageError` becomes `PROG: error: MESSAGE` and exit status 2."""
    try:
        yield
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
