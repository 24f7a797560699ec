"""Tiny shar corpora and model flags for training tests (fast on 2 CPU cores)."""

from pathlib import Path

import numpy as np

TEXTS = ["a b c", "ba da", "kɪt", "mama papa", "ʃa ʒa", "ola", "tu ti", "ne na"]

TINY_MODEL_FLAGS = ["--preset", "tiny"]  # zipa.model.config's tiny preset, as in tiny_models.py


def make_tiny_corpus(root: Path, num_train: int = 16, num_dev: int = 4, seed: int = 0) -> dict:
    """Sine-and-noise 'speech' with short IPA labels, as train/ and dev/ shar folders."""
    from zipa.data.shar import ShardRecord, write_shar

    rng = np.random.default_rng(seed)
    records = []
    for i in range(num_train + num_dev):
        seconds = 0.8 + (i % 4) * 0.3
        t = np.arange(int(16000 * seconds)) / 16000
        samples = 0.1 * np.sin(2 * np.pi * (200 + 40 * (i % 8)) * t) + 0.01 * rng.standard_normal(t.size)
        records.append(ShardRecord(f"utt{i:03d}", samples.astype(np.float32), TEXTS[i % len(TEXTS)], "xx"))
    write_shar(records[:num_train], root / "train", shard_size=8)
    write_shar(records[num_train:], root / "dev", shard_size=8)
    return {"train": root / "train", "dev": root / "dev"}


def training_flags(corpus: dict, exp_dir: Path, *extra: str) -> list:
    return [
        *TINY_MODEL_FLAGS,
        "--train-shar-dirs", str(corpus["train"]), "--dev-shar-dirs", str(corpus["dev"]),
        "--exp-dir", str(exp_dir), "--max-duration", "4", "--num-workers", "0", "--device", "cpu",
        "--tensorboard", "False", "--log-interval", "1000", "--valid-interval", "1000",
        "--seed", "7", *extra,
    ]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def kill_tree(pid: int) -> None:
    """SIGKILL process `pid` and every process under it, by id. A whole process group is not
    enough: torchrun starts each rank in a session of its own (Linux: reads /proc)."""
    import os
    import signal

    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [pid], [pid]
    while todo:
        found = children.get(todo.pop(), [])
        tree += found
        todo += found
    for member in tree:  # the parent first: a launcher that outlived its ranks would restart them
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start(command, **env_extra: str):
    """`command` started from the repository root, one thread per process, output to pipes."""
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    return subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def run_to_end(command, timeout: float = 600, **env_extra: str) -> str:
    """Run `command` (see `start`) and return its stdout; fail the calling test if it exits
    with an error or outlives `timeout`, in which case it is killed with every process under it
    first: ranks that disagree wait on each other forever."""
    import subprocess

    import pytest

    process = start(command, **env_extra)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(map(str, command))} still running after {timeout} s (ranks waiting on each other?)"
                    f"\n{stdout[-4000:]}\n{stderr[-4000:]}")
    finally:
        if process.poll() is None:
            kill_tree(process.pid)
            process.wait()
    assert process.returncode == 0, f"{' '.join(map(str, command))}\n{stdout[-4000:]}\n{stderr[-4000:]}"
    return stdout
