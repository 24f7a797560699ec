"""Fine-tuning: a training run that starts from the weights of a trained model.

The flags are those of ZIPA's (icefall's) finetune.py: `--do-finetune`, `--finetune-ckpt`,
`--init-modules`, plus `--freeze-modules`. Everything else is the ordinary training loop: a
fresh optimiser and learning-rate schedule, `model_avg` starting from the loaded weights, the
usual checkpoints in `--exp-dir`, and resuming with `--start-batch`/`--start-epoch` (the
checkpoint then holds the weights; the fine-tuning checkpoint only gives the architecture).

Module selections are parameter-name prefixes, matched at dots as the original does:
`encoder` selects `encoder.encoders.0...` but not `encoder_embed...`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from zipa.model.config import ModelConfig, preset
from zipa.model.io import CheckpointError, config_for_state_dict, read_state_dict
from zipa.train.objective import checkpoint_objective, follow_checkpoint
from zipa.utils.flags import UsageError

# The learning-rate schedule of ZIPA's finetune.py: a tenth of the base rate, decaying slowly.
FINETUNE_LR_DEFAULTS = {"base_lr": 0.0045, "lr_batches": 100000.0, "lr_epochs": 100.0}

# Added to the model's batch count when fine-tuning, as ZIPA's finetune.py does: the loaded
# model was trained past its warm-up, so its schedules (dropout, layer skipping, balancer and
# whitening probabilities, bypass limits) start at their final values, not at the heavy
# regularisation meant for a model trained from scratch.
FINETUNE_BATCH_COUNT_OFFSET = 100000

_RECIPE_OF_FACTOR = {1: "zipformer_crctc/train.py", 2: "zipformer_transducer/train.py"}


def split_prefixes(value: str | None) -> list[str]:
    """ "encoder_embed, encoder" -> ["encoder_embed", "encoder"]; None or "" -> []."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _check_each_used(names: Sequence[str], prefixes: Sequence[str], flag: str) -> None:
    for prefix in prefixes:
        if not any(matches(name, [prefix]) for name in names):
            raise ValueError(
                f"{flag}: {prefix!r} matches no parameter of the model (prefixes end at a dot: "
                f"'encoder' selects encoder.*, not encoder_embed.*)"
            )


# -- flags ---------------------------------------------------------------------------------------


def prepare_finetune_args(args: argparse.Namespace) -> None:
    """Check the fine-tuning flags, apply the fine-tuning learning-rate defaults to the ones the
    command line did not set (`args.given_flags`), fetch a named model once (before any rank
    starts), and take the loss settings the command line did not give from the objective the
    checkpoint was trained with (`zipa.train.objective`; `args.finetune_objective` keeps it and
    where this run's comes from, for the log)."""
    if not args.do_finetune:
        stray = [flag for flag in ("finetune_ckpt", "init_modules") if getattr(args, flag) is not None]
        if stray:
            raise UsageError(f"--{stray[0].replace('_', '-')} needs --do-finetune True")
        return
    if not args.finetune_ckpt:
        raise UsageError(
            "--do-finetune True needs --finetune-ckpt (a .pth, a checkpoint-N.pt/epoch-N.pt, "
            "or a model name from `zipa models`)"
        )
    given: frozenset = getattr(args, "given_flags", frozenset())
    for name, value in FINETUNE_LR_DEFAULTS.items():
        if name not in given:
            setattr(args, name, value)
    try:
        path, _ = resolve_source(args.finetune_ckpt)
    except FileNotFoundError as error:
        raise UsageError(f"--finetune-ckpt {args.finetune_ckpt}: {str(error).splitlines()[0]}") from None
    recorded = checkpoint_objective(args.finetune_ckpt, path)
    args.finetune_objective = (recorded, follow_checkpoint(args, recorded))


def given_model_flags(args: argparse.Namespace) -> list[str]:
    """The model flags the command line set (`--preset` and ModelConfig fields), in
    ModelConfig's order. Without `args.given_flags`, every model flag that has a value."""
    given = getattr(args, "given_flags", None)
    names = ["preset"] + list(ModelConfig.__dataclass_fields__)
    if given is None:
        return [n for n in names if getattr(args, n, None) is not None]
    return [n for n in names if n in given]


def _flag_text(args: argparse.Namespace, names: Sequence[str]) -> str:
    def value(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)

    return " ".join(f"--{n.replace('_', '-')} {value(getattr(args, n))}" for n in names)


# -- the checkpoint --------------------------------------------------------------------------------


def resolve_source(spec: str) -> tuple[Path, bool]:
    """(checkpoint path, trusted) for --finetune-ckpt: a local file or folder (this user's own
    files, read in full as resuming reads them: training checkpoints hold Python objects besides
    tensors), or a model name / Hub repo id (fetched into the Hugging Face cache and read as
    tensors only)."""
    from zipa.hub.pretrained import resolve_model

    local = Path(spec).expanduser()
    if local.exists():
        return resolve_model(local), True
    return resolve_model(spec), False


