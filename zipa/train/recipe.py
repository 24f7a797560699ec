"""What a recipe's train.py runs: parse flags, check them, then train on every rank."""

from __future__ import annotations

import argparse
import functools
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from zipa.data.protocols import DataModule
from zipa.train.args import (
    add_finetune_arguments,
    add_model_arguments,
    add_training_arguments,
    architecture_problem,
    check_data_dirs,
    model_config_from_args,
    parse_noting_given,
    resolve_bpe_model,
)
from zipa.train.compat import DATA_FLAGS, TRAINING_FLAGS, add_foreign_flags, check_foreign_flags
from zipa.train.distributed import launched_by_torchrun, run_distributed
from zipa.train.finetune import prepare_finetune_args
from zipa.train.loop import train
from zipa.utils.flags import UsageError, usage_errors_exit

# The heads ZIPA's train.py (both recipes) trains when no flag names them.
ZIPA_MODEL_DEFAULTS = dict(use_transducer=True, use_ctc=False, use_attention_decoder=False)


def training_parser(
    description: str, data_module_class: type[DataModule], model_defaults: dict, training_defaults: dict
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_arguments(parser, **model_defaults)
    add_training_arguments(parser)
    add_finetune_arguments(parser)
    data_module_class.add_arguments(parser)
    add_foreign_flags(parser, [*TRAINING_FLAGS, *DATA_FLAGS], "original flags")
    parser.set_defaults(**training_defaults)
    return parser


def parse_training_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags, with what the command line set noted, the tokenizer found and the fine-tuning
    defaults applied."""
    args = parse_noting_given(parser, argv)
    resolve_bpe_model(args)
    prepare_finetune_args(args)
    return args


def _check_resumable(path: Path, flag: str, world_size: int = 0, seed: int = 0) -> None:
    """A `UsageError` unless `path` is a complete checkpoint file (torch writes zip archives; a
    truncated one has lost the archive's directory at its end) and, given the `world_size` and
    `seed` of a mid-epoch resume, one whose sampler position was saved by as many ranks with
    that seed (the sampler can only continue the same sequence of batches)."""
    if not path.is_file():
        present = sorted(p.name for p in path.parent.glob("*.pt")) if path.parent.is_dir() else []
        there = f"it holds {', '.join(present[-5:])}" if present else "it holds no checkpoint"
        raise UsageError(
            f"{flag}: no {path.name} in {path.parent} ({there}); give a value that has a checkpoint "
            f"there, or {flag.split()[0]} {'0' if 'batch' in flag else '1'} to start afresh"
        )
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{flag}: {path} is truncated or not a torch checkpoint; resume from another one")
    if world_size:
        saved = torch.load(path, map_location="cpu", weights_only=False, mmap=True)  # mmap: tensors not read
        sampler = saved.get("sampler") or {}
        ranks, saved_seed = sampler.get("world_size", world_size), sampler.get("seed", seed)
        if ranks != world_size:
            raise UsageError(
                f"{flag}: {path.name} stopped mid-epoch on {ranks} rank(s), and its sampler cannot "
                f"split the rest of the epoch over {world_size}: resume with --world-size {ranks}"
            )
        if saved_seed != seed:
            raise UsageError(
                f"{flag}: {path.name} stopped mid-epoch in a run with --seed {saved_seed}, whose "
                f"batches --seed {seed} cannot continue: resume with --seed {saved_seed}"
            )


def check_training_args(args: argparse.Namespace, output_downsampling_factor: int) -> list[str]:
    """The user errors a training command can have, found before any rank starts (`UsageError`:
    one line naming the flag and the fix); returns the notes for the log (flags of the original
    with no effect here, what --use-fp16 and --world-size do on this machine)."""
    notes = check_foreign_flags(args, [*TRAINING_FLAGS, *DATA_FLAGS])
    if not args.train_shar_dirs:
        raise UsageError(
            "no training data: give --train-shar-dirs DIR [DIR ...] (lhotse shar folders; ZIPA's "
            "hard-coded data paths are not built in)"
        )
    check_data_dirs(args, "train_shar_dirs", "dev_shar_dirs", "unsup_shar_dirs", "mux_shar_dirs")
    if args.use_unsup_cr_ctc and not getattr(args, "unsup_shar_dirs", None):
        raise UsageError(
            "--use-unsup-cr-ctc True needs pseudo-labelled data: give --unsup-shar-dirs DIR [DIR ...] "
            "(zipformer_crctc/pseudo_label.py writes them)"
        )
    notes += _device_notes(args)
    exp_dir = Path(args.exp_dir)
    if args.start_batch > 0:
        world_size = int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else args.world_size
        _check_resumable(
            exp_dir / f"checkpoint-{args.start_batch}.pt", f"--start-batch {args.start_batch}", world_size, args.seed
        )
    elif args.start_epoch > 1:
        _check_resumable(exp_dir / f"epoch-{args.start_epoch - 1}.pt", f"--start-epoch {args.start_epoch}")
    given: frozenset[str] = getattr(args, "given_flags", frozenset())
    if not args.do_finetune:
        problem = architecture_problem(model_config_from_args(args, output_downsampling_factor))
        if problem:
            raise UsageError(problem)
        if args.use_cr_ctc and not args.use_ctc:
            raise UsageError("--use-cr-ctc True regularises the CTC head: give --use-ctc True as well")
    if args.use_cr_ctc and getattr(args, "enable_spec_aug", False):
        if "enable_spec_aug" in given:
            raise UsageError("--use-cr-ctc True applies SpecAugment inside the model: give --enable-spec-aug False")
        args.enable_spec_aug = False
        notes.append("--use-cr-ctc True: SpecAugment runs inside the model (--enable-spec-aug False)")
    return notes


def usable_cpu_cores() -> int:
    """The cores this process may run on: its CPU affinity (what SLURM, taskset and container
    CPU sets grant), not every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _device_notes(args: argparse.Namespace) -> list[str]:
    """One line each for --use-fp16 and --world-size: what they do on this machine. A world size
    beyond the CUDA devices present (on CPU: the cores this process may use) is lowered to their
    number (torchrun sets its own)."""
    notes = []
    cuda = str(args.device).startswith("cuda") and torch.cuda.is_available()
    if args.use_fp16:
        notes.append(
            "--use-fp16 True: float16 autocast with a gradient scaler on CUDA"
            if cuda
            else f"--use-fp16 True: float16 autocast needs CUDA; training in float32 on {args.device}"
        )
    if args.world_size > 1 and not launched_by_torchrun():
        present = torch.cuda.device_count() if cuda else usable_cpu_cores()
        kind = "CUDA devices" if cuda else "CPU cores"
        if args.world_size > present:
            here = f"{present} {kind[:-1] if present == 1 else kind} here"
            notes.append(
                f"--world-size {args.world_size}: {here}; training in {present} process{'es' if present > 1 else ''}"
            )
            args.world_size = present
        else:
            notes.append(
                f"--world-size {args.world_size}: {args.world_size} processes on {kind} ({'nccl' if cuda else 'gloo'})"
            )
    return notes


def run_training(
    description: str,
    data_module_class: type[DataModule],
    output_downsampling_factor: int,
    model_defaults: dict,
    training_defaults: dict,
    argv: Sequence[str] | None = None,
) -> None:
    """A recipe's train.py. A user error (see `check_training_args`; a fine-tuning checkpoint the
    model flags contradict) ends in one line and exit status 2."""
    parser = training_parser(description, data_module_class, model_defaults, training_defaults)
    with usage_errors_exit(parser.prog):
        args = parse_training_args(parser, argv)
        args.startup_notes = check_training_args(args, output_downsampling_factor)
        job = functools.partial(
            train, args, data_module_class=data_module_class, output_downsampling_factor=output_downsampling_factor
        )
        run_distributed(job, args.world_size, args.master_port)
