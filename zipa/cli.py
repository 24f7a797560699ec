"""The `zipa` command: transcribe, align (timestamps), evaluate, export to ONNX and list models.

    zipa transcribe AUDIO_OR_DIR... --model M [--format txt|tsv|jsonl|ctm|textgrid] [--output PATH]
    zipa align AUDIO_OR_DIR... --model M [--format textgrid|ctm|jsonl|tsv|txt] [--output PATH] [--plot OUT]
        [--transcript IPA | --text TEXT --lang CODE | --transcripts TSV | --textgrid FILE_OR_DIR [--tier NAME]]
    zipa evaluate [AUDIO_OR_DIR...] --ref TSV|TEXTGRID_DIR|SHAR_DIR --model M --output-dir DIR [--tier NAME]
    zipa export-onnx --model M --out DIR [--int8] [--fp16]
    zipa models
    zipa inventories [CODE...]
    zipa serve --model M [--host 127.0.0.1] [--port 8000] [--max-upload-mb MB]   (a local web page)

    (transcribe, align: [--resume] [--progress auto|bar|log|none] [-q] [--inventory FILE | --lang CODE] [--topk K])

Argument parsing and wiring only: decoding lives in `zipa.inference.transcriber`, models in
`zipa.inference.pretrained`, times in `zipa.inference.timestamps`, formats in `zipa.inference.writers`,
outputs that grow file by file and resume in `zipa.inference.resumable`, progress in
`zipa.inference.progress`, scoring against references (`zipa evaluate`) in `zipa.evaluation.evaluate`
and `zipa.evaluation.references`, the web page (`zipa serve`) in `zipa.web`. Here: which files, where their results go, and signals (a first
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


def _load_transcriber(args: argparse.Namespace, use_aligner: bool = True):
    """(the Transcriber that --model, --backend, --device... name, the checkpoint or ONNX path it
    was loaded from); UsageError when it cannot be loaded. `use_aligner`: attach the frame
    aligner that --aligner names (default auto: the one beside the model), for commands that
    write times; otherwise none is loaded."""
    import torch

    from zipa.inference.pretrained import resolve_model
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
                args.model, args.bpe_model, num_threads=args.num_threads,
                providers=_onnx_providers(args.device), precision=args.onnx_precision,
                cache_dir=args.cache_dir,
            )
            return transcriber, Path(args.model)
        model_path = resolve_model(args.model, cache_dir=args.cache_dir)
        transcriber = Transcriber.from_checkpoint(model_path, args.bpe_model, args.device, aligner=aligner)
        precision = getattr(args, "precision", "fp32")
        if precision != "fp32":
            from zipa.model.precision import reduced_precision

            if precision == "fp16" and transcriber.device.type != "cuda":
                raise UsageError("--precision fp16 needs --device cuda (on a CPU use bf16)")
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            transcriber.model = reduced_precision(transcriber.model, dtype, transcriber.device)
        return transcriber, Path(model_path)
    except (OSError, ValueError, ImportError) as e:
        raise UsageError(str(e)) from None


def _inventory(args: argparse.Namespace):
    """The `zipa.decoding.inventory.Inventory` that --inventory FILE or --lang CODE names (the
    file wins), or None; read before any model is loaded. With a transcript to align (zipa
    align --text/--transcript) --lang is the G2P's language and restricts no search."""
    from zipa.decoding.inventory import Inventory

    path, lang = getattr(args, "inventory", None), getattr(args, "lang", None)
    try:
        if path:
            return Inventory.from_file(path)
        if lang and not _forced_source(args):
            return Inventory.for_language(lang)
    except ValueError as e:
        raise UsageError(f"--inventory: {e}" if path else f"--lang: {e}") from None
    return None


def _inventory_mask(transcriber, inventory, command: str):
    """The token mask of `inventory` for the loaded model (None for no inventory); the phones
    with symbols its tokenizer lacks are named on stderr."""
    if inventory is None:
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below, once, as a command's warning
        try:
            mask = transcriber.inventory_mask(inventory)
        except ValueError as e:
            raise UsageError(str(e)) from None
    message = mask.warning()
    if message is not None:
        print(f"{command}: warning: {message}", file=sys.stderr)
    return mask


