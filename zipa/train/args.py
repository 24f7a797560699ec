"""Command-line flags shared by the recipes (icefall/ZIPA names, so users' commands keep
working). A recipe calls these with its own defaults; it never copies them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zipa.model.config import PER_STACK_FIELDS, ModelConfig, preset
from zipa.model.io import default_device
from zipa.utils.flags import UsageError, str2bool

# ZIPA's defaults of --exp-dir and --bpe-model (relative to where the command runs).
ZIPA_EXP_DIR = "zipformer/exp"
ZIPA_BPE_MODEL = "ipa_simplified/unigram_127.model"
BPE_MODEL_HELP = (
    "the tokenizer; where the default path does not exist (run outside a checkout), the packaged copy of the same model"
)

# The `zipa.model.config` presets a recipe starts from (the recipe's flags choose the heads):
# the released small and large, the demo model of ./run.sh, the tests' tiny model.
PRESET_CHOICES = ("small", "large", "demo", "tiny")


# The model flags of the scripts that load a checkpoint (decode, average, pseudo-label): a
# default kept different from ZIPA's, said in their --help.
FROM_CHECKPOINT = (
    "not given, the architecture is read from the checkpoint (or exp-dir/config.json), so the "
    "defaults shown are not applied; given, they set what the weights cannot show (--causal, "
    "--chunk-size, --left-context-frames). ZIPA builds the model from these flags instead, "
    "and they must match the weights"
)


def add_model_arguments(parser: argparse.ArgumentParser, from_checkpoint: bool = False, **defaults: Any) -> None:
    """Architecture flags (per-stack values as comma-separated strings, as in ZIPA). Defaults:
    the `small` preset unless `--preset` or explicit flags say otherwise; with `from_checkpoint`
    (decoding), the checkpoint's."""
    base = preset("small")
    group = parser.add_argument_group("model", FROM_CHECKPOINT if from_checkpoint else None)
    group.add_argument(
        "--preset",
        choices=PRESET_CHOICES,
        default=None,
        help="start from a zipa.model.config preset: small, large (released), demo "
        "(run.sh's 7.6M-parameter CPU model), tiny (tests); flags given explicitly still win",
    )
    for name in PER_STACK_FIELDS:
        group.add_argument(
            "--" + name.replace("_", "-"),
            type=str,
            default=None,
            help=f"comma-separated per stack (default {','.join(map(str, getattr(base, name)))})",
        )
    for name in [
        "pos_dim",
        "decoder_dim",
        "joiner_dim",
        "context_size",
        "attention_decoder_dim",
        "attention_decoder_num_layers",
        "attention_decoder_attention_dim",
        "attention_decoder_num_heads",
        "attention_decoder_feedforward_dim",
    ]:
        group.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=f"default {getattr(base, name)}")
    for name in ["causal", "use_transducer", "use_ctc", "use_attention_decoder"]:
        group.add_argument(
            "--" + name.replace("_", "-"), type=str2bool, default=None, help=f"default {getattr(base, name)}"
        )
    group.add_argument(
        "--remove-diacritics",
        type=str2bool,
        default=False,
        help="strip diacritics (ZIPA's list) from the transcripts: the training labels, and the "
        "references when decoding",
    )
    parser.set_defaults(**defaults)


def model_config_from_args(args: argparse.Namespace, output_downsampling_factor: int) -> ModelConfig:
    """The ModelConfig the flags describe: the --preset (default small), the flags given,
    and the recipe's `output_downsampling_factor`."""
    config = preset(args.preset or "small")
    values: dict[str, Any] = {}
    for field in ModelConfig.__dataclass_fields__:
        value = getattr(args, field, None)
        if value is not None:
            values[field] = value
    values["output_downsampling_factor"] = output_downsampling_factor
    return ModelConfig.from_dict({**config.to_dict(), **values})


