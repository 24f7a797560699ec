#!/usr/bin/env python3
"""PER before and after a training step repeated with several seeds: each seed's change, the mean
and spread, and whether the step helped in every seed.

    local/seed_table.py --sets test,test-festival \\
        --before exp/demo_ctc_it_s1/ctc-greedy-search ... --after exp/demo_ctc_it_ns_s1/ctc-greedy-search ...

--before and --after are folders of ctc_decode.py's metrics-<set>-averaged.json, one per seed in
the same order (a single --before folder stands for every seed: the step's common starting model).
--pseudo-quality adds each seed's local/pseudo_label_quality.py figures; --json writes it all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from zipa.utils.atomic import write_text_atomic


def per(folder: Path, test_set: str) -> float:
    path = folder / f"metrics-{test_set}-averaged.json"
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["overall"]["PER"])
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"seed_table.py: cannot read the overall PER of {path}: {e}") from None


def spread(values: list[float]) -> str:
    """mean ± sample standard deviation [min, max]."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):6.2f} ± {sd:4.2f} [{min(values):.2f}, {max(values):.2f}]"


def table(sets: list[str], before: list[Path], after: list[Path]) -> dict:
    if len(before) not in (1, len(after)):
        raise SystemExit(f"seed_table.py: {len(before)} --before folders for {len(after)} seeds")
    before = before * len(after) if len(before) == 1 else before
    rows = {}
    for test_set in sets:
        b = [per(d, test_set) for d in before]
        a = [per(d, test_set) for d in after]
        rows[test_set] = {"before": b, "after": a, "lower_in_every_seed": all(y < x for x, y in zip(b, a))}
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", required=True, help="test set names, comma-separated")
    p.add_argument("--before", type=Path, nargs="+", required=True)
    p.add_argument("--after", type=Path, nargs="+", required=True)
    p.add_argument("--pseudo-quality", type=Path, nargs="*", default=[], help="one JSON per seed")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows = table([s for s in args.sets.split(",") if s], args.before, args.after)
    print(f"{len(args.after)} seeds; PER % mean ± sd [min, max]")
    print(f"{'set':<24} {'before':>28} {'after':>28}  per seed (after - before)   lower in every seed")
    for name, r in rows.items():
        changes = " ".join(f"{y - x:+.2f}" for x, y in zip(r["before"], r["after"]))
        print(
            f"{name:<24} {spread(r['before']):>28} {spread(r['after']):>28}  {changes:<26} "
            f"{'yes' if r['lower_in_every_seed'] else 'no'}"
        )
    pseudo = [json.loads(path.read_text(encoding="utf-8")) for path in args.pseudo_quality]
    if pseudo:
        kept = [float(q["kept"]) for q in pseudo]
        dropped = [float(q["dropped"]) for q in pseudo]
        kept_per = [float(q["kept_PER"]) for q in pseudo if q["kept_PER"] is not None]
        print(f"pseudo-labels kept {spread(kept)}, dropped {spread(dropped)}", end="")
        print(f", kept labels' PER {spread(kept_per)} %" if kept_per else "")
    if args.json:
        write_text_atomic(args.json, json.dumps({"sets": rows, "pseudo_labels": pseudo}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