def run_transcription(args: argparse.Namespace, timestamps: bool) -> int:
    from zipa.inference.progress import Progress
    from zipa.inference.resumable import LineOutput
    from zipa.inference.writers import TIMED_FORMATS, Record, textgrid_for, textgrid_with_alignment, write_text

    command = f"zipa {args.command}"
    timestamps = timestamps or args.format in TIMED_FORMATS
    forced = _forced_source(args)
    if forced:
        _check_forced_args(args, forced)
    topk = getattr(args, "topk", 0) or 0
    if topk:
        if args.format not in ("jsonl", "tsv"):
            raise UsageError(f"--topk is written per phone in jsonl and tsv, not in {args.format}")
        timestamps = True
    inventory = _inventory(args)
    try:
        check_window(args.window, args.overlap)
    except ValueError as e:
        raise UsageError(f"--window/--overlap: {e}") from None
    normalize = _normalizer(args.remove_diacritics)
    words = not args.no_word_boundaries
    files, failures = find_audio(args.inputs)
    if not files and not failures:
        raise UsageError("no audio files found")
    jobs = {}
    if forced:
        files, jobs, unmatched = _forced_jobs(args, forced, files)
        failures += unmatched
    to_stdout = args.output is None or args.output == "-"
    lines: Optional[LineOutput] = None
    grids: Dict[str, Optional[Path]] = {}
    if args.format == "textgrid":
        grids = {str(path): target for (path, _), target in zip(files, textgrid_paths(files, args.output))}
        _check_not_overwriting_inputs(grids, jobs)
    else:
        if not to_stdout and Path(args.output).is_dir():
            raise UsageError(f"--output {args.output} is a folder; --format {args.format} writes one file")
        lines = LineOutput(None if to_stdout else Path(args.output), args.format, timestamps, words,
                           alternatives=bool(topk))
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

    transcriber, _ = _load_transcriber(args, use_aligner=timestamps)
    mask = _inventory_mask(transcriber, inventory, command)

    written, where = 0, "stdout" if to_stdout else args.output
    problems = 0  # utterances of TextGrid tiers that could not be aligned (their files are written)
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
            if forced:
                results = transcriber.align_files(
                    [jobs[str(path)] for path in todo], lang=_g2p_lang(args, forced),
                    remove_diacritics=args.remove_diacritics, window=args.window, overlap=args.overlap,
                    batch_size=args.batch_size, progress=progress, stop=stop,
                )
            else:
                results = transcriber.iter_transcribe_files(
                    todo, window=args.window, overlap=args.overlap, batch_size=args.batch_size,
                    progress=progress, decoding=args.decoding, beam=args.beam_size, stop=stop,
                    inventory=mask, topk=topk,
                )
            for result in results:
                for message in getattr(result, "messages", ()):  # forced alignment: symbols dropped
                    progress.write(f"warning: {message}")
                for message in getattr(result, "problems", ()):  # forced alignment: utterances not aligned
                    progress.write(f"error: {message}")
                    problems += 1
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
                            grid = getattr(result, "textgrid", None)  # forced alignment of a TextGrid's tier
                            write_text(textgrid_for(record, words) if grid is None
                                       else textgrid_with_alignment(grid, record, words), target)
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
    if problems:
        print(f"{problems} utterance{'s' if problems > 1 else ''} could not be aligned (the rest of "
              f"{'their files is' if problems > 1 else 'its file is'} written)", file=sys.stderr)
    return 1 if failures or problems else 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    return run_transcription(args, timestamps=args.timestamps)


def cmd_align(args: argparse.Namespace) -> int:
    _check_plot(args)
    return run_transcription(args, timestamps=True)


# zipa align with given phones (forced alignment, zipa.inference.forced)
FORCED_SOURCES = ("transcript", "text", "transcripts", "textgrid")


def _forced_source(args: argparse.Namespace) -> Optional[str]:
    """Which of --transcript, --text, --transcripts, --textgrid was given (None: none of them,
    or a command without them)."""
    return next((name for name in FORCED_SOURCES if getattr(args, name, None) is not None), None)


def _g2p_lang(args: argparse.Namespace, source: str) -> Optional[str]:
    """The G2P language when the texts are orthography (--text, or --orthographic), else None."""
    return args.lang if source == "text" or args.orthographic else None


