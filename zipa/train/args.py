"""Command-line flags shared by the recipes (icefall/ZIPA names, so users' commands keep
working). A recipe calls these with its own defaults; it never copies them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from zipa.model.config import ModelConfig, preset
from zipa.model.io import default_device
from zipa.utils.flags import str2bool

# The `zipa.model.config` presets a recipe starts from (the recipe's flags choose the heads):
# the released small and large, the demo model of ./run.sh, the tests' tiny model.
PRESET_CHOICES = ("small", "large", "demo", "tiny")


def add_model_arguments(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """Architecture flags (per-stack values as comma-separated strings, as in ZIPA). Defaults:
    the `small` preset unless `--preset` or explicit flags say otherwise."""
    base = preset("small")
    group = parser.add_argument_group("model")
    group.add_argument("--preset", choices=PRESET_CHOICES, default=None,
                       help="start from a zipa.model.config preset: small, large (released), demo "
                       "(run.sh's 7.6M-parameter CPU model), tiny (tests); flags given explicitly still win")
    per_stack = ["num_encoder_layers", "downsampling_factor", "feedforward_dim", "num_heads", "encoder_dim",
                 "query_head_dim", "value_head_dim", "pos_head_dim", "encoder_unmasked_dim", "cnn_module_kernel",
                 "chunk_size", "left_context_frames"]
    for name in per_stack:
        group.add_argument("--" + name.replace("_", "-"), type=str, default=None,
                           help=f"comma-separated per stack (default {','.join(map(str, getattr(base, name)))})")
    for name in ["pos_dim", "decoder_dim", "joiner_dim", "context_size", "attention_decoder_dim",
                 "attention_decoder_num_layers", "attention_decoder_attention_dim",
                 "attention_decoder_num_heads", "attention_decoder_feedforward_dim"]:
        group.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=f"default {getattr(base, name)}")
    for name in ["causal", "use_transducer", "use_ctc", "use_attention_decoder"]:
        group.add_argument("--" + name.replace("_", "-"), type=str2bool, default=None,
                           help=f"default {getattr(base, name)}")
    parser.set_defaults(**defaults)


def model_config_from_args(args: argparse.Namespace, output_downsampling_factor: int) -> ModelConfig:
    """The ModelConfig the flags describe: the --preset (default small), the flags given,
    and the recipe's `output_downsampling_factor`."""
    config = preset(args.preset or "small")
    values: Dict[str, Any] = {}
    for field in ModelConfig.__dataclass_fields__:
        value = getattr(args, field, None)
        if value is not None:
            values[field] = value
    values["output_downsampling_factor"] = output_downsampling_factor
    return ModelConfig.from_dict({**config.to_dict(), **values})


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Loop, optimiser, checkpointing and logging flags of ZIPA's train.py."""
    group = parser.add_argument_group("training")
    add = group.add_argument
    add("--world-size", type=int, default=1, help="processes to spawn on this machine (torchrun sets its own)")
    add("--master-port", type=int, default=12354)
    add("--device", default=str(default_device()), help="cuda or cpu (default: cuda when available)")
    add("--num-epochs", type=int, default=30)
    add("--start-epoch", type=int, default=1, help="resume from epoch-(N-1).pt when > 1")
    add("--start-batch", type=int, default=0, help="resume from checkpoint-N.pt when > 0 (wins over --start-epoch)")
    add("--exp-dir", type=Path, default=Path("exp"))
    add("--bpe-model", type=str, default=None, help="tokenizer (default: the packaged ipa_simplified model)")
    add("--base-lr", type=float, default=0.045, help="with --do-finetune: 0.0045 unless given")
    add("--lr-batches", type=float, default=7500, help="with --do-finetune: 100000 unless given")
    add("--lr-epochs", type=float, default=3.5, help="with --do-finetune: 100 unless given")
    add("--ref-duration", type=float, default=600, help="reference batch duration (s) for the model's schedules")
    add("--warmup-batches", type=float, default=500.0, help="Eden's learning-rate warm-up")
    add("--grad-accumulation", type=int, default=1)
    add("--seed", type=int, default=42)
    add("--inf-check", type=str2bool, default=False, help="log modules producing non-finite values")
    add("--save-every-n", type=int, default=4000)
    add("--keep-last-k", type=int, default=100)
    add("--average-period", type=int, default=200)
    add("--use-fp16", type=str2bool, default=False, help="CUDA autocast in float16 with a grad scaler")
    add("--use-bf16", type=str2bool, default=False, help="CUDA autocast in bfloat16")
    add("--tensorboard", type=str2bool, default=True)
    add("--log-interval", type=int, default=50)
    add("--valid-interval", type=int, default=3000)
    add("--max-minutes", type=float, default=0, help="stop (saving a checkpoint) after this long; 0: no limit")
    add("--full-libri", type=str2bool, default=True, help="accepted for ZIPA command lines; has no effect")
    add("--wandb", type=str2bool, default=False, help="accepted for ZIPA command lines; logs go to TensorBoard")
    add("--schedule-speedup", type=float, default=1.0,
        help="advance the model's warm-up schedules this many times faster (small CPU runs)")
    # Losses.
    add("--ctc-loss-scale", type=float, default=0.2)
    add("--cr-loss-scale", type=float, default=0.15)
    add("--cr-loss-masked-scale", type=float, default=1.0)
    add("--time-mask-ratio", type=float, default=2.0)
    add("--use-cr-ctc", type=str2bool, default=False)
    add("--use-unsup-cr-ctc", type=str2bool, default=False)
    add("--unsup-cr-ctc-loss-scale", type=float, default=0.5)
    add("--attention-decoder-loss-scale", type=float, default=0.8)
    add("--prune-range", type=int, default=5)
    add("--lm-scale", type=float, default=0.25)
    add("--am-scale", type=float, default=0.1)
    add("--simple-loss-scale", type=float, default=0.5)
    add("--warm-step", type=int, default=2000, help="batches over which the transducer loss scales warm up")


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """ZIPA's finetune.py flags (see zipa.train.finetune). With --do-finetune, --base-lr,
    --lr-batches and --lr-epochs default to finetune.py's 0.0045, 100000 and 100."""
    group = parser.add_argument_group("fine-tuning")
    add = group.add_argument
    add("--do-finetune", type=str2bool, default=False,
        help="start from the weights of --finetune-ckpt (fresh optimiser and schedule); the architecture "
        "is the checkpoint's unless model flags say otherwise")
    add("--finetune-ckpt", type=str, default=None,
        help="a .pth (released or averaged), a training checkpoint (checkpoint-N.pt, epoch-N.pt: its model "
        "weights), a folder holding one, or a model name from `zipa models` / a Hub repo id")
    add("--init-modules", type=str, default=None,
        help="comma-separated parameter-name prefixes to load (e.g. encoder_embed,encoder); the others keep "
        "their fresh initialisation; not given: load all")
    add("--freeze-modules", type=str, default=None,
        help="comma-separated parameter-name prefixes not to train (left out of the optimiser)")