class FinetuneInit:
    """The weights a fine-tuning run starts from and the architecture it trains.

    The architecture is the checkpoint's when no model flag is given; model flags given are
    applied on top of it (on top of `--preset` when that is given), and the parameters to load
    must then still have the checkpoint's shapes."""

    def __init__(
        self,
        path: Path,
        state_dict: dict[str, torch.Tensor],
        config: ModelConfig,
        checkpoint_config: ModelConfig,
        prefixes: list[str],
        flags: str,
    ):
        self.path = path
        self.state_dict = state_dict
        self.config = config
        self.checkpoint_config = checkpoint_config
        self.prefixes = prefixes
        self.flags = flags

    @classmethod
    def from_args(cls, args: argparse.Namespace, output_downsampling_factor: int) -> FinetuneInit:
        path, trusted = resolve_source(args.finetune_ckpt)
        try:
            state_dict = read_state_dict(path, trusted=trusted)
        except CheckpointError as error:
            raise UsageError(f"--finetune-ckpt: {str(error).splitlines()[0]}") from None
        checkpoint_config = config_for_state_dict(state_dict, path)
        names = given_model_flags(args)
        base = preset(args.preset) if "preset" in names else checkpoint_config
        values = {n: getattr(args, n) for n in names if n != "preset"}
        values["output_downsampling_factor"] = output_downsampling_factor
        config = ModelConfig.from_dict({**base.to_dict(), **values})
        return cls(
            path, state_dict, config, checkpoint_config, split_prefixes(args.init_modules), _flag_text(args, names)
        )

    def _contradiction(self, problem: str) -> UsageError:
        who = f"{self.flags} contradicts" if self.flags else "the model contradicts"
        message = f"{who} the checkpoint {self.path}: {problem}"
        theirs, ours = self.checkpoint_config.output_downsampling_factor, self.config.output_downsampling_factor
        if theirs != ours:
            message += (
                f" (the checkpoint's output_downsampling_factor is {theirs}, this recipe's {ours}: "
                f"fine-tune it with {_RECIPE_OF_FACTOR.get(theirs, 'the other recipe')}, or load "
                f"parts of it with --init-modules)"
            )
        return UsageError(message)

    def load_into(self, model: nn.Module) -> str:
        """Copy the selected weights (all, or those under --init-modules) into `model`, after
        checking that each has the checkpoint's shape; returns a report for the log."""
        own = model.state_dict()
        _check_each_used(list(own), self.prefixes, "--init-modules")
        selected = [k for k in own if not self.prefixes or matches(k, self.prefixes)]
        ours_from = "from the flags" if self.flags else "in the model"
        for key in selected:
            if key not in self.state_dict:
                raise self._contradiction(f"{key} (shape {tuple(own[key].shape)} {ours_from}) is not in the checkpoint")
            theirs, ours = tuple(self.state_dict[key].shape), tuple(own[key].shape)
            if theirs != ours:
                raise self._contradiction(f"{key} has shape {theirs} in the checkpoint, {ours} {ours_from}")
        chosen = set(selected)
        unused = [k for k in self.state_dict if k not in chosen]
        if not self.prefixes and unused:
            raise self._contradiction(
                f"its {unused[0]} (and {len(unused) - 1} more) has no place in the model; "
                "choose what to load with --init-modules"
            )
        model.load_state_dict({**own, **{k: self.state_dict[k] for k in selected}}, strict=True)
        values = sum(own[k].numel() for k in selected)
        return (
            f"fine-tuning from {self.path}: loaded {len(selected)} of {len(own)} tensors "
            f"({values / 1e6:.2f} M of {sum(v.numel() for v in own.values()) / 1e6:.2f} M values"
            + (f", --init-modules {','.join(self.prefixes)}" if self.prefixes else "")
            + f"); {len(own) - len(selected)} keep their fresh initialisation; "
            f"{len(unused)} tensors of the checkpoint not used"
        )


# -- frozen modules --------------------------------------------------------------------------------


def frozen_prefixes(flag: str | None, checkpoint: Mapping[str, Any] | None) -> list[str]:
    """--freeze-modules, or on resume the prefixes the resumed run froze (a checkpoint records
    them, so the optimiser's parameter groups come out the same)."""
    given = split_prefixes(flag)
    saved = checkpoint.get("freeze_modules") if checkpoint is not None else None
    if saved is None:
        return given
    if given and given != list(saved):
        raise ValueError(
            f"--freeze-modules {flag} differs from the run being resumed, which froze {','.join(saved) or 'nothing'}"
        )
    return list(saved)


def freeze(model: nn.Module, prefixes: Sequence[str]) -> str:
    """Stop training the parameters under `prefixes` (requires_grad False); returns a report."""
    params = dict(model.named_parameters())
    _check_each_used(list(params), prefixes, "--freeze-modules")
    frozen = [p for name, p in params.items() if matches(name, prefixes)]
    for p in frozen:
        p.requires_grad_(False)
    values = sum(p.numel() for p in frozen)
    return f"frozen ({','.join(prefixes)}): {len(frozen)} parameter tensors, {values / 1e6:.2f} M values"


def trainable_groups(groups: list[dict]) -> list[dict]:
    """Optimiser parameter groups (`get_parameter_groups_with_lrs`) without frozen parameters."""
    kept = []
    for group in groups:
        key = "named_params" if "named_params" in group else "params"
        members = [m for m in group[key] if (m[1] if key == "named_params" else m).requires_grad]
        if members:
            kept.append({**group, key: members})
    return kept