def _check_forced_args(args: argparse.Namespace, source: str) -> None:
    """Options that do not go with forced alignment, and the G2P language, before any work."""
    if args.tier is not None and source != "textgrid":
        raise UsageError("--tier names the utterance tier of --textgrid")
    if args.orthographic and source not in ("transcripts", "textgrid"):
        raise UsageError("--orthographic is for the texts of --transcripts or --textgrid (--text is orthography, "
                         "--transcript IPA)")
    for name, value, default in (("--decoding", args.decoding, "greedy"), ("--inventory", args.inventory, None),
                                 ("--topk", args.topk, 0)):
        if value != default:
            raise UsageError(f"{name} does not apply to forced alignment: the transcript fixes the phones")
    lang = _g2p_lang(args, source)
    if (source == "text" or args.orthographic) and not args.lang:
        raise UsageError(f"{'--text' if source == 'text' else '--orthographic'} needs --lang CODE: the language "
                         "the text is converted to IPA in (en-us, fra, cmn...; epitran codes such as yor-Latn)")
    if args.lang and lang is None:
        raise UsageError(f"--lang with IPA transcripts (--{source}) does nothing: the transcript fixes the phones. "
                         "For orthographic text use --text, or --orthographic with --transcripts/--textgrid")
    if lang is not None:
        from zipa.text.g2p import check_language

        try:
            check_language(lang)
        except (ValueError, RuntimeError, OSError) as e:
            raise UsageError(f"--lang {lang}: {e}") from None


def _forced_jobs(args: argparse.Namespace, source: str, files: List[Tuple[Path, Path]]):
    """(the audio files that have a transcript, {str(path): AlignJob}, errors for those that
    have none): --transcript/--text for one file, a --transcripts TSV (matched as `zipa
    evaluate --ref` matches: `zipa.evaluation.references.match_references`), or --textgrid (a
    file for one audio file, or a folder: `zipa.inference.forced.find_textgrid`)."""
    from zipa.inference.forced import AlignJob, find_textgrid
    from zipa.inference.textgrid import read_textgrid

    if source in ("transcript", "text"):
        if len(files) != 1:
            raise UsageError(f"--{source} is the transcript of one audio file, but there are {len(files)}; "
                             "give several with --transcripts TSV")
        return files, {str(files[0][0]): AlignJob.whole(files[0][0], getattr(args, source))}, []
    kept, jobs, errors = [], {}, []
    if source == "transcripts":
        from zipa.evaluation.references import match_references, read_reference_tsv

        try:
            entries = read_reference_tsv(args.transcripts)
        except (OSError, ValueError) as e:
            raise UsageError(f"--transcripts {args.transcripts}: {e}") from None
        references, _ = match_references(entries, files, args.transcripts)
        for (path, rel), reference in zip(files, references):
            if reference.error is not None:
                errors.append(reference.error)
            else:
                kept.append((path, rel))
                jobs[str(path)] = AlignJob.whole(path, reference.text)
        return kept, jobs, errors
    root = Path(args.textgrid)
    if root.is_file() and len(files) != 1:
        raise UsageError(f"--textgrid {root} is one TextGrid, but there are {len(files)} audio files; give a "
                         "folder of TextGrids named as the audio files")
    if not root.exists():
        raise UsageError(f"--textgrid {root}: no such file or folder")
    for path, rel in files:
        try:
            grid_path = root if root.is_file() else find_textgrid(root, path, rel)
            job = AlignJob.from_textgrid(path, read_textgrid(grid_path), args.tier, grid_path)
        except ValueError as e:
            if root.is_file():
                raise UsageError(str(e)) from None
            errors.append(str(e))
            continue
        kept.append((path, rel))
        jobs[str(path)] = job
    return kept, jobs, errors


def _check_not_overwriting_inputs(targets: Dict[str, Optional[Path]], jobs: Dict[str, object]) -> None:
    """TextGrid outputs must not replace the TextGrids they copy."""
    for key, target in targets.items():
        source = getattr(jobs.get(key), "source", None)
        if target is not None and source is not None and target.resolve() == Path(source).resolve():
            raise UsageError(f"--output would overwrite the input TextGrid {source}; write the copies elsewhere")


