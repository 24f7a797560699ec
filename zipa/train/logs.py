"""Training logs: a log file per rank, TensorBoard on rank 0, a tqdm progress bar."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path

from tqdm import tqdm


class TrainLogger:
    """Writes `exp_dir/log/log-train-<time>-<rank>` and, on rank 0, TensorBoard events under
    `exp_dir/tensorboard`. Per-batch values are smoothed and written every `every` batches."""

    def __init__(self, exp_dir: Path, rank: int = 0, tensorboard: bool = True):
        self.rank = rank
        log_dir = Path(exp_dir) / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
        self.logger = logging.getLogger(f"zipa.train.{rank}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.logger.handlers.clear()
        formatter = logging.Formatter(f"%(asctime)s %(levelname)s [rank {rank}] %(message)s")
        file_handler = logging.FileHandler(log_dir / f"log-train-{stamp}-{rank}")
        file_handler.setFormatter(formatter)
        self.logger.addHandler(file_handler)
        if rank == 0:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(formatter)
            self.logger.addHandler(console)
        self.writer = None
        if tensorboard and rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(exp_dir) / "tensorboard"))
        self.smoothed: dict[str, float] = {}

    def info(self, message: str) -> None:
        self.logger.info(message)

    def warning(self, message: str) -> None:
        self.logger.warning(message)

    def progress(self, desc: str) -> tqdm:
        return tqdm(desc=desc, unit="batch", disable=self.rank != 0 or not sys.stderr.isatty(), leave=False)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def batch(self, step: int, info: dict[str, float], lr: float, grad_norm: float | None, every: int) -> None:
        """Accumulate one batch's losses; every `every` batches log per-frame averages."""
        for key, value in info.items():
            self.smoothed[key] = self.smoothed.get(key, 0.0) + value
        if step % every != 0:
            return
        frames = max(self.smoothed.get("frames", 0.0), 1.0)
        per_frame = {k: v / frames for k, v in self.smoothed.items() if k.endswith("loss")}
        extra = {"lr": lr} if grad_norm is None else {"lr": lr, "grad_norm": grad_norm}
        self.scalars("train", {**per_frame, **extra}, step)
        self.info(
            f"batch {step}: "
            + ", ".join(f"{k}={v:.4f}" for k, v in per_frame.items())
            + f", lr={lr:.3e}"
            + (f", grad_norm={grad_norm:.3g}" if grad_norm is not None else "")
        )
        self.smoothed = {}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)