def architecture_problem(config: ModelConfig) -> str | None:
    """One line naming the architecture flags that contradict each other, or None."""
    stacks = len(config.num_encoder_layers)
    expanded = {}
    # Each stack's own values: all per-stack fields but the stack count and the streaming settings.
    for name in (n for n in PER_STACK_FIELDS if n not in ("num_encoder_layers", "chunk_size", "left_context_frames")):
        values = getattr(config, name)
        if len(values) not in (1, stacks):
            return (
                f"--{name.replace('_', '-')} {','.join(map(str, values))} has {len(values)} values but "
                f"--num-encoder-layers {','.join(map(str, config.num_encoder_layers))} has {stacks} stacks: "
                "give one value per stack (or one for all)"
            )
        expanded[name] = values * stacks if len(values) == 1 else values
    for stack, (unmasked, dim) in enumerate(zip(expanded["encoder_unmasked_dim"], expanded["encoder_dim"])):
        if unmasked > dim:
            return (
                f"--encoder-unmasked-dim: {unmasked} at stack {stack} exceeds --encoder-dim {dim} there; "
                "give values no larger than --encoder-dim's"
            )
    if not (config.use_ctc or config.use_transducer):
        return "--use-ctc and --use-transducer are both False: give --use-ctc True or --use-transducer True"
    return None


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
    add("--exp-dir", type=Path, default=Path(ZIPA_EXP_DIR))
    add("--bpe-model", type=str, default=ZIPA_BPE_MODEL, help=BPE_MODEL_HELP)
    add("--base-lr", type=float, default=0.045, help="with --do-finetune: 0.0045 unless given")
    add("--lr-batches", type=float, default=7500, help="with --do-finetune: 100000 unless given")
    add("--lr-epochs", type=float, default=3.5, help="with --do-finetune: 100 unless given")
    add("--ref-duration", type=float, default=600, help="reference batch duration (s) for the model's schedules")
    add("--warmup-batches", type=float, default=500.0, help="Eden's learning-rate warm-up")
    add("--grad-accumulation", type=int, default=1)
    add("--seed", type=int, default=42)
    add("--inf-check", type=str2bool, default=False, help="log modules producing non-finite values")
    add(
        "--print-diagnostics",
        type=str2bool,
        default=False,
        help="train a few batches, then print statistics of every module's activations, gradients and "
        "parameters (zipa.train.diagnostics) and stop",
    )
    add(
        "--max-batches",
        type=int,
        default=0,
        help="stop after this many batches (saving a checkpoint); 0: no limit. For trying a command line",
    )
    add("--save-every-n", type=int, default=4000)
    add("--keep-last-k", type=int, default=100)
    add("--average-period", type=int, default=200)
    add("--use-fp16", type=str2bool, default=False, help="CUDA autocast in float16 with a grad scaler")
    add("--use-bf16", type=str2bool, default=False, help="CUDA autocast in bfloat16")
    add("--tensorboard", type=str2bool, default=True)
    add("--log-interval", type=int, default=50)
    add("--valid-interval", type=int, default=3000)
    add("--max-minutes", type=float, default=0, help="stop (saving a checkpoint) after this long; 0: no limit")
    add(
        "--schedule-speedup",
        type=float,
        default=1.0,
        help="advance the model's warm-up schedules this many times faster (small CPU runs)",
    )
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
    add(
        "--do-finetune",
        type=str2bool,
        default=False,
        help="start from the weights of --finetune-ckpt (fresh optimiser and schedule); the architecture "
        "is the checkpoint's unless model flags say otherwise",
    )
    add(
        "--finetune-ckpt",
        type=str,
        default=None,
        help="a .pth (released or averaged), a training checkpoint (checkpoint-N.pt, epoch-N.pt: its model "
        "weights), a folder holding one, or a model name from `zipa models` / a Hub repo id",
    )
    add(
        "--init-modules",
        type=str,
        default=None,
        help="comma-separated parameter-name prefixes to load (e.g. encoder_embed,encoder); the others keep "
        "their fresh initialisation; not given: load all",
    )
    add(
        "--freeze-modules",
        type=str,
        default=None,
        help="comma-separated parameter-name prefixes not to train (left out of the optimiser)",
    )


_NOT_GIVEN = object()