def _evaluation_references(args: argparse.Namespace):
    """(references, their number or None, input errors, references no audio file matched) of
    --ref and the audio inputs (see `zipa.evaluation.references`)."""
    from zipa.evaluation import references as refs

    try:
        kind = refs.reference_kind(args.ref)
    except (OSError, ValueError) as e:
        raise UsageError(f"--ref: {e}") from None
    if args.tier is not None and kind != "textgrid":
        raise UsageError(f"--tier is for a folder of TextGrids; --ref {args.ref} is a {kind}")
    if kind == "shar":
        if args.inputs:
            raise UsageError(f"--ref {args.ref} is a shar folder: the audio comes from it, give no AUDIO_OR_DIR")
        from zipa.data.shar import count_cuts

        return refs.shar_references(args.ref), count_cuts(args.ref), [], []
    try:
        entries = refs.read_reference_tsv(args.ref) if kind == "tsv" else refs.read_textgrid_folder(args.ref, args.tier)
    except (OSError, ValueError) as e:
        raise UsageError(f"--ref {args.ref}: {e}") from None
    if not args.inputs:
        if kind == "textgrid":
            raise UsageError(f"--ref {args.ref} is a folder of TextGrids: give the audio files or folders too")
        references = refs.tsv_references(entries)
        return references, len(references), [], []
    files, errors = find_audio(args.inputs)
    if not files and not errors:
        raise UsageError("no audio files found")
    references, unused = refs.match_references(entries, files, str(args.ref))
    return references, len(references), errors, unused


def cmd_evaluate(args: argparse.Namespace) -> int:
    from zipa.evaluation.evaluate import run_evaluation, save_chart, score
    from zipa.evaluation.metrics import summarise_table
    from zipa.inference.progress import Progress

    command = "zipa evaluate"
    try:
        check_window(args.window, args.overlap)
    except ValueError as e:
        raise UsageError(f"--window/--overlap: {e}") from None
    references, total, input_errors, unused = _evaluation_references(args)
    ref = Path(args.ref)
    name = args.name or (ref.stem if ref.is_file() else ref.resolve().name)
    if not args.no_chart:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            print(f"{command}: warning: no chart: it needs matplotlib (pip install 'zipa-phones[plot]'); "
                  "--no-chart silences this", file=sys.stderr)
            args.no_chart = True
    transcriber, model_path = _load_transcriber(args, use_aligner=False)
    for message in input_errors:
        print(f"error: {message}", file=sys.stderr)

    mode = "none" if args.quiet else args.progress
    with Progress(total or 0, mode, interval=args.progress_interval, desc=command) as progress:
        run = run_evaluation(
            transcriber, references, decoding=args.decoding, beam=args.beam_size, batch_size=args.batch_size,
            remove_diacritics=args.remove_diacritics, progress=progress, total=total,
            on_failure=lambda failure: progress.write(f"error: {failure.error}"),
            window=args.window, overlap=args.overlap,
        )
    try:
        metrics = score(run, args.output_dir, name, model_path.stem)
        chart = None if args.no_chart or not run.results else save_chart(metrics, args.output_dir)
    except OSError as e:
        print(f"{command}: error: cannot write to {args.output_dir}: {e}", file=sys.stderr)
        return 1
    print(summarise_table({f"{name} {run.key}": metrics}), end="")
    print(run.normalization.format())
    if unused:
        print(f"{len(unused)} references in {args.ref} have no audio among the inputs (not scored)")
    print(f"results in {args.output_dir}" + (f" (chart: {chart.name})" if chart else ""))
    failed = len(run.failures) + len(input_errors)
    if failed:
        print(f"{failed} of {failed + len(run.results)} inputs failed", file=sys.stderr)
    return 1 if failed else 0


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


