#!/usr/bin/env python3
"""How long `zipa --help` takes, side by side with another revision of this repository.

    python benchmarks/cli_startup.py --against 166bd81 --runs 15

Each run starts a fresh `python -m zipa --help` (the time a user waits for the help text); the
runs of the working tree and of the other revision (exported to a temporary folder with `git
archive`, imported first on the path) alternate, and the medians are compared. Prints the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def help_seconds(tree: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "zipa", "--help"], cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def export(revision: str, folder: Path) -> Path:
    archive = folder / "tree.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", revision, "zipa"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default=None, help="a git revision to compare with (default: none)")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}; python {platform.python_version()}; {args.runs} runs each, medians")
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": REPO}
        if args.against:
            trees[args.against] = export(args.against, Path(tmp))
        times = {name: [] for name in trees}
        for name, tree in trees.items():
            help_seconds(tree)  # warm the file cache
        for _ in range(args.runs):
            for name, tree in trees.items():
                times[name].append(help_seconds(tree))
    for name, values in times.items():
        print(f"{name:>12}: zipa --help {statistics.median(values):.3f} s")
    if args.against:
        ratio = statistics.median(times[args.against]) / statistics.median(times["this tree"])
        print(f"this tree is {ratio:.1f}x faster")


if __name__ == "__main__":
    main()
