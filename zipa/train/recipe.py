"""What a recipe's train.py runs: parse flags, then train on every rank."""

from __future__ import annotations

import argparse
import functools
from typing import Optional, Sequence, Type

from zipa.data.protocols import DataModule
from zipa.train.args import add_finetune_arguments, add_model_arguments, add_training_arguments, parse_noting_given
from zipa.train.distributed import run_distributed
from zipa.train.finetune import prepare_finetune_args
from zipa.train.loop import train


def training_parser(
    description: str, data_module_class: Type[DataModule], model_defaults: dict, training_defaults: dict
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_arguments(parser, **model_defaults)
    add_training_arguments(parser)
    add_finetune_arguments(parser)
    data_module_class.add_arguments(parser)
    parser.set_defaults(**training_defaults)
    return parser


def parse_training_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The flags, with what the command line set noted and the fine-tuning defaults applied."""
    args = parse_noting_given(parser, argv)
    prepare_finetune_args(args)
    return args


def run_training(
    description: str,
    data_module_class: Type[DataModule],
    output_downsampling_factor: int,
    model_defaults: dict,
    training_defaults: dict,
    argv: Optional[Sequence[str]] = None,
) -> None:
    args = parse_training_args(training_parser(description, data_module_class, model_defaults, training_defaults), argv)
    job = functools.partial(
        train, args, data_module_class=data_module_class, output_downsampling_factor=output_downsampling_factor
    )
    run_distributed(job, args.world_size, args.master_port)