def cmd_inventories(args: argparse.Namespace) -> int:
    from zipa.decoding.inventory import Inventory, available_languages, resolve_language

    if not args.codes:
        for code, (name, count) in sorted(available_languages().items()):
            print(f"{code}\t{count}\t{name}")
        return 0
    for code in args.codes:
        try:
            print(f"{resolve_language(code)}\t{' '.join(Inventory.for_language(code).phones)}")
        except ValueError as e:
            raise UsageError(str(e)) from None
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The web page (`zipa.web`): bind the address, load the model, print where to go, serve
    until Ctrl-C."""
    try:
        check_window(args.window, args.overlap)
    except ValueError as e:
        raise UsageError(f"--window/--overlap: {e}") from None
    try:
        from zipa.web import create_app
        from zipa.web.server import address, is_loopback, listen, run
    except ImportError as e:
        raise UsageError(f"zipa serve needs the web extra: pip install 'zipa-phones[web]' ({e})") from None
    try:
        sock = listen(args.host, args.port)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e}") from None
    with sock:
        transcriber, model_path = _load_transcriber(args)
        app = create_app(transcriber, model_name=model_path.name, max_upload_mb=args.max_upload_mb,
                         window=args.window, overlap=args.overlap, batch_size=args.batch_size,
                         decoding=args.decoding, beam=args.beam_size)
        if not is_loopback(args.host):
            print(f"zipa serve: warning: listening on {args.host}: whoever reaches this address can use the model "
                  "and upload files; browsers allow the microphone only at localhost or over https", file=sys.stderr)
        print(f"zipa serve: {address(sock)} (model {model_path.name}, device {transcriber.device}); Ctrl-C stops",
              flush=True)
        run(app, sock)
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


def _add_runtime_args(p: argparse.ArgumentParser, progress: bool = True) -> None:
    """What transcribe, align, evaluate and serve share: the model, where and how it runs, and
    (``progress``) how progress is shown."""
    p.add_argument("--model", "-m", required=True,
                   help="a .pth checkpoint, a folder holding one, a model name or Hub repo id (see `zipa models`)")
    p.add_argument("--device", default=None, help="cuda, cpu, cuda:1... (default: cuda when available, else cpu)")
    p.add_argument("--num-threads", type=_positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--decoding", choices=DECODING_METHODS, default="greedy",
                   help="greedy (as the released ZIPA inference) or beam: CTC prefix beam search / transducer "
                        "modified beam search; times then come from the best alignment of the beam's result")
    p.add_argument("--beam-size", type=_positive_int, default=4, help="beam width for --decoding beam (default 4)")
    p.add_argument("--window", type=float, default=DEFAULT_WINDOW,
                   help=f"files longer than this (s) are decoded in overlapping windows (default {DEFAULT_WINDOW:g})")
    p.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                   help=f"overlap of neighbouring windows in seconds (default {DEFAULT_OVERLAP:g})")
    p.add_argument("--bpe-model", default=None, help="tokenizer model (default: the packaged ipa_simplified one)")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    if progress:
        _add_progress_args(p)
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="torch (a checkpoint) or onnx (--model: a folder from `zipa export-onnx`, a .onnx file, or "
                        "upstream ZIPA's published graphs: their folder, or a model name / Hub repo id)")
    p.add_argument("--onnx-precision", choices=("fp32", "int8", "fp16"), default="fp32",
                   help="which graphs of an ONNX export to run (default fp32)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="torch backend, CTC models: run the model in bfloat16 (about 1.5x faster than fp32 at "
                        "30 s on CPUs with AVX512-BF16, and faster on CUDA) or float16 (CUDA); not exact: see the README's Performance "
                        "section for the PER cost (default fp32)")


def _add_progress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", choices=PROGRESS_MODES, default="auto",
                   help="auto (default: a bar on a terminal, else log lines), bar, log (a line on stderr every "
                        "--progress-interval seconds: files done, audio decoded, elapsed, ETA) or none")
    p.add_argument("--progress-interval", type=_positive_float, default=30.0, metavar="SECONDS",
                   help="seconds between --progress log lines (default 30)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress: the same as --progress none")


FORMATS_HELP = """output formats:
  txt       <path> TAB <transcript>, one line per file
  tsv       header, then path, transcript; with times: path, start, end, phone, confidence per phone
  jsonl     {"path", "duration", "text"}; with times also "phones" and "words" lists
  ctm       <file-id> 1 <start> <duration> <phone> <confidence>, one line per phone
  textgrid  Praat TextGrid per file: tiers "phones" and "words" covering the whole file