_NOT_GIVEN = object()


def parse_noting_given(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """`parser.parse_args(argv)`, with `args.given_flags`: the names of the flags the command line
    set (as opposed to defaults). argparse puts a default only where the namespace has no value
    yet, so a second parse into a namespace of placeholders shows which ones the command line set."""
    args = parser.parse_args(argv)
    probe = argparse.Namespace(**dict.fromkeys(vars(args), _NOT_GIVEN))
    parser.parse_args(argv, namespace=probe)
    args.given_flags = frozenset(name for name, value in vars(probe).items() if value is not _NOT_GIVEN)
    return args


def add_checkpoint_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """Which weights to use: icefall's --exp-dir with --iter/--epoch and --avg, or --model-path."""
    group = parser.add_argument_group("checkpoint selection")
    add = group.add_argument
    add("--exp-dir", type=Path, default=Path("exp"))
    add("--epoch", type=int, default=0, help="use epoch-N.pt (with --avg: N-avg+1 .. N)")
    add("--iter", type=int, default=0,
        help="use checkpoint-N.pt (with --avg: the newest --avg up to N); wins over --epoch")
    add("--avg", type=int, default=1, help="number of checkpoints to average")
    add("--use-averaged-model", type=str2bool, default=False,
        help="average via the model_avg of two checkpoints --avg apart (icefall's method)")
    add("--model-path", type=Path, default=None, help="a bare .pth (released or averaged) instead of --exp-dir")


def load_selected_model(args: argparse.Namespace, device: str = "cpu", **config_overrides: Any):
    """(model, config) chosen by the checkpoint-selection flags."""
    if args.model_path is not None:
        from zipa.model.io import load_model

        return load_model(args.model_path, device=device, **config_overrides)
    from zipa.train.checkpoints import load_averaged_model

    if args.iter <= 0 and args.epoch <= 0:
        raise SystemExit("give --model-path, or --exp-dir with --iter or --epoch")
    return load_averaged_model(args.exp_dir, args.avg, args.iter, args.epoch if args.iter <= 0 else 0,
                               args.use_averaged_model, device, **config_overrides)


def decoding_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """Settings the weights cannot show, taken from model flags a decode command gave
    (streaming settings of causal models)."""
    overrides: Dict[str, Any] = {}
    for name in ("causal", "chunk_size", "left_context_frames"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return overrides