def check_data_dirs(args: argparse.Namespace, *names: str) -> None:
    """A `UsageError` naming the first folder of the data flags `names` (dests such as
    "train_shar_dirs"; entries DIR or NAME=DIR) that does not exist."""
    for name in names:
        for entry in getattr(args, name, None) or []:
            folder = entry.split("=", 1)[-1]
            if not Path(folder).is_dir():
                raise UsageError(
                    f"--{name.replace('_', '-')} {entry}: no such folder; give lhotse shar folders "
                    "(cuts.NNNNNN.jsonl.gz and recording.NNNNNN.tar files)"
                )


def resolve_bpe_model(args: argparse.Namespace) -> None:
    """Set `args.bpe_model` to the tokenizer file to read: the one given (a `UsageError` when it
    is not there), or the default where it exists, else the packaged one."""
    from zipa.text.tokenizer import default_bpe_model_path

    value = getattr(args, "bpe_model", None)
    if value is not None and Path(value).is_file():
        return
    if value is not None and "bpe_model" in getattr(args, "given_flags", ()):
        raise UsageError(
            f"--bpe-model {value}: no such file; give the tokenizer's .model file, or leave the flag "
            "out for the packaged ipa_simplified/unigram_127.model"
        )
    args.bpe_model = str(default_bpe_model_path())


def parse_noting_given(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`parser.parse_args(argv)`, with `args.given_flags`: the names of the flags the command line
    set (as opposed to defaults). argparse puts a default only where the namespace has no value
    yet, so a second parse into a namespace of placeholders shows which ones the command line set."""
    args = parser.parse_args(argv)
    probe = argparse.Namespace(**dict.fromkeys(vars(args), _NOT_GIVEN))
    parser.parse_args(argv, namespace=probe)
    args.given_flags = frozenset(name for name, value in vars(probe).items() if value is not _NOT_GIVEN)
    return args


def add_checkpoint_selection_arguments(
    parser: argparse.ArgumentParser, avg: int = 15, use_averaged_model: bool = True
) -> None:
    """Which weights to use: icefall's --exp-dir with --iter/--epoch and --avg, or --model-path.
    The defaults are ZIPA's decode scripts' (its generate_averaged_model.py: --avg 9)."""
    group = parser.add_argument_group("checkpoint selection")
    add = group.add_argument
    add("--exp-dir", type=Path, default=Path(ZIPA_EXP_DIR))
    add("--epoch", type=int, default=30, help="use epoch-N.pt (with --avg: N-avg+1 .. N)")
    add(
        "--iter",
        type=int,
        default=0,
        help="use checkpoint-N.pt (with --avg: the newest --avg up to N); wins over --epoch",
    )
    add("--avg", type=int, default=avg, help="number of checkpoints to average")
    add(
        "--use-averaged-model",
        type=str2bool,
        default=use_averaged_model,
        help="average via the model_avg of two checkpoints --avg apart (icefall's method: --iter needs --avg + 1 "
        "checkpoints, --epoch N needs epoch-(N-avg).pt); False: the mean of the --avg checkpoints' weights",
    )
    add("--model-path", type=Path, default=None, help="a bare .pth (released or averaged) instead of --exp-dir")


def load_selected_model(args: argparse.Namespace, device: str = "cpu", **config_overrides: Any):
    """(model, config) chosen by the checkpoint-selection flags; a checkpoint that is missing or
    cannot be read is a `UsageError` naming the flag."""
    from zipa.model.io import CheckpointError

    try:
        if args.model_path is not None:
            from zipa.model.io import load_model

            return load_model(args.model_path, device=device, **config_overrides)
        from zipa.train.checkpoints import load_averaged_model

        return load_averaged_model(
            args.exp_dir,
            args.avg,
            args.iter,
            args.epoch if args.iter <= 0 else 0,
            args.use_averaged_model,
            device,
            **config_overrides,
        )
    except (FileNotFoundError, CheckpointError) as error:
        flag = "--model-path" if args.model_path is not None else "--iter" if args.iter > 0 else "--epoch"
        first = str(error).splitlines()[0].rstrip(":")
        raise UsageError(f"{flag}: {first}; choose a checkpoint that is there and complete") from None


def decoding_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings the weights cannot show, taken from model flags a decode command gave
    (streaming settings of causal models)."""
    overrides: dict[str, Any] = {}
    for name in ("causal", "chunk_size", "left_context_frames"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return overrides
