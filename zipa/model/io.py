"""Reading, checking and writing model checkpoints.

Released ZIPA checkpoints are bare state_dicts; icefall training checkpoints are dicts with a
"model" (and "model_avg") entry. The architecture is inferred from the weights
(`zipa.model.config.infer_config`); settings the weights cannot show come from a `config.json`
beside the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn

from zipa.model.config import ModelConfig, infer_config
from zipa.utils.atomic import open_atomic

if TYPE_CHECKING:
    from zipa.model.asr_model import AsrModel

PathLike = Union[str, os.PathLike]

_MAX_LISTED = 5  # keys listed per kind of mismatch in error messages


def default_device() -> torch.device:
    """Where models go when no device is named: cuda when available, else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that does not fit the model."""


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def read_state_dict(path: PathLike, use_averaged: bool = False, trusted: bool = False) -> dict[str, torch.Tensor]:
    """Load a state_dict on CPU from a bare state_dict file or an icefall checkpoint dict.

    From a checkpoint dict, returns its "model" entry ("model_avg" when `use_averaged` and
    present); a DDP "module." prefix is removed. Files are opened with `weights_only=True`;
    `trusted=True` allows arbitrary pickled objects (full icefall training checkpoints hold
    paths and sampler state) and must only be used for files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic.startswith((b"PK\x03\x04", b"\x80")):  # zip or legacy pickle
        raise CheckpointError(f"{path}: truncated or not a torch checkpoint (unknown file header {magic!r})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as e:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if isinstance(e, pickle.UnpicklingError) and unsafe:
            raise CheckpointError(
                f"{path}: holds Python objects besides tensors ({unsafe.group(1)}; e.g. a full "
                "icefall training checkpoint); pass trusted=True only if you trust its source"
            ) from None
        detail = str(e).split("WeightsUnpickler error:")[-1].strip()
        detail = (detail.splitlines() or [""])[0].split(". ")[0][:200]
        raise CheckpointError(f"{path}: truncated or not a torch checkpoint ({type(e).__name__}: {detail})") from e

    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        name = "model_avg" if use_averaged and "model_avg" in obj else "model"
        if name not in obj and "state_dict" in obj:
            name = "state_dict"
        if name in obj:
            obj = obj[name]
    if not _is_state_dict(obj):
        what = f"dict with keys {list(obj)[:_MAX_LISTED]}" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path}: not a state_dict (a non-empty dict of name -> tensor) nor a checkpoint "
            f"dict with a 'model' entry; found {what}"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def config_json_for(path: Path) -> Path | None:
    """`<stem>.config.json` beside the checkpoint, else `config.json` there, else None."""
    for candidate in (path.with_name(path.stem + ".config.json"), path.with_name("config.json")):
        if candidate.is_file():
            return candidate
    return None


def _read_base_config(json_path: Path | None) -> ModelConfig:
    """A `ModelConfig` from our flat config.json, or from one with the original's "params"."""
    if json_path is None:
        return ModelConfig()
    try:
        data = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{json_path}: unreadable config ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{json_path}: expected a JSON object")
    params = dict(data.get("params") or {})
    params.update({k: v for k, v in data.items() if k != "params"})
    return ModelConfig.from_dict(params)


def _apply_overrides(config: ModelConfig, overrides: Mapping[str, Any]) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
    return dataclasses.replace(config, **overrides) if overrides else config


def _config_from(state_dict: Mapping[str, Any], path: Path, overrides: Mapping[str, Any]) -> ModelConfig:
    base = _read_base_config(config_json_for(path))
    try:
        config = infer_config(state_dict, base)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    return _apply_overrides(config, overrides)


def load_config_for(path: PathLike, use_averaged: bool = False, **overrides: Any) -> ModelConfig:
    """The `ModelConfig` of a checkpoint: inferred from its weights, with the settings weights
    cannot show (chunk sizes, ...) from a config.json beside it, then `overrides` applied."""
    path = Path(path)
    return _config_from(read_state_dict(path, use_averaged=use_averaged), path, overrides)


def config_for_state_dict(state_dict: Mapping[str, Any], path: PathLike, **overrides: Any) -> ModelConfig:
    """`load_config_for` for weights already read from `path` (e.g. a training checkpoint's)."""
    return _config_from(state_dict, Path(path), overrides)


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: PathLike = "<state_dict>"
) -> None:
    """`model.load_state_dict(state_dict, strict=True)`, after a check whose `CheckpointError`
    names the file and the first missing keys, unexpected keys and shape mismatches."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        f"{k}: expected {list(expected[k])}, found {list(found[k])}"
        for k in expected
        if k in found and expected[k] != found[k]
    ]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
            problems.append(f"{len(items)} {title}{more}:\n    " + "\n    ".join(items[:_MAX_LISTED]))
    if problems:
        raise CheckpointError(f"{path} does not fit the model:\n  " + "\n  ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def load_model(
    path: PathLike,
    config: ModelConfig | None = None,
    device: str | torch.device = "cpu",
    use_averaged: bool = False,
    **overrides: Any,
) -> tuple[AsrModel, ModelConfig]:
    """Build the model a checkpoint describes (or `config`), load its weights strictly, and
    return `(model in eval mode on device, config)`."""
    from zipa.model.asr_model import build_model

    path = Path(path)
    state_dict = read_state_dict(path, use_averaged=use_averaged)
    if config is None:
        config = _config_from(state_dict, path, overrides)
    else:
        config = _apply_overrides(config, overrides)
    model = build_model(config)
    load_state_dict_strict(model, state_dict, path)
    return model.to(device).eval(), config


def save_checkpoint_atomic(obj: Any, path: PathLike) -> None:
    """`torch.save(obj, path)` that never leaves a half-written file at `path`."""
    with open_atomic(path, "wb") as f:
        torch.save(obj, f)


def save_model(model: nn.Module, config: ModelConfig, path: PathLike) -> None:
    """Save a bare state_dict (CPU tensors) at `path` and the config as `config.json` beside it."""
    path = Path(path)
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint_atomic(state_dict, path)
    config.save_json(path.with_name("config.json"))
