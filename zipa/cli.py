"""The `zipa` command: transcribe, align (timestamps), export to ONNX and list models.

    zipa transcribe AUDIO_OR_DIR... --model M [--format txt|tsv|jsonl|ctm|textgrid] [--output PATH]
    zipa align AUDIO_OR_DIR... --model M [--format textgrid|ctm|jsonl|tsv|txt] [--output PATH] [--plot OUT]
    zipa export-onnx --model M --out DIR [--int8] [--fp16]
    zipa models

    (transcribe, align: [--resume] [--progress auto|bar|log|none] [-q])

Argument parsing and wiring only: decoding lives in `zipa.inference.transcriber`, models in
`zipa.inference.pretrained`, times in `zipa.inference.timestamps`, formats in `zipa.inference.writers`,
outputs that grow file by file and resume in `zipa.inference.resumable`, progress in
`zipa.inference.progress`. Here: which files, where their results go, and signals (a first
SIGINT/SIGTERM stops decoding after the current batch, see `_StopRequest`).

Exit status: 0 when every file was transcribed, 1 when some failed (each is reported on stderr
and skipped) or an output could not be written, 2 for a usage or setup error (bad option, model
not found), 130 / 143 when stopped by SIGINT (Ctrl-C) / SIGTERM (what is finished is kept:
`--resume` goes on from there), 141 when stdout is a pipe whose reader went away (`| head`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from zipa import __version__
from zipa.inference.long_audio import DEFAULT_OVERLAP, DEFAULT_WINDOW, check_window

# What folder searches look for: the formats libsndfile reads (`soundfile.available_formats()`)
# under the names their files go by. RAW (no header: its rate cannot be known) and MAT4/MAT5
# (.mat files are mostly not audio) are left out; .opus needs Opus in OGG, .mp3 libsndfile >= 1.1.
_FORMAT_SUFFIXES = {
    "WAV": (".wav",), "WAVEX": (".wav",), "RF64": (".rf64",), "W64": (".w64",), "FLAC": (".flac",),
    "OGG": (".ogg", ".oga"), "MP3": (".mp3",), "AIFF": (".aiff", ".aif", ".aifc"), "AU": (".au", ".snd"),
    "CAF": (".caf",), "NIST": (".sph", ".nist"), "IRCAM": (".sf",), "VOC": (".voc",), "SVX": (".8svx", ".svx"),
    "PVF": (".pvf",), "AVR": (".avr",), "SD2": (".sd2",), "PAF": (".paf",), "HTK": (".htk",), "WVE": (".wve",),
    "SDS": (".sds",), "XI": (".xi",), "MPC2K": (".snd",),
}
_NOT_SEARCHED = ("RAW", "MAT4", "MAT5")
DECODING_METHODS = ("greedy", "beam")  # as zipa.inference.transcriber.DECODING_METHODS (not imported: keeps --help fast)
PROGRESS_MODES = ("auto", "bar", "log", "none")  # as zipa.inference.progress.PROGRESS_MODES


class UsageError(Exception):
    """A problem with the command line or the setup: reported, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Inputs and outputs
# ---------------------------------------------------------------------------------------------


def find_audio(inputs: Sequence[str]) -> Tuple[List[Tuple[Path, Path]], List[str]]:
    """(audio files as (path, path relative to its input), errors for inputs that do not exist).

    Folders are searched recursively, in sorted order, for files with the suffixes of the
    formats soundfile can read (`audio_suffixes`, any case); files named on the command line
    are taken whatever their suffix.
    """
    files, errors = [], []
    suffixes = audio_suffixes()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                print(f"warning: {path}: no audio files in this folder (looked for {', '.join(suffixes)})",
                      file=sys.stderr)
            files += [(p, p.relative_to(path)) for p in found]
        elif path.exists():
            files.append((path, Path(path.name)))
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors


@functools.lru_cache(maxsize=None)
def audio_suffixes() -> Tuple[str, ...]:
    """The suffixes (lower case, sorted) of the audio formats this soundfile (libsndfile) reads:
    .wav .flac .ogg .oga .opus .aiff .aif .caf .au .w64 .sph ..., .mp3 where it reads MP3."""
    import soundfile as sf

    formats = sf.available_formats()
    found = set()
    for name in formats:
        if name not in _NOT_SEARCHED:
            found.update(_FORMAT_SUFFIXES.get(name, ("." + name.lower(),)))
    if "OGG" in formats and "OPUS" in sf.available_subtypes("OGG"):
        found.add(".opus")
    return tuple(sorted(found))


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
    return targets_in_folder(files, out, ".TextGrid")


def targets_in_folder(files: List[Tuple[Path, Path]], folder: Path, suffix: str) -> List[Path]:
    """``folder/<relative path><suffix>`` for each audio file; two files that would share a
    target (``a.wav`` and ``a.flac``) are a usage error."""
    paths = [folder / rel.with_suffix(suffix) for _, rel in files]
    seen: Dict[Path, Path] = {}
    for (audio, _), target in zip(files, paths):
        if target in seen:
            raise UsageError(f"{seen[target]} and {audio} would both be written to {target}")
        seen[target] = audio
    return paths


PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def plot_paths(files: List[Tuple[Path, Path]], output: str) -> List[Path]:
    """Where `zipa align --plot OUT` puts each file's picture: ``OUT`` itself for one file
    when it names an image (.png, .svg, .pdf...), else ``OUT/<relative path>.png``."""
    out = Path(output)
    if out.suffix.lower() in PLOT_SUFFIXES and not out.is_dir():
        if len(files) > 1:
            raise UsageError(f"--plot {out} names one picture, but there are {len(files)} audio files; give a folder")
        return [out] * len(files)
    return targets_in_folder(files, out, ".png")


def write_plot(record, target: Path, words: bool) -> None:
    """--plot: one transcribed file's spectrogram with its phone and word tiers (`zipa.plot`),
    written atomically."""
    from zipa.plot import save_alignment

    save_alignment(record.path, record.alignment, target, words=words, title=Path(record.path).name)


def _check_plot(args: argparse.Namespace) -> None:
    """Fail before decoding when --plot cannot be honoured."""
    if getattr(args, "plot", None):
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'zipa-phones[plot]'")
        plot_paths(find_audio(args.inputs)[0], args.plot)


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


class _Interrupted(BaseException):
    """A second SIGINT/SIGTERM: stop decoding at once (BaseException, as KeyboardInterrupt, so
    that no `except Exception` on the way takes it for a bad file)."""


