"""Helpers for command-line flags that several layers declare."""

from __future__ import annotations

import argparse


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
