"""The `zipa` command: transcribe, align (timestamps), export to ONNX and list models.

    zipa transcribe AUDIO_OR_DIR... --model M [--format txt|tsv|jsonl|ctm|textgrid] [--output PATH]
    zipa align AUDIO_OR_DIR... --model M [--format textgrid|ctm|jsonl|tsv|txt] [--output PATH]
    zipa export-onnx --model M --out DIR [--int8] [--fp16]
    zipa models

Argument parsing and wiring only: decoding lives in `zipa.inference.transcriber`, models in
`zipa.inference.pretrained`, times in `zipa.inference.timestamps`, formats in `zipa.inference.writers`.

Exit status: 0 when every file was transcribed, 1 when some failed (each is reported on stderr
and skipped), 2 for a usage or setup error (bad option, model not found).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from zipa.inference.long_audio import DEFAULT_OVERLAP, DEFAULT_WINDOW, check_window

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
DECODING_METHODS = ("greedy", "beam")  # as zipa.inference.transcriber.DECODING_METHODS (not imported: keeps --help fast)


class UsageError(Exception):
    """A problem with the command line or the setup: reported, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Inputs and outputs
# ---------------------------------------------------------------------------------------------


def find_audio(inputs: Sequence[str]) -> Tuple[List[Tuple[Path, Path]], List[str]]:
    """(audio files as (path, path relative to its input), errors for inputs that do not exist).

    Folders are searched recursively for wav/flac/ogg/mp3 files (any case), in sorted order;
    files named on the command line are taken whatever their suffix.
    """
    files, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                print(f"warning: {path}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder", file=sys.stderr)
            files += [(p, p.relative_to(path)) for p in found]
        elif path.exists():
            files.append((path, Path(path.name)))
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors


def textgrid_paths(files: List[Tuple[Path, Path]], output: Optional[str]) -> List[Optional[Path]]:
    """Where each file's TextGrid goes: None for stdout (one input, no --output), ``output``
    itself when it names a .TextGrid file, else ``output/<relative path>.TextGrid``."""
    if output is None or output == "-":
        if len(files) > 1:
            raise UsageError("--format textgrid with several audio files needs --output DIR")
        return [None] * len(files)
    out = Path(output)
    if out.suffix.lower() == ".textgrid" and not out.is_dir():
        if len(files) > 1:
            raise UsageError(f"--output {out} names one TextGrid file, but there are {len(files)} audio files")
        return [out]
    paths = [out / rel.with_suffix(".TextGrid") for _, rel in files]
    seen: Dict[Path, Path] = {}
    for (audio, _), target in zip(files, paths):
        if target in seen:
            raise UsageError(f"{seen[target]} and {audio} would both be written to {target}")
        seen[target] = audio
    return paths


def _normalizer(remove_diacritics: bool) -> Optional[Callable[[str], str]]:
    if not remove_diacritics:
        return None
    try:
        from zipa.text.ipa import normalize_ipa
    except ImportError as e:
        raise UsageError(f"--remove-diacritics needs zipa.text.ipa.normalize_ipa, which cannot be imported ({e})") from None
    return lambda text: normalize_ipa(text, remove_diacritics=True)