class _StopRequest:
    """SIGINT and SIGTERM while decoding: the first asks to stop after the current batch
    (`stop()` turns True), a second stops at once, though never in the middle of writing one
    file's output (`deferred()`). Handlers are installed for the ``with`` block only."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._deferring = False
        self._pending = False
        self._previous: Dict[int, object] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        elif self._deferring:
            self._pending = True
        else:
            raise _Interrupted()

    @contextlib.contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending:
            self._pending = False
            raise _Interrupted()


def run_transcription(args: argparse.Namespace, timestamps: bool) -> int:
    from zipa.inference.pretrained import resolve_model
    from zipa.inference.progress import Progress
    from zipa.inference.resumable import LineOutput
    from zipa.inference.transcriber import Transcriber
    from zipa.inference.writers import TIMED_FORMATS, Record, textgrid_for, write_text

    command = f"zipa {args.command}"
    timestamps = timestamps or args.format in TIMED_FORMATS
    try:
        check_window(args.window, args.overlap)
    except ValueError as e:
        raise UsageError(f"--window/--overlap: {e}") from None
    normalize = _normalizer(args.remove_diacritics)
    words = not args.no_word_boundaries
    files, failures = find_audio(args.inputs)
    if not files and not failures:
        raise UsageError("no audio files found")
    to_stdout = args.output is None or args.output == "-"
    lines: Optional[LineOutput] = None
    grids: Dict[str, Optional[Path]] = {}
    if args.format == "textgrid":
        grids = {str(path): target for (path, _), target in zip(files, textgrid_paths(files, args.output))}
    else:
        if not to_stdout and Path(args.output).is_dir():
            raise UsageError(f"--output {args.output} is a folder; --format {args.format} writes one file")
        lines = LineOutput(None if to_stdout else Path(args.output), args.format, timestamps, words)
    plot = getattr(args, "plot", None)
    plots = {str(path): target for (path, _), target in zip(files, plot_paths(files, plot))} if plot else {}

    todo = [path for path, _ in files]
    if args.resume:
        if to_stdout:
            raise UsageError("--resume needs --output: it goes on with the output of an earlier run")
        if lines is not None:
            try:
                lines.load()
            except (ValueError, OSError) as e:
                raise UsageError(f"--resume: {e}") from None
            todo = [path for path in todo if not lines.is_done(str(path))]
        else:
            todo = [path for path in todo if not grids[str(path)].exists()]
        if not args.quiet:
            print(f"{command}: resuming: {len(files) - len(todo)} of {len(files)} files are already in "
                  f"{args.output}, {len(todo)} to do", file=sys.stderr)
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    if not todo:
        return 1 if failures else 0

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
                cache_dir=args.cache_dir,
            )
        else:
            model_path = resolve_model(args.model, cache_dir=args.cache_dir)
            transcriber = Transcriber.from_checkpoint(model_path, args.bpe_model, args.device)
    except (OSError, ValueError, ImportError) as e:
        raise UsageError(str(e)) from None

    written, where = 0, "stdout" if to_stdout else args.output
    stop = _StopRequest()
    mode = "none" if args.quiet else args.progress
    try:
        with stop, Progress(len(todo), mode, interval=args.progress_interval, desc=command) as progress:
            if lines is not None:
                try:
                    lines.open()
                except BrokenPipeError:
                    raise
                except OSError as e:
                    print(f"{command}: error: cannot write {where}: {e}", file=sys.stderr)
                    return 1
            results = transcriber.iter_transcribe_files(
                todo, window=args.window, overlap=args.overlap, batch_size=args.batch_size,
                progress=progress, decoding=args.decoding, beam=args.beam_size, stop=stop,
            )
            for result in results:
                if not result.ok:
                    failures.append(result.error)
                    progress.write(f"error: {result.error}")
                    continue
                alignment = transcriber.alignment(result.tokens, result.duration, normalize)
                if args.no_word_boundaries:
                    alignment = _without_boundaries(alignment)
                record = Record(str(result.path), result.duration, alignment)
                # The plot first, the output last: a file in the output is a file done.
                target = None
                with stop.deferred():
                    try:
                        if plots:
                            target = plots[record.path]
                            write_plot(record, target, words)
                        if lines is not None:
                            target = where
                            lines.write(record)
                        else:
                            target = grids[record.path]
                            write_text(textgrid_for(record, words), target)
                    except BrokenPipeError:
                        raise
                    except OSError as e:
                        print(f"{command}: error: cannot write {target or 'stdout'}: {e}", file=sys.stderr)
                        print(f"{command}: {written} of {len(todo)} files were written before", file=sys.stderr)
                        return 1
                written += 1
    except _Interrupted:
        pass
    finally:
        if lines is not None:
            lines.close()
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        rest = f"run the same command with --resume to do the other {len(todo) - written}" if not to_stdout \
            else "--resume needs --output"
        print(f"{command}: interrupted by {name}: {written} of {len(todo)} files written to {where}; {rest}",
              file=sys.stderr)
        return 128 + stop.signum
    if failures:
        print(f"{len(failures)} of {len(failures) + written} inputs failed", file=sys.stderr)
    return 1 if failures else 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    return run_transcription(args, timestamps=args.timestamps)


def cmd_align(args: argparse.Namespace) -> int:
    _check_plot(args)
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


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_decoding_args(p: argparse.ArgumentParser, default_format: str) -> None:
    from zipa.inference.writers import FORMATS

    p.add_argument("inputs", nargs="+", metavar="AUDIO_OR_DIR",
                   help="audio files, or folders searched recursively for the audio formats soundfile reads "
                        "(wav, flac, ogg/opus, aiff, caf, au, sph..., mp3 with libsndfile >= 1.1)")
    p.add_argument("--model", "-m", required=True,
                   help="a .pth checkpoint, a folder holding one, a model name or Hub repo id (see `zipa models`)")
    p.add_argument("--format", "-f", choices=FORMATS, default=default_format,
                   help=f"output format (default: {default_format})")
    p.add_argument("--output", "-o", default=None,
                   help="output file (default: stdout); for textgrid a folder, or a .TextGrid file for one input. "
                        "Each file's result is written as soon as it is decoded (files finish in order of "
                        "length within groups, not in input order; each line names its file)")
    p.add_argument("--resume", action="store_true",
                   help="go on with an interrupted run: skip the files already in --output (for textgrid: whose "
                        ".TextGrid exists), drop a last line cut off mid-write, append the rest. Without it an "
                        "existing output is replaced")
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
    p.add_argument("--progress", choices=PROGRESS_MODES, default="auto",
                   help="auto (default: a bar on a terminal, else log lines), bar, log (a line on stderr every "
                        "--progress-interval seconds: files done, audio decoded, elapsed, ETA) or none")
    p.add_argument("--progress-interval", type=_positive_float, default=30.0, metavar="SECONDS",
                   help="seconds between --progress log lines (default 30)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress: the same as --progress none")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="torch (a checkpoint) or onnx (--model: a folder from `zipa export-onnx`, a .onnx file, or "
                        "upstream ZIPA's published graphs: their folder, or a model name / Hub repo id)")
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

Long jobs: each file's lines are appended to --output (flushed, fsynced) as soon as it is
decoded, in order of completion, not input order; TextGrids are written one by one. Ctrl-C
(SIGINT) or SIGTERM stops after the current batch (a second one at once), keeps what is
finished and exits with status 130 / 143; the same command with --resume then skips the files
already done. Exit status 141: stdout's reader went away (`| head`).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zipa", description="ZIPA multilingual IPA phone recognition.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    p.add_argument("--plot", metavar="OUT", default=None,
                   help="also draw each file's spectrogram with its phone and word tiers: OUT.png for one "
                        "input, else a folder OUT holding <relative path>.png (needs matplotlib)")
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
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit, so that a broken pipe is caught below
        return code
    except UsageError as e:
        print(f"zipa {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside decoding (loading a model...)
        print(f"zipa {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader of stdout went away (`zipa ... | head`): stop quietly, with the status a
        # command killed by SIGPIPE has (141), as `set -o pipefail` expects.
        _stdout_to_devnull()
        return 128 + signal.SIGPIPE


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null so that flushing it at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
