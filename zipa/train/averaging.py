"""The generate_averaged_model command (both recipes run it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from zipa.model.io import save_model
from zipa.train.args import add_checkpoint_selection_arguments, load_selected_model


def default_output(args: argparse.Namespace) -> Path:
    selection = f"iter-{args.iter}" if args.iter > 0 else f"epoch-{args.epoch}"
    suffix = "-use-averaged-model" if args.use_averaged_model else ""
    return Path(args.exp_dir) / f"averaged-{selection}-avg-{args.avg}{suffix}.pth"


def main(argv: Optional[Sequence[str]] = None, description: str = "Average checkpoints.") -> int:
    parser = argparse.ArgumentParser(description=description)
    add_checkpoint_selection_arguments(parser)
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the .pth (config.json goes beside it)")
    args = parser.parse_args(argv)
    if args.model_path is not None:
        parser.error("--model-path is already one model: give --exp-dir with --iter or --epoch")
    model, config = load_selected_model(args)
    output = args.output or default_output(args)
    save_model(model, config, output)
    print(f"wrote {output}")
    return 0