def _without_boundaries(alignment):
    """--no-word-boundaries: the transcript is every phone joined with nothing between."""
    from zipa.inference.timestamps import Alignment

    return Alignment("".join(p.label for p in alignment.phones), alignment.phones, [])


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def run_transcription(args: argparse.Namespace, timestamps: bool) -> int:
    from zipa.inference.pretrained import resolve_model
    from zipa.inference.transcriber import Transcriber
    from zipa.inference.writers import STREAM_WRITERS, TIMED_FORMATS, Record, textgrid_for, write_text

    timestamps = timestamps or args.format in TIMED_FORMATS
    try:
        check_window(args.window, args.overlap)
    except ValueError as e:
        raise UsageError(f"--window/--overlap: {e}") from None
    normalize = _normalizer(args.remove_diacritics)
    files, failures = find_audio(args.inputs)
    if not files and not failures:
        raise UsageError("no audio files found")
    tg_paths = textgrid_paths(files, args.output) if args.format == "textgrid" else []
    if args.format != "textgrid" and args.output and Path(args.output).is_dir():
        raise UsageError(f"--output {args.output} is a folder; --format {args.format} writes one file")

    import torch

    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    if args.device is not None and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available (torch {torch.__version__}); use --device cpu")
    try:
        if args.backend == "onnx":
            transcriber = Transcriber.from_onnx(
                args.model, args.bpe_model, num_threads=args.num_threads,
                providers=_onnx_providers(args.device), precision=args.onnx_precision,
            )
        else:
            model_path = resolve_model(args.model, cache_dir=args.cache_dir)
            transcriber = Transcriber.from_checkpoint(model_path, args.bpe_model, args.device)
    except (OSError, ValueError, ImportError) as e:
        raise UsageError(str(e)) from None
    results = transcriber.transcribe_files(
        [p for p, _ in files],
        window=args.window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        progress=None if not args.quiet else False,
        decoding=args.decoding,
        beam=args.beam_size,
    )

    records: List[Record] = []
    record_paths: List[Optional[Path]] = []
    for i, result in enumerate(results):
        if not result.ok:
            failures.append(result.error)
            continue
        alignment = transcriber.alignment(result.tokens, result.duration, normalize)
        if args.no_word_boundaries:
            alignment = _without_boundaries(alignment)
        records.append(Record(str(result.path), result.duration, alignment))
        record_paths.append(tg_paths[i] if tg_paths else None)

    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    words = not args.no_word_boundaries
    if args.format == "textgrid":
        for record, target in zip(records, record_paths):
            write_text(textgrid_for(record, words), target)
    else:
        text = STREAM_WRITERS[args.format](records, timestamps=timestamps, words=words)
        write_text(text, Path(args.output) if args.output else None)
    if failures:
        print(f"{len(failures)} of {len(failures) + len(records)} inputs failed", file=sys.stderr)
    return 1 if failures else 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    return run_transcription(args, timestamps=args.timestamps)


def cmd_align(args: argparse.Namespace) -> int:
    return run_transcription(args, timestamps=True)


def _onnx_providers(device: Optional[str]) -> Optional[List[str]]:
    """onnxruntime providers for --device (CPU unless a cuda device is asked for)."""
    if device is not None and device.startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return None


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from zipa.inference.pretrained import resolve_model
    from zipa.model.io import load_model
    from zipa.onnx.export import export_model

    try:
        model, _ = load_model(resolve_model(args.model, cache_dir=args.cache_dir))
        written = export_model(model, args.out, int8=args.int8, fp16=args.fp16, bpe_model=args.bpe_model, opset=args.opset)
    except (OSError, ValueError, ImportError, NotImplementedError) as e:
        raise UsageError(str(e)) from None
    for path in written.values():
        print(path)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from zipa.inference.pretrained import format_table

    sys.stdout.write(format_table(args.cache_dir))
    print(
        "\nUse a name or repo id with --model; checkpoints are downloaded into the Hugging Face "
        "cache on first use (HF_HUB_OFFLINE=1: cache only)."
    )
    return 0


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_decoding_args(p: argparse.ArgumentParser, default_format: str) -> None:
    from zipa.inference.writers import FORMATS

    p.add_argument("inputs", nargs="+", metavar="AUDIO_OR_DIR",
                   help="audio files, or folders searched recursively for wav/flac/ogg/mp3")
    p.add_argument("--model", "-m", required=True,
                   help="a .pth checkpoint, a folder holding one, a model name or Hub repo id (see `zipa models`)")
    p.add_argument("--format", "-f", choices=FORMATS, default=default_format,
                   help=f"output format (default: {default_format})")
    p.add_argument("--output", "-o", default=None,
                   help="output file (default: stdout); for textgrid a folder, or a .TextGrid file for one input")
    p.add_argument("--batch-size", type=_positive_int, default=8,
                   help="files (or windows of long files) decoded together (default 8). They are sorted by "
                        "length to limit padding, but padding still changes a file's result slightly, as in "
                        "the original ZIPA; 1 decodes each file alone, exactly as one-file inference")
    p.add_argument("--device", default=None, help="cuda, cpu, cuda:1... (default: cuda when available, else cpu)")
    p.add_argument("--num-threads", type=_positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--decoding", choices=DECODING_METHODS, default="greedy",
                   help="greedy (as the released ZIPA inference) or beam: CTC prefix beam search / transducer "
                        "modified beam search; times then come from the best alignment of the beam's result")
    p.add_argument("--beam-size", type=_positive_int, default=4, help="beam width for --decoding beam (default 4)")
    p.add_argument("--remove-diacritics", action="store_true",
                   help="strip diacritics from the output (zipa.text.ipa.normalize_ipa)")
    p.add_argument("--no-word-boundaries", action="store_true",
                   help="transcript = all phones joined with no spaces; no word tier/list")
    p.add_argument("--window", type=float, default=DEFAULT_WINDOW,
                   help=f"files longer than this (s) are decoded in overlapping windows (default {DEFAULT_WINDOW:g})")
    p.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                   help=f"overlap of neighbouring windows in seconds (default {DEFAULT_OVERLAP:g})")
    p.add_argument("--bpe-model", default=None, help="tokenizer model (default: the packaged ipa_simplified one)")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="torch (a checkpoint) or onnx (--model is a folder from `zipa export-onnx`, or a CTC .onnx file)")
    p.add_argument("--onnx-precision", choices=("fp32", "int8", "fp16"), default="fp32",
                   help="which graphs of an ONNX export to run (default fp32)")


