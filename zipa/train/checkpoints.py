"""Training checkpoints in icefall's layout, and checkpoint averaging.

A checkpoint (`checkpoint-{batch}.pt`, `epoch-{n}.pt`) is a dict with `model`, `model_avg`
(the running average of the weights, float64), `optimizer`, `scheduler`, `grad_scaler`,
`sampler` (where the supervised stream's sampler stood), `unsup_sampler` (the same for the
pseudo-labelled stream of noisy-student training, or None), `rng` and the training counters
(`batch_idx_train`, `cur_epoch`, ...). Writes are atomic: a crash never leaves a half-written
file under a checkpoint's name. The training loop
adds `per_rank`: every rank's `rng` and Whiten probabilities, which differ between ranks.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from zipa.model.io import CheckpointError, read_state_dict, save_checkpoint_atomic
from zipa.utils.flags import UsageError

_ITERATION = re.compile(r"checkpoint-(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def save_training_checkpoint(
    path: Path,
    model: nn.Module,
    model_avg: AveragedModel | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    sampler_state: Mapping[str, Any] | None = None,
    counters: Mapping[str, Any] | None = None,
    unsup_sampler_state: Mapping[str, Any] | None = None,
) -> None:
    """Write everything needed to resume exactly (call on rank 0 only)."""
    checkpoint = {
        "model": unwrap(model).state_dict(),
        "model_avg": model_avg.state_dict() if model_avg is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "grad_scaler": scaler.state_dict() if scaler is not None else None,
        "sampler": sampler_state,
        "unsup_sampler": unsup_sampler_state,
        "rng": rng_state(),
    }
    checkpoint.update(counters or {})
    save_checkpoint_atomic(checkpoint, path)


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_training_checkpoint` (it holds non-tensor state).

    The tensors are memory-mapped (copy-on-write), not read: each rank of a resumed run copies
    them into its model and optimizer, and without the map every rank would first hold its own
    full copy (about 6 GB for the 300M-parameter model: weights, float64 average, Adam state)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # a truncated file gives several exception types
        raise CheckpointError(f"{path}: cannot read checkpoint ({error})") from error


def find_checkpoints(exp_dir: Path, iteration: int = 0) -> list[Path]:
    """`checkpoint-{n}.pt` files in `exp_dir`, newest first. With `iteration` > 0 only those
    with n <= iteration (icefall's `--iter`)."""
    found = []
    for path in Path(exp_dir).glob("checkpoint-*.pt"):
        match = _ITERATION.search(path.name)
        if match and (iteration <= 0 or int(match.group(1)) <= iteration):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def remove_old_checkpoints(exp_dir: Path, keep_last_k: int) -> None:
    """Keep only the newest `keep_last_k` iteration checkpoints (<= 0 keeps all)."""
    if keep_last_k > 0:
        for path in find_checkpoints(exp_dir)[keep_last_k:]:
            path.unlink(missing_ok=True)


class AveragedModel:
    """A float64 running average of a model's floating-point weights (icefall's `model_avg`):
    `update` at every `average_period`-th batch keeps it the uniform average of the weights
    at those batches."""

    def __init__(self, model: nn.Module):
        state = unwrap(model).state_dict()
        self.weights = {
            k: v.detach().to("cpu", torch.float64).clone() for k, v in state.items() if v.is_floating_point()
        }

    def update(self, model: nn.Module, batch_idx_train: int, average_period: int) -> None:
        """avg <- avg * (1 - w) + model * w with w = average_period / batch_idx_train."""
        weight = average_period / batch_idx_train
        for name, value in unwrap(model).state_dict().items():
            if name in self.weights:
                self.weights[name].mul_(1 - weight).add_(value.detach().to("cpu", torch.float64), alpha=weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.weights

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.weights = {k: v.to(torch.float64) for k, v in state.items()}


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean (integer tensors: floor of the mean, as icefall)."""
    n = len(state_dicts)
    if n == 0:
        raise ValueError("nothing to average")
    average = {}
    for key, first in state_dicts[0].items():
        dtype = torch.float64 if first.is_floating_point() else first.dtype
        total = first.to(dtype)
        for sd in state_dicts[1:]:
            total = total + sd[key].to(dtype)
        average[key] = (total / n).to(first.dtype) if first.is_floating_point() else total // n
    return average


def average_checkpoints(paths: Sequence[Path]) -> dict[str, torch.Tensor]:
    """Mean of the `model` weights of several checkpoints."""
    return average_state_dicts([read_state_dict(p, trusted=True) for p in paths])


def average_with_model_avg(start: Path, end: Path) -> dict[str, torch.Tensor]:
    """The average of the weights over the batches between two checkpoints, from their running
    averages: (avg_end * n_end - avg_start * n_start) / (n_end - n_start) (icefall's
    `--use-averaged-model`). Integer entries come from `end`."""
    first, last = load_training_checkpoint(start), load_training_checkpoint(end)
    n_start, n_end = first["batch_idx_train"], last["batch_idx_train"]
    if n_end <= n_start:
        raise ValueError(f"{end} (batch {n_end}) must come after {start} (batch {n_start})")
    if first.get("model_avg") is None or last.get("model_avg") is None:
        raise CheckpointError(f"{start} or {end} has no model_avg: average without --use-averaged-model")
    weight_end = n_end / (n_end - n_start)
    weight_start = 1.0 - weight_end
    average = {}
    for key, value in last["model"].items():
        if key in last["model_avg"]:
            mixed = last["model_avg"][key] * weight_end + first["model_avg"][key] * weight_start
            average[key] = mixed.to(value.dtype)
        else:
            average[key] = value
    return average


def checkpoints_to_average(
    exp_dir: Path, avg: int, iteration: int = 0, epoch: int = 0, use_averaged_model: bool = False
) -> list[Path]:
    """The files icefall's `--iter N --avg K` / `--epoch E --avg K` select (newest first).

    With `use_averaged_model` the list is [end, start]: K+1 iteration checkpoints apart, or
    epoch-E.pt and epoch-(E-K).pt. Files that are not there: a `UsageError` naming the flags."""
    exp_dir = Path(exp_dir)
    if avg < 1:
        raise UsageError(f"--avg {avg}: give 1 or more checkpoints to average")
    mode = " --use-averaged-model True" if use_averaged_model else ""
    if iteration > 0:
        paths = find_checkpoints(exp_dir, iteration)
        needed = avg + 1 if use_averaged_model else avg
        if len(paths) < needed:
            present = find_checkpoints(exp_dir)
            newest = f" (newest: {present[0].name})" if present else ""
            most = len(paths) - 1 if use_averaged_model else len(paths)
            fixes = [f"lower --avg to {most}"] if most >= 1 else []
            fixes += ["give --use-averaged-model False"] if use_averaged_model and paths else []
            fix = ", or ".join(fixes) or "give --iter N of a checkpoint-N.pt there, or --exp-dir where they are"
            raise UsageError(
                f"--iter {iteration} --avg {avg}{mode} needs {needed} checkpoint-N.pt with N <= {iteration} "
                f"in {exp_dir}, found {len(paths)}{newest}: {fix}"
            )
        return [paths[0], paths[avg]] if use_averaged_model else paths[:avg]
    if epoch > 0:
        if use_averaged_model:
            paths = [exp_dir / f"epoch-{epoch}.pt", exp_dir / f"epoch-{epoch - avg}.pt"]
        else:
            paths = [exp_dir / f"epoch-{e}.pt" for e in range(epoch, epoch - avg, -1)]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            held = sorted(p.name for p in exp_dir.glob("epoch-*.pt"))
            fix = (
                f"that folder holds {', '.join(held)}"
                if held
                else "that folder holds no epoch-N.pt (give --iter N for checkpoint-N.pt, or --model-path)"
            )
            hint = "; or give --use-averaged-model False" if use_averaged_model else ""
            raise UsageError(f"--epoch {epoch} --avg {avg}{mode}: no {', '.join(missing)} in {exp_dir}; {fix}{hint}")
        return paths
    raise UsageError("--iter and --epoch are both 0: give --iter N (checkpoint-N.pt) or --epoch N (epoch-N.pt)")


def averaged_weights(
    exp_dir: Path, avg: int, iteration: int = 0, epoch: int = 0, use_averaged_model: bool = False
) -> dict[str, torch.Tensor]:
    """The model weights selected by --iter/--epoch, --avg and --use-averaged-model."""
    paths = checkpoints_to_average(exp_dir, avg, iteration, epoch, use_averaged_model)
    if use_averaged_model:
        return average_with_model_avg(start=paths[1], end=paths[0])
    if avg == 1:
        return read_state_dict(paths[0], trusted=True)
    return average_checkpoints(paths)


def load_averaged_model(
    exp_dir: Path,
    avg: int,
    iteration: int = 0,
    epoch: int = 0,
    use_averaged_model: bool = False,
    device: str = "cpu",
    **config_overrides,
):
    """(model in eval mode, config): the weights averaged as `averaged_weights` selects, loaded
    strictly; the architecture from `exp_dir/config.json` (written by training) or, without
    one, inferred from the weights, with `config_overrides` on top."""
    from zipa.model.asr_model import build_model
    from zipa.model.config import ModelConfig, infer_config
    from zipa.model.io import load_state_dict_strict

    weights = averaged_weights(exp_dir, avg, iteration, epoch, use_averaged_model)
    config_path = Path(exp_dir) / "config.json"
    if config_path.is_file():
        config = ModelConfig.load_json(config_path)
    else:  # e.g. checkpoints downloaded from the ZIPA hub: read the architecture off the weights
        config = infer_config(weights)
    config = ModelConfig.from_dict({**config.to_dict(), **config_overrides})
    model = build_model(config)
    load_state_dict_strict(model, weights, f"{exp_dir} (--iter {iteration} --epoch {epoch} --avg {avg})")
    return model.to(device).eval(), config