The transcript is words (split at the model's word boundaries) joined by spaces; a phone is an
IPA character with the length/diacritic marks that follow it. Times: encoder frame j spans
0.019 + j*0.02 s .. +0.02 s (CTC models; 0.04 s frames for transducers): the front end's frame
geometry (0.035 s) less the 16 ms by which the model's spikes were measured to come late; a
phone spans the frames where the model emits it. Files that fail are reported on stderr and skipped (exit status 1).

Long jobs: each file's lines are appended to --output (flushed, fsynced) as soon as it is
decoded, in order of completion, not input order; TextGrids are written one by one. Ctrl-C
(SIGINT) or SIGTERM stops after the current batch (a second one at once), keeps what is
finished and exits with status 130 / 143; the same command with --resume then skips the files
already done. Exit status 141: stdout's reader went away (`| head`).
"""


FORCED_HELP = """
forced alignment (the phones are given, the model finds where they are):
  zipa align a.wav -m M --transcript "həloʊ wɜːld"            IPA of one file
  zipa align a.wav -m M --text "hello world" --lang en-us      orthography, through G2P (espeak-ng)
  zipa align clips/ -m M --transcripts refs.tsv -f ctm         path<TAB>IPA per line (as zipa evaluate --ref)
  zipa align long.wav -m M --textgrid long.TextGrid --tier utterances -o aligned.TextGrid
  zipa align recordings/ -m M --textgrid grids/ --tier utt -o aligned/   grids/<name>.TextGrid per audio file

Transcripts are normalised as training labels are (zipa.text.ipa): symbols outside the
inventory are dropped and reported on stderr as warnings; spaces are word boundaries;
--remove-diacritics strips diacritics from the transcripts too (for models without them). With a
TextGrid, each non-empty interval of the tier is aligned with its own text, and --format
textgrid writes a copy of that TextGrid with tiers "phones" and "words" added. A file (or an
utterance) longer than --window is encoded in windows and aligned in one pass; above about 15
minutes of speech (7 for transducer models) it is refused: give utterance intervals. A transcript
too long for its audio is reported and the file skipped; a TextGrid utterance that cannot be
aligned is reported, the others are written (exit status 1). Phone confidence: CTC models, the
posterior of the phone's tokens averaged over the frames the alignment gives them; transducer
models (one 40 ms frame per token), the joiner's probability where the token is emitted.

Phone times: with a frame aligner (--aligner; by default <model stem>.aligner.pt beside the
model, written by zipformer_crctc/train_aligner.py) phones are placed on its 10 ms frames (in
forced alignment their confidence is then the aligner's posterior of the phone averaged over
them); --aligner none uses CTC spikes. Measured on the demo model (benchmarks/timestamps.py): phone starts within
20 ms of the truth for 57 % of phones with CTC spikes, 89 % with the aligner.
"""


EVALUATE_HELP = """references (--ref):
  a TSV     path<TAB>ipa[<TAB>language[<TAB>speaker]] per line; or a header line naming the columns
            (path, ipa, language, speaker; any order, e.g. "path<TAB>speaker<TAB>ipa"). Paths are
            absolute or relative to the TSV's folder; with AUDIO_OR_DIR given, a TSV path may also be
            a path below an input folder or a file name, with or without its suffix. Without
            AUDIO_OR_DIR the files the TSV names are scored.
  a folder  of Praat TextGrids: sub/a.TextGrid is the reference of the audio file sub/a.* (or of a
            unique a.*): the non-empty labels of interval tier --tier NAME (without it: the
            only interval tier), joined.
  a shar    folder (cuts.NNNNNN.jsonl.gz + recording.NNNNNN.tar): audio, text, language and speaker
            all come from it; give no AUDIO_OR_DIR.

References are normalised to the model's inventory as training labels are (zipa.text.ipa; with
--remove-diacritics, ZIPA's diacritic removal, applied to the hypotheses too); what that mapped,
removed or dropped is printed and stored under "normalization" in the metrics JSON.

Output (--output-dir): recogs-NAME-MODEL.txt, errs-NAME-MODEL.txt, metrics-NAME-MODEL.json and
wer-summary-NAME-MODEL.txt as zipformer_crctc/ctc_decode.py writes them (NAME: --name, MODEL: the
checkpoint's file name), and chart-NAME-MODEL.png (needs matplotlib). PER is over characters of
the IPA without word boundaries, as ZIPA's; PFER as ZIPA's evaluate.py (zipa.evaluation.metrics).

Exit status: 0 all scored, 1 some failed (no reference, unreadable or too short audio: each is
reported and skipped, and listed under "failed" in the metrics JSON), 2 usage error.
"""


SERVE_HELP = """the page:
  Drop audio files (any format soundfile reads) or record from the microphone; each file is
  decoded as `zipa align FILE` decodes it and shown as a spectrogram with its phone and word
  tiers, phones shaded by confidence. Click a phone or a word to hear it; zoom with the buttons
  or Ctrl + wheel. A transcript typed in "Align a known transcript" is force-aligned instead
  (as --transcript, or --text with a language). Downloads: TextGrid, CTM, JSON lines and TSV,
  the bytes `zipa align FILE -f FORMAT` writes.

Files are decoded one at a time in the order they arrive (the model never runs two at once);
the page shows each file's place in the queue and how far its decoding is. Uploads are kept in
a temporary folder while decoded, then deleted; results stay in memory for the last 50 files.
Nothing is fetched from the internet: the page works offline.
"""


def _add_decoding_args(p: argparse.ArgumentParser, default_format: str) -> None:
    from zipa.inference.writers import FORMATS

    p.add_argument("inputs", nargs="+", metavar="AUDIO_OR_DIR",
                   help="audio files, or folders searched recursively for the audio formats soundfile reads "
                        "(wav, flac, ogg/opus, aiff, caf, au, sph..., mp3 with libsndfile >= 1.1)")
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
    p.add_argument("--inventory", metavar="FILE", default=None,
                   help="restrict the output to the phones in FILE (one per line or separated by spaces; # starts "
                        "a comment): the search never emits other tokens (word boundaries stay allowed). Tokens are "
                        "IPA characters, so a phone allows each of its characters (tʰ allows t and ʰ). Symbols "
                        "the model's tokenizer lacks are named in a warning. Overrides the inventory of --lang")
    p.add_argument("--lang", metavar="CODE", default=None,
                   help="the language of the audio: an ISO 639-3 code (eng, cmn, yor...) or an espeak-ng code "
                        "(en-us, es, fr-fr...). Restricts the output to its built-in phone inventory (from PHOIBLE; "
                        "`zipa inventories` lists the codes). In forced alignment (zipa align --text, or "
                        "--orthographic) it is instead the language the text is converted to IPA in (G2P: "
                        "espeak-ng codes, or epitran codes such as yor-Latn)")
    p.add_argument("--topk", type=_positive_int, default=0, metavar="K",
                   help="also write each phone's K most probable tokens with their probabilities (jsonl: "
                        "\"alternatives\": [{\"phone\", \"prob\"}...] per phone; tsv: an alternatives column "
                        "\"a:0.7100 e:0.1200 ...\"); implies --timestamps, jsonl and tsv only. CTC: the posteriors "
                        "averaged over the phone's frames; transducer: the joiner's distribution where the phone "
                        "was emitted; both renormalised over the non-blank tokens")
    p.add_argument("--remove-diacritics", action="store_true",
                   help="strip diacritics from the output (zipa.text.ipa.normalize_ipa)")
    p.add_argument("--aligner", default="auto", metavar="PATH",
                   help="the frame aligner that times phones (trained by zipformer_crctc/train_aligner.py): a file; "
                        "auto (default): <model stem>.aligner.pt beside the model when there is one; none: CTC "
                        "spike times. Forced alignment places the given phones with it, free transcription the "
                        "decoded ones (the phones themselves do not change)")
    p.add_argument("--no-word-boundaries", action="store_true",
                   help="transcript = all phones joined with no spaces; no word tier/list")
    _add_runtime_args(p)


def _add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="AUDIO_OR_DIR",
                   help="audio files, or folders searched recursively (as zipa transcribe); none for a shar "
                        "--ref, or a TSV --ref whose paths name the files")
    p.add_argument("--ref", required=True, metavar="REFS",
                   help="references: a TSV, a folder of TextGrids or a shar folder (see below)")
    p.add_argument("--tier", default=None, metavar="NAME", help="the TextGrid tier holding the reference")
    p.add_argument("--output-dir", "-o", required=True, type=Path, help="folder for the result files")
    p.add_argument("--name", default=None,
                   help="test set name in the file names (default: the --ref file's stem or folder's name)")
    p.add_argument("--no-chart", action="store_true", help="do not draw the PER/PFER chart")
    p.add_argument("--remove-diacritics", action="store_true",
                   help="score without diacritics: ZIPA's --remove-diacritics on references and hypotheses")
    p.add_argument("--batch-size", type=_positive_int, default=8,
                   help="files decoded together (default 8; 1 decodes each file alone, see zipa transcribe)")
    _add_runtime_args(p)


def _add_forced_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("forced alignment (see below)")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--transcript", metavar="IPA", default=None,
                        help="align these phones (IPA; spaces separate words) to the one audio file")
    source.add_argument("--text", metavar="TEXT", default=None,
                        help="align this orthographic text of the one audio file, converted to IPA in --lang by "
                             "zipa.text.g2p (espeak-ng; epitran for codes such as yor-Latn)")
    source.add_argument("--transcripts", metavar="TSV", default=None,
                        help="path<TAB>IPA per line (the TSV of zipa evaluate --ref; a header and language/speaker "
                             "columns are allowed): each audio file is matched by its path, its path below an input "
                             "folder, or its file name")
    source.add_argument("--textgrid", metavar="FILE_OR_DIR", default=None,
                        help="a Praat TextGrid with utterance intervals (for one audio file), or a folder of them "
                             "named as the audio files (<relative path or name>.TextGrid): each non-empty interval "
                             "of --tier is aligned with its text; --format textgrid writes a copy with phone and "
                             "word tiers added")
    group.add_argument("--tier", metavar="NAME", default=None,
                       help="the interval tier of --textgrid holding the utterances (default: the only one)")
    group.add_argument("--orthographic", action="store_true",
                       help="the texts of --transcripts or --textgrid are orthography: converted to IPA in --lang")


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

    p = sub.add_parser("align", help="audio -> timed phones and words (TextGrid, CTM...)",
                       epilog=FORMATS_HELP + FORCED_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Per-phone and per-word times and confidences from the model's frame "
                                   "alignment (greedy path), or of given phones (forced alignment: --transcript, "
                                   "--text, --transcripts, --textgrid), written as Praat TextGrid, CTM, jsonl or tsv.")
    _add_decoding_args(p, "textgrid")
    p.add_argument("--plot", metavar="OUT", default=None,
                   help="also draw each file's spectrogram with its phone and word tiers: OUT.png for one "
                        "input, else a folder OUT holding <relative path>.png (needs matplotlib)")
    _add_forced_args(p)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("evaluate", help="PER and PFER against reference IPA (TSV, TextGrids or shar)",
                       epilog=EVALUATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Decode audio and score it against reference IPA: icefall's recogs-*, errs-* "
                                   "and metrics-*.json (as ctc_decode.py writes them), a PER/PFER table overall "
                                   "and per language/speaker, and a bar chart.")
    _add_evaluate_args(p)
    p.set_defaults(func=cmd_evaluate)

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

    p = sub.add_parser("inventories", help="list the built-in phone inventories (--lang)",
                       description="The built-in phone inventories that --lang selects: without CODE, one line per "
                                   "language (ISO 639-3 code, number of phones, name); with codes, each one's "
                                   "phones (code TAB phones separated by spaces, usable as an --inventory file "
                                   "after `cut -f2`). Derived from PHOIBLE 2.0 as extended by Allophoible (the "
                                   "allophant package, MIT licence): each language's phonemes and allophones over "
                                   "all its PHOIBLE inventories, mapped onto ZIPA's IPA inventory.")
    p.add_argument("codes", nargs="*", metavar="CODE", help="ISO 639-3 or espeak-ng codes (eng, en-us, cmn...)")
    p.set_defaults(func=cmd_inventories)

    p = sub.add_parser("serve", help="a local web page: drop audio, see and hear phones, download TextGrids",
                       epilog=SERVE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Serve a web page for transcribing and aligning audio in the browser (needs "
                                   "pip install 'zipa-phones[web]'). Prints the page's address.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument("--max-upload-mb", type=_positive_float, default=200.0, metavar="MB",
                   help="largest upload accepted, in MB (default 200); larger ones are refused with HTTP 413")
    p.add_argument("--batch-size", type=_positive_int, default=8,
                   help="windows of a long file decoded together (default 8)")
    _add_runtime_args(p, progress=False)
    p.set_defaults(func=cmd_serve)

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
