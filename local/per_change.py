#!/usr/bin/env python3
"""Print the PER and PFER of test sets before and after a step (fine-tuning, pseudo-labelling),
from the metrics-*.json files that ctc_decode.py writes.

    local/per_change.py "German test" BEFORE.json AFTER.json ["English...": B.json A.json ...]

Arguments come in threes: a row name, the metrics file before, the metrics file after.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def overall(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))["overall"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"per_change.py: cannot read the overall metrics of {path}: {e}")


def main(argv: list[str]) -> int:
    if not argv or len(argv) % 3:
        sys.exit(__doc__)
    print(f"{'':<24} {'PER before':>10} {'PER after':>10} {'relative':>9} {'PFER before':>12} {'PFER after':>11}")
    for name, before_path, after_path in zip(argv[0::3], argv[1::3], argv[2::3]):
        before, after = overall(before_path), overall(after_path)
        change = (after["PER"] - before["PER"]) / before["PER"] * 100 if before["PER"] else float("nan")
        print(
            f"{name:<24} {before['PER']:>9.1f}% {after['PER']:>9.1f}% {change:>+8.0f}% "
            f"{before['PFER mean']:>12.2f} {after['PFER mean']:>11.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
