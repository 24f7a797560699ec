"""The generate_averaged_model command (both recipes run it)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from zipa.model.io import save_model
from zipa.train.args import add_checkpoint_selection_arguments, add_model_arguments, load_selected_model
from zipa.train.compat import AVERAGING_FLAGS, add_foreign_flags, check_foreign_flags
from zipa.train.objective import add_objective, read_objective
from zipa.utils.flags import usage_errors_exit


def default_output(args: argparse.Namespace) -> Path:
    selection = f"iter-{args.iter}" if args.iter > 0 else f"epoch-{args.epoch}"
    suffix = "-use-averaged-model" if args.use_averaged_model else ""
    return Path(args.exp_dir) / f"averaged-{selection}-avg-{args.avg}{suffix}.pth"


def get_parser(description: str = "Average checkpoints.") -> argparse.ArgumentParser:
    """ZIPA's flags: checkpoint selection with its defaults (--avg 9, averaging through
    model_avg), its model flags (accepted: the architecture is the checkpoints' own, from
    <exp-dir>/config.json or their weights) and --tokens; plus --output."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_checkpoint_selection_arguments(parser, avg=9, use_averaged_model=True)
    add_model_arguments(parser, from_checkpoint=True)
    parser.add_argument(
        "--output", type=Path, default=None, help="where to write the .pth (config.json goes beside it)"
    )
    add_foreign_flags(parser, AVERAGING_FLAGS, "original flags")
    return parser


def main(argv: Sequence[str] | None = None, description: str = "Average checkpoints.") -> int:
    parser = get_parser(description)
    args = parser.parse_args(argv)
    if args.model_path is not None:
        parser.error("--model-path is already one model: give --exp-dir with --iter or --epoch")
    with usage_errors_exit(parser.prog):
        for note in check_foreign_flags(args, AVERAGING_FLAGS):
            print(note)
        model, config = load_selected_model(args)
    objective = read_objective(Path(args.exp_dir) / "config.json")  # before save_model may overwrite it
    output = args.output or default_output(args)
    save_model(model, config, output)
    add_objective(output.with_name("config.json"), objective)
    print(f"wrote {output}")
    return 0
