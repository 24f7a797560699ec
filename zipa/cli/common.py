"""What the commands share: usage errors, argument types and groups, and loading the model
that --model, --backend, --device... name."""

from __future__ import annotations

import argparse
from pathlib import Path

from zipa.decoding.options import DECODING_METHODS, DEFAULT_OVERLAP, DEFAULT_WINDOW, DecodingOptions
from zipa.utils.progress import PROGRESS_MODES


class UsageError(Exception):
    """A problem with the command line or the setup: reported, exit status 2."""


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


_FLAGS = {
    "window": "--window/--overlap",
    "overlap": "--window/--overlap",
    "decoding": "--decoding",
    "beam": "--beam-size",
    "batch_size": "--batch-size",
    "topk": "--topk",
}


def decoding_options(args: argparse.Namespace) -> DecodingOptions:
    """The `DecodingOptions` of a command's flags (those it has); UsageError naming the flag."""
    try:
        return DecodingOptions(
            decoding=args.decoding,
            beam=args.beam_size,
            window=args.window,
            overlap=args.overlap,
            batch_size=args.batch_size,
            topk=getattr(args, "topk", 0) or 0,
            remove_diacritics=getattr(args, "remove_diacritics", False),
        )
    except ValueError as e:
        setting = str(e).split()[0]
        raise UsageError(f"{_FLAGS.get(setting, setting)}: {e}") from None


def add_model_arg(p: argparse.ArgumentParser) -> None:
    """--model / -m: any model `zipa.load_model` takes."""
    p.add_argument(
        "--model",
        "-m",
        required=True,
        help="a .pth checkpoint, a folder holding one, a model name or Hub repo id (see `zipa models`)",
    )


def add_runtime_args(p: argparse.ArgumentParser, progress: bool = True) -> None:
    """What transcribe, align, evaluate and serve share: the model, where and how it runs, and
    (``progress``) how progress is shown."""
    add_model_arg(p)
    p.add_argument("--device", default=None, help="cuda, cpu, cuda:1... (default: cuda when available, else cpu)")
    p.add_argument("--num-threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument(
        "--decoding",
        choices=DECODING_METHODS,
        default="greedy",
        help="greedy (as the released ZIPA inference) or beam: CTC prefix beam search / transducer "
        "modified beam search; times then come from the best alignment of the beam's result",
    )
    p.add_argument("--beam-size", type=positive_int, default=4, help="beam width for --decoding beam (default 4)")
    p.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW,
        help=f"files longer than this (s) are decoded in overlapping windows (default {DEFAULT_WINDOW:g})",
    )
    p.add_argument(
        "--overlap",
        type=float,
        default=DEFAULT_OVERLAP,
        help=f"overlap of neighbouring windows in seconds (default {DEFAULT_OVERLAP:g})",
    )
    p.add_argument("--bpe-model", default=None, help="tokenizer model (default: the packaged ipa_simplified one)")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    if progress:
        add_progress_args(p)
    p.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="torch (a checkpoint) or onnx (--model: a folder from `zipa export-onnx`, a .onnx file, or "
        "upstream ZIPA's published graphs: their folder, or a model name / Hub repo id)",
    )
    p.add_argument(
        "--onnx-precision",
        choices=("fp32", "int8", "fp16"),
        default="fp32",
        help="which graphs of an ONNX export to run (default fp32)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "bf16-full", "fp16"),  # zipa.inference.transcriber.PRECISIONS (not imported: torch)
        default="fp32",
        help="torch backend, CTC models: bf16 runs the products in bfloat16 on CPUs with AMX or "
        "AVX512-BF16 (1.35-1.7x faster than fp32 at 30 s with the released models on an Intel Xeon; "
        "the whole model on CUDA), bf16-full the whole model (faster, further from fp32), fp16 "
        "float16 (CUDA); not exact: see the README's Performance section for the PER cost (default fp32)",
    )


def add_progress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="auto (default: a bar on a terminal, else log lines), bar, log (a line on stderr every "
        "--progress-interval seconds: files done, audio decoded, elapsed, ETA) or none",
    )
    p.add_argument(
        "--progress-interval",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between --progress log lines (default 30)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress: the same as --progress none")


def onnx_providers(device: str | None) -> list[str] | None:
    """onnxruntime providers for --device (CPU unless a cuda device is asked for)."""
    if device is not None and device.startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return None


def load_transcriber(args: argparse.Namespace, use_aligner: bool = True):
    """(the Transcriber that --model, --backend, --device... name, the checkpoint or ONNX path it
    was loaded from); UsageError when it cannot be loaded. `use_aligner`: attach the frame
    aligner that --aligner names (default auto: the one beside the model), for commands that
    write times; otherwise none is loaded."""
    import torch

    from zipa.hub.pretrained import resolve_model
    from zipa.inference.transcriber import Transcriber

    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    if args.device is not None and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available (torch {torch.__version__}); use --device cpu")
    aligner = getattr(args, "aligner", "auto") if use_aligner else None
    aligner = None if aligner == "none" else aligner
    try:
        if args.backend == "onnx":
            if aligner not in (None, "auto"):
                raise UsageError("--aligner works with the torch backend (the aligner reads the PyTorch encoder)")
            transcriber = Transcriber.from_onnx(
                args.model,
                args.bpe_model,
                num_threads=args.num_threads,
                providers=onnx_providers(args.device),
                precision=args.onnx_precision,
                cache_dir=args.cache_dir,
            )
            return transcriber, Path(args.model)
        precision = getattr(args, "precision", "fp32")
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if precision == "fp16" and not device.startswith("cuda"):
            raise UsageError("--precision fp16 needs --device cuda (on a CPU use bf16)")
        model_path = resolve_model(args.model, cache_dir=args.cache_dir)
        transcriber = Transcriber.from_checkpoint(
            model_path, args.bpe_model, args.device, aligner=aligner, precision=precision
        )
        return transcriber, Path(model_path)
    except (OSError, ValueError, ImportError) as e:
        raise UsageError(str(e)) from None