FORMATS_HELP = """output formats:
  txt       <path> TAB <transcript>, one line per file
  tsv       header, then path, transcript; with times: path, start, end, phone, confidence per phone
  jsonl     {"path", "duration", "text"}; with times also "phones" and "words" lists
  ctm       <file-id> 1 <start> <duration> <phone> <confidence>, one line per phone
  textgrid  Praat TextGrid per file: tiers "phones" and "words" covering the whole file

The transcript is words (split at the model's word boundaries) joined by spaces; a phone is an
IPA character with the length/diacritic marks that follow it. Times: encoder frame j spans
0.035 + j*0.02 s .. +0.02 s (CTC models; 0.04 s frames for transducers); a phone spans the frames
where the model emits it. Files that fail are reported on stderr and skipped (exit status 1).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zipa", description="ZIPA multilingual IPA phone recognition.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("transcribe", help="audio -> IPA transcripts", epilog=FORMATS_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Transcribe audio files to IPA phones.")
    _add_decoding_args(p, "txt")
    p.add_argument("--timestamps", action="store_true",
                   help="per-phone times and confidences in jsonl/tsv (always on for ctm/textgrid)")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("align", help="audio -> timed phones and words (TextGrid, CTM...)", epilog=FORMATS_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Per-phone and per-word times and confidences from the model's frame "
                                   "alignment (greedy path), written as Praat TextGrid, CTM, jsonl or tsv.")
    _add_decoding_args(p, "textgrid")
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("export-onnx", help="export a model to ONNX (fp32, and int8/fp16 copies)",
                       description="Export a model to ONNX for onnxruntime: model.onnx (CTC) or encoder/decoder/"
                                   "joiner.onnx (transducer), with tokens.txt, bpe.model and config.json. "
                                   "Run it with `zipa transcribe --backend onnx --model DIR`.")
    p.add_argument("--model", "-m", required=True,
                   help="a .pth checkpoint, a folder holding one, a model name or Hub repo id (see `zipa models`)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--int8", action="store_true", help="also write int8 (dynamic quantisation) graphs: *.int8.onnx")
    p.add_argument("--fp16", action="store_true", help="also write float16 graphs (for GPUs): *.fp16.onnx")
    p.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--bpe-model", default=None, help="tokenizer model (default: the packaged ipa_simplified one)")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("models", help="list the released ZIPA models", description="List the released ZIPA models.")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"zipa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
