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
