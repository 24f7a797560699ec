"""zipa transcribe and zipa align: audio files -> IPA, times, forced alignment; written in any
registered output format (`zipa.inference.writers.FORMATS`), file by file, resumable.

A run is planned (`plan_run`: inputs, transcripts, where each output goes, what --resume
skips), then decoded (`decode`: free transcription or forced alignment), and each file's record
written as soon as it is done (`write_record`)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zipa.audio.files import AudioFile, find_audio
from zipa.cli.common import (
    UsageError,
    add_runtime_args,
    decoding_options,
    load_transcriber,
    positive_int,
)
from zipa.cli.signals import Interrupted, StopRequest

if TYPE_CHECKING:
    from zipa.inference.resumable import LineOutput
    from zipa.inference.writers import OutputFormat


def file_targets(files: list[AudioFile], output: str | None, fmt: OutputFormat) -> list[Path | None]:
    """Where each file's own output goes (a format with a file per audio file): None for stdout
    (one input, no --output), ``output`` itself when it names a file with the format's suffix,
    else ``output/<relative path><suffix>``."""
    if output is None or output == "-":
        if len(files) > 1:
            raise UsageError(f"--format {fmt.name} with several audio files needs --output DIR")
        return [None] * len(files)
    out = Path(output)
    if out.suffix.lower() == fmt.suffix.lower() and not out.is_dir():
        if len(files) > 1:
            raise UsageError(
                f"--output {out} names one {fmt.suffix.lstrip('.')} file, but there are {len(files)} audio files"
            )
        return [out]
    return list(targets_in_folder(files, out, fmt.suffix))


def targets_in_folder(files: list[AudioFile], folder: Path, suffix: str) -> list[Path]:
    """``folder/<relative path><suffix>`` for each audio file; two files that would share a
    target (``a.wav`` and ``a.flac``) are a usage error."""
    paths = [folder / rel.with_suffix(suffix) for _, rel in files]
    seen: dict[Path, Path] = {}
    for (audio, _), target in zip(files, paths):
        if target in seen:
            raise UsageError(f"{seen[target]} and {audio} would both be written to {target}")
        seen[target] = audio
    return paths


PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def plot_paths(files: list[AudioFile], output: str) -> list[Path]:
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


def _normalizer(remove_diacritics: bool) -> Callable[[str], str] | None:
    if not remove_diacritics:
        return None
    try:
        from zipa.text.ipa import normalize_ipa
    except ImportError as e:
        raise UsageError(
            f"--remove-diacritics needs zipa.text.ipa.normalize_ipa, which cannot be imported ({e})"
        ) from None
    return lambda text: normalize_ipa(text, remove_diacritics=True)


def _without_boundaries(alignment):
    """--no-word-boundaries: the transcript is every phone joined with nothing between."""
    from zipa.decoding.timestamps import Alignment

    return Alignment("".join(p.label for p in alignment.phones), alignment.phones, [])


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


FORCED_SOURCES = ("transcript", "text", "transcripts", "textgrid", "eaf")


def _forced_source(args: argparse.Namespace) -> str | None:
    """Which of --transcript, --text, --transcripts, --textgrid, --eaf was given, or "corpus"
    for --output-dir (None: none of them, or a command without them)."""
    source = next((name for name in FORCED_SOURCES if getattr(args, name, None) is not None), None)
    if getattr(args, "output_dir", None) is None:
        return source
    if source is not None or args.output is not None:
        raise UsageError(
            f"--output-dir aligns a corpus folder with the transcripts beside its audio files; "
            f"it does not go with --{source or 'output'}"
        )
    return "corpus"


def _g2p_lang(args: argparse.Namespace, source: str | None) -> str | None:
    """The G2P language when the texts are orthography (--text, --orthographic, a corpus
    without --ipa), else None."""
    return args.lang if source == "text" or args.orthographic or (source == "corpus" and not args.ipa) else None


def _check_forced_args(args: argparse.Namespace, source: str) -> None:
    """Options that do not go with forced alignment, and the G2P language, before any work."""
    if args.tier is not None and source not in ("textgrid", "corpus"):
        raise UsageError("--tier names the utterance tier of --textgrid (or of the TextGrids of --output-dir)")
    if args.eaf_tier is not None and source != "eaf":
        raise UsageError("--eaf-tier names the utterance tier of --eaf")
    if args.ipa and source != "corpus":
        raise UsageError("--ipa is for the transcripts of a corpus folder (--output-dir)")
    if source == "corpus" and bool(args.lang) == bool(args.ipa):
        raise UsageError(
            "--output-dir: say what the transcripts are: orthography in a language (--lang CODE, "
            "converted by G2P) or IPA (--ipa)"
        )
    if args.orthographic and source not in ("transcripts", "textgrid", "eaf"):
        raise UsageError(
            "--orthographic is for the texts of --transcripts, --textgrid or --eaf (--text is "
            "orthography, --transcript IPA, a corpus folder says --lang or --ipa)"
        )
    for name, value, default in (
        ("--decoding", args.decoding, "greedy"),
        ("--inventory", args.inventory, None),
        ("--topk", args.topk, 0),
    ):
        if value != default:
            raise UsageError(f"{name} does not apply to forced alignment: the transcript fixes the phones")
    lang = _g2p_lang(args, source)
    if (source == "text" or args.orthographic) and not args.lang:
        raise UsageError(
            f"{'--text' if source == 'text' else '--orthographic'} needs --lang CODE: the language "
            "the text is converted to IPA in (en-us, fra, cmn...; epitran codes such as yor-Latn)"
        )
    if args.lang and lang is None:
        raise UsageError(
            f"--lang with IPA transcripts (--{source}) does nothing: the transcript fixes the phones. "
            "For orthographic text use --text, or --orthographic with --transcripts/--textgrid"
        )
    if lang is not None:
        from zipa.text.g2p import check_language

        try:
            check_language(lang)
        except (ValueError, RuntimeError, OSError) as e:
            raise UsageError(f"--lang {lang}: {e}") from None


def _forced_jobs(args: argparse.Namespace, source: str, files: list[AudioFile]):
    """(the audio files that have a transcript, {str(path): AlignJob}, errors for those that
    have none): --transcript/--text for one file, a --transcripts TSV (matched as `zipa
    evaluate --ref` matches: `zipa.evaluation.references.match_references`), or --textgrid /
    --eaf (a file for one audio file, or a folder: `zipa.inference.forced.find_textgrid`)."""
    from zipa.inference.forced import AlignJob

    if source in ("transcript", "text"):
        if len(files) != 1:
            raise UsageError(
                f"--{source} is the transcript of one audio file, but there are {len(files)}; "
                "give several with --transcripts TSV"
            )
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
            elif reference.text is None:
                raise RuntimeError(f"{path}: its reference has neither a text nor an error")
            else:
                kept.append((path, rel))
                jobs[str(path)] = AlignJob.whole(path, reference.text)
        return kept, jobs, errors
    return _annotation_jobs(args, source, files)


def _annotation_jobs(args: argparse.Namespace, source: str, files: list[AudioFile]):
    """`_forced_jobs` for --textgrid and --eaf: the utterance tier (--tier, --eaf-tier) of an
    annotation file, an ELAN file's read as a TextGrid's (`zipa.data.eaf.Eaf.to_textgrid`)."""
    from zipa.data.eaf import read_eaf
    from zipa.data.textgrid import read_textgrid
    from zipa.inference.forced import AlignJob, find_textgrid

    kept, jobs, errors = [], {}, []
    root = Path(getattr(args, source))
    kind, suffix, tier = (
        ("TextGrid", ".TextGrid", args.tier) if source == "textgrid" else ("ELAN file", ".eaf", args.eaf_tier)
    )
    if root.is_file() and len(files) != 1:
        raise UsageError(
            f"--{source} {root} is one {kind}, but there are {len(files)} audio files; give a "
            f"folder of {kind}s named as the audio files"
        )
    if not root.exists():
        raise UsageError(f"--{source} {root}: no such file or folder")
    for path, rel in files:
        try:
            grid_path = root if root.is_file() else find_textgrid(root, path, rel, suffix)
            grid = read_textgrid(grid_path) if source == "textgrid" else read_eaf(grid_path).to_textgrid()
            job = AlignJob.from_textgrid(path, grid, tier, grid_path)
        except ValueError as e:
            if root.is_file():
                raise UsageError(str(e)) from None
            errors.append(str(e))
            continue
        kept.append((path, rel))
        jobs[str(path)] = job
    return kept, jobs, errors


def _corpus_jobs(run: Run, args: argparse.Namespace) -> None:
    """--output-dir: each audio file's transcript beside it (`zipa.data.corpus`), an AlignJob
    for those that have one (the others are transcribed freely); files whose transcript cannot
    be read are failures. The summary table goes to the output folder."""
    from zipa.data.corpus import SUMMARY_NAME, CorpusSummary, pair_transcripts
    from zipa.inference.forced import AlignJob, Utterance

    items = pair_transcripts(run.files, args.tier)
    run.corpus = {str(item.audio): item for item in items}
    run.summary = CorpusSummary(Path(args.output_dir) / SUMMARY_NAME, [str(item.relative) for item in items])
    run.files = [(item.audio, item.relative) for item in items if item.error is None]
    for item in items:
        if item.error is not None:
            run.failures.append(item.error)
        elif item.transcript is not None:
            utterances = [Utterance(u.start, u.end, u.text) for u in item.utterances]
            run.jobs[str(item.audio)] = AlignJob(item.audio, utterances, None, item.transcript)
    free = sum(1 for item in items if item.transcript is None)
    if free and not args.quiet:
        print(
            f"{run.command}: {free} of {len(items)} audio files have no transcript beside them (.lab, .txt, "
            f'.TextGrid): transcribed freely, marked "free" in {run.summary.path}',
            file=sys.stderr,
        )


def _check_not_overwriting_inputs(targets: dict[str, Path | None], jobs: dict[str, object]) -> None:
    """TextGrid outputs must not replace the TextGrids they copy."""
    for key, target in targets.items():
        source = getattr(jobs.get(key), "source", None)
        if target is not None and source is not None and target.resolve() == Path(source).resolve():
            raise UsageError(f"--output would overwrite the input TextGrid {source}; write the copies elsewhere")


# ---------------------------------------------------------------------------------------------
# A run: plan, decode, write each record
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one transcribe/align command does, decided before any model is loaded."""

    command: str
    fmt: OutputFormat
    timestamps: bool
    words: bool
    forced: str | None
    topk: int
    inventory: Any
    normalize: Callable[[str], str] | None
    files: list[AudioFile]
    failures: list[str]
    options: Any = None  # the DecodingOptions of the flags
    jobs: dict[str, Any] = field(default_factory=dict)  # forced alignment: {str(path): AlignJob}
    lines: LineOutput | None = None  # line formats: the one output
    targets: dict[str, Path | None] = field(default_factory=dict)  # file formats: each file's output
    plots: dict[str, Path] = field(default_factory=dict)
    todo: list[Path] = field(default_factory=list)
    where: str = "stdout"
    corpus: dict[str, Any] = field(default_factory=dict)  # --output-dir: {str(path): zipa.data.corpus.CorpusFile}
    summary: Any = None  # --output-dir: the zipa.data.corpus.CorpusSummary


def plan_run(args: argparse.Namespace, timestamps: bool) -> Run:
    """Check the options, find the inputs (and their transcripts), decide where each output goes
    and, with --resume, what is done already. UsageError for what cannot work."""
    from zipa.inference.resumable import LineOutput
    from zipa.inference.writers import FORMATS

    fmt = FORMATS[args.format]
    forced = _forced_source(args)
    if forced:
        _check_forced_args(args, forced)
    elif getattr(args, "strict", False):
        raise UsageError(
            "--strict is for forced alignment (--transcript, --text, --transcripts, --textgrid, --eaf, --output-dir)"
        )
    topk = getattr(args, "topk", 0) or 0
    if topk and not fmt.topk:
        raise UsageError(
            f"--topk is written per phone in {', '.join(n for n, f in FORMATS.items() if f.topk)}, not in {args.format}"
        )
    run = Run(
        f"zipa {args.command}",
        fmt,
        timestamps or fmt.timed or bool(topk),
        not args.no_word_boundaries,
        forced,
        topk,
        _inventory(args),
        _normalizer(args.remove_diacritics),
        [],
        [],
    )
    run.options = decoding_options(args)
    run.files, run.failures = find_audio(args.inputs)
    if not run.files and not run.failures:
        raise UsageError("no audio files found")
    if forced == "corpus":
        if not fmt.one_file_each:
            raise UsageError(
                f"--output-dir writes a file per audio file: --format {args.format} writes one; use "
                f"{' or '.join(n for n, f in FORMATS.items() if f.one_file_each)}"
            )
        _corpus_jobs(run, args)
    elif forced:
        run.files, run.jobs, unmatched = _forced_jobs(args, forced, run.files)
        run.failures += unmatched
    output = args.output_dir if forced == "corpus" else args.output
    to_stdout = output is None or output == "-"
    run.where = "stdout" if to_stdout else str(output)
    if fmt.one_file_each:
        targets = (
            targets_in_folder(run.files, Path(output), fmt.suffix)
            if forced == "corpus"
            else file_targets(run.files, output, fmt)
        )
        run.targets = {str(path): target for (path, _), target in zip(run.files, targets)}
        _check_not_overwriting_inputs(run.targets, run.jobs)
    else:
        if not to_stdout and Path(args.output).is_dir():
            raise UsageError(f"--output {args.output} is a folder; --format {args.format} writes one file")
        run.lines = LineOutput(
            None if to_stdout else Path(args.output), args.format, run.timestamps, run.words, alternatives=bool(topk)
        )
    plot = getattr(args, "plot", None)
    if plot:
        run.plots = {str(path): target for (path, _), target in zip(run.files, plot_paths(run.files, plot))}
    run.todo = [path for path, _ in run.files]
    if args.resume:
        _skip_done(run, args, to_stdout)
    return run


def _skip_done(run: Run, args: argparse.Namespace, to_stdout: bool) -> None:
    """--resume: leave out the files an earlier run's output holds."""
    if to_stdout:
        raise UsageError("--resume needs --output: it goes on with the output of an earlier run")
    if run.lines is not None:
        try:
            run.lines.load()
        except (ValueError, OSError) as e:
            raise UsageError(f"--resume: {e}") from None
        run.todo = [path for path in run.todo if not run.lines.is_done(str(path))]
    else:
        todo = []
        for path in run.todo:
            target = run.targets[str(path)]
            if target is None:
                raise RuntimeError(f"--resume: no output file for {path}")
            if not target.exists():
                todo.append(path)
        run.todo = todo
    if run.summary is not None:
        try:
            run.summary.load()
        except (ValueError, OSError) as e:
            raise UsageError(f"--resume: {e}") from None
    if not args.quiet:
        print(
            f"{run.command}: resuming: {len(run.files) - len(run.todo)} of {len(run.files)} files are already in "
            f"{run.where}, {len(run.todo)} to do",
            file=sys.stderr,
        )


def decode(transcriber, run: Run, args: argparse.Namespace, progress, stop: StopRequest, mask) -> Iterator[Any]:
    """Each file's result as it is done: forced alignment of its transcript, or free decoding
    (of every file, or in a corpus folder of the files without a transcript)."""
    free = [path for path in run.todo if str(path) not in run.jobs] if run.forced == "corpus" else []
    if run.forced:
        yield from transcriber.align_files(
            [run.jobs[str(path)] for path in run.todo if str(path) in run.jobs],
            run.options,
            lang=_g2p_lang(args, run.forced),
            progress=progress,
            stop=stop,
        )
    if free or not run.forced:
        yield from transcriber.iter_transcribe_files(
            free or run.todo, run.options.replace(inventory=mask), progress=progress, stop=stop
        )


def write_record(run: Run, record) -> None:
    """One file's outputs: its picture first (--plot), its output last, so that a file in the
    output is a file done. OSError names the output that could not be written."""
    from zipa.inference.writers import write_text

    target: Any = None
    try:
        if run.plots:
            target = run.plots[record.path]
            write_plot(record, target, run.words)
        if run.lines is not None:
            target = run.where
            run.lines.write(record)
        else:
            target = run.targets[record.path]
            write_text(run.fmt.text(record, timestamps=True, words=run.words), target)
    except BrokenPipeError:
        raise
    except OSError as e:
        raise OSError(f"cannot write {target or 'stdout'}: {e}") from e


def _speakers(run: Run, path) -> list[tuple[str, float, float]] | None:
    """--output-dir: the speakers' stretches of a file (MFA's tier layout), else None."""
    item = run.corpus.get(str(path))
    return None if item is None else item.speaker_spans()


def _name_written_words(run: Run, args: argparse.Namespace, result, alignment) -> None:
    """--output-dir with orthographic transcripts: name the aligned words by the transcript's
    written words, as MFA's words tier does (`zipa.data.corpus.written_words`); where they do
    not match one to one the IPA words stay, and the summary's notes say so."""
    from zipa.data.corpus import written_words

    item, lang = run.corpus[str(result.path)], _g2p_lang(args, run.forced)
    if lang is None or not item.utterances or not alignment.words:
        return
    written = written_words(item.utterances, lang, run.options.remove_diacritics)
    if written is None or len(written) != len(alignment.words):
        result.messages.append(
            f"{result.path}: the words tier holds IPA words: G2P's words do not match the "
            "transcript's written words one to one"
        )
        return
    alignment.words = [replace(word, label=label) for word, label in zip(alignment.words, written)]


def run_transcription(args: argparse.Namespace, timestamps: bool) -> int:
    from zipa.inference.writers import Record
    from zipa.utils.progress import Progress

    run = plan_run(args, timestamps)
    command = run.command
    for message in run.failures:
        print(f"error: {message}", file=sys.stderr)
    for item in run.corpus.values():  # --output-dir: transcripts that could not be read
        if item.error is not None:
            run.summary.add_file(item, error=item.error)
    if not run.todo:
        return 1 if run.failures else 0

    transcriber, _ = load_transcriber(args, use_aligner=run.timestamps)
    mask = _inventory_mask(transcriber, run.inventory, command)
    written = 0
    problems = 0  # utterances of TextGrid tiers that could not be aligned (their files are written)
    stop = StopRequest()
    mode = "none" if args.quiet else args.progress
    try:
        with stop, Progress(len(run.todo), mode, interval=args.progress_interval, desc=command) as progress:
            if run.lines is not None:
                try:
                    run.lines.open()
                except BrokenPipeError:
                    raise
                except OSError as e:
                    print(f"{command}: error: cannot write {run.where}: {e}", file=sys.stderr)
                    return 1
            for result in decode(transcriber, run, args, progress, stop, mask):
                for message in getattr(result, "messages", ()):  # forced alignment: symbols dropped
                    progress.write(f"warning: {message}")
                for message in getattr(result, "problems", ()):  # forced alignment: utterances not aligned
                    progress.write(f"error: {message}")
                    problems += 1
                warned = getattr(result, "warnings", [])  # forced alignment: a transcript that does not fit
                for message in warned:
                    progress.write(f"warning: {message}")
                error = result.error
                if error is None and warned and getattr(args, "strict", False):
                    error = f"{result.path}: not written: its transcript does not fit the audio (--strict)"
                if error is not None:
                    run.failures.append(error)
                    progress.write(f"error: {error}")
                    if run.summary is not None:
                        run.summary.add_file(run.corpus[str(result.path)], result, error=error)
                    continue
                alignment = transcriber.alignment(result.tokens, result.duration, run.normalize)
                if args.no_word_boundaries:
                    alignment = _without_boundaries(alignment)
                alignment.fit, alignment.warnings = getattr(result, "fit", None), list(warned)
                if run.forced == "corpus":
                    _name_written_words(run, args, result, alignment)
                record = Record(
                    str(result.path),
                    result.duration,
                    alignment,
                    getattr(result, "textgrid", None),
                    speakers=_speakers(run, result.path),
                )
                with stop.deferred():
                    try:
                        write_record(run, record)
                        if run.summary is not None:
                            run.summary.add_file(run.corpus[str(result.path)], result, alignment)
                    except BrokenPipeError:
                        raise
                    except OSError as e:
                        print(f"{command}: error: {e}", file=sys.stderr)
                        print(f"{command}: {written} of {len(run.todo)} files were written before", file=sys.stderr)
                        return 1
                written += 1
    except Interrupted:
        pass
    finally:
        if run.lines is not None:
            run.lines.close()
    return _report(run, written, problems, stop)


def _report(run: Run, written: int, problems: int, stop: StopRequest) -> int:
    """The closing lines on stderr, and the exit status."""
    command, todo = run.command, len(run.todo)
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        rest = (
            f"run the same command with --resume to do the other {todo - written}"
            if run.where != "stdout"
            else "--resume needs --output"
        )
        print(
            f"{command}: interrupted by {name}: {written} of {todo} files written to {run.where}; {rest}",
            file=sys.stderr,
        )
        return 128 + stop.signum
    if run.failures:
        print(f"{len(run.failures)} of {len(run.failures) + written} inputs failed", file=sys.stderr)
    if problems:
        print(
            f"{problems} utterance{'s' if problems > 1 else ''} could not be aligned (the rest of "
            f"{'their files is' if problems > 1 else 'its file is'} written)",
            file=sys.stderr,
        )
    return 1 if run.failures or problems else 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    return run_transcription(args, timestamps=args.timestamps)


def cmd_align(args: argparse.Namespace) -> int:
    _check_plot(args)
    return run_transcription(args, timestamps=True)


# ---------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------


def formats_help() -> str:
    """The epilog's list of output formats, from the registry."""
    from zipa.inference.writers import FORMATS

    rows = "".join(f"  {name:<9} {fmt.summary}\n" for name, fmt in FORMATS.items())
    return "output formats:\n" + rows + FORMATS_NOTES


FORMATS_NOTES = """
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
  zipa align session.wav -m M --eaf session.eaf --eaf-tier utterances --orthographic --lang en-us -f eaf -o out.eaf
  zipa align corpus/ -m M --lang en-us --output-dir aligned/   MFA-style: speaker/utt.wav + speaker/utt.lab

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

Corpus folders (--output-dir), as MFA lays them out: speaker folders (nested ones too; the
speaker is the folder holding the file) of audio files, each with its transcript of the same
name beside it: .lab or .txt (the whole file is one utterance; orthography with --lang, IPA with
--ipa) or .TextGrid (each non-empty interval an utterance; one interval tier per speaker, named
by the tier, as MFA reads them; --tier picks one). Each file gets DIR/<relative path>.TextGrid
with MFA's tiers "words" and "phones" ("<speaker> - words", "<speaker> - phones" for a TextGrid
with several speakers; with --lang the words are the transcript's written words where G2P gives
as many; --format eaf writes ELAN files instead), and DIR/alignment_summary.csv a
row: speaker, transcript, alignment (forced, free or failed), duration, phones, words, mean
confidence, fit warnings, notes (symbols dropped, utterances not aligned) and error. A file
without a transcript is transcribed freely ("free"); a file that fails is reported and skipped.
--resume skips the files whose output exists and keeps their rows.

Phone times: with a frame aligner (--aligner; by default <model stem>.aligner.pt beside the
model, written by zipformer_crctc/train_aligner.py) phones are placed on its 10 ms frames (in
forced alignment their confidence is then the aligner's posterior of the phone averaged over
them); --aligner none uses CTC spikes. Measured on the demo model (benchmarks/timestamps.py): phone starts within
20 ms of the truth for 57 % of phones with CTC spikes, 89 % with the aligner.
"""


def _add_decoding_args(p: argparse.ArgumentParser, default_format: str) -> None:
    from zipa.inference.writers import FORMATS

    p.add_argument(
        "inputs",
        nargs="+",
        metavar="AUDIO_OR_DIR",
        help="audio files, or folders searched recursively for the audio formats soundfile reads "
        "(wav, flac, ogg/opus, aiff, caf, au, sph..., mp3 with libsndfile >= 1.1)",
    )
    p.add_argument(
        "--format",
        "-f",
        choices=list(FORMATS),
        default=default_format,
        help=f"output format (default: {default_format})",
    )
    p.add_argument(
        "--output",
        "-o",
        default=None,
        help="output file (default: stdout); for textgrid a folder, or a .TextGrid file for one input. "
        "Each file's result is written as soon as it is decoded (files finish in order of "
        "length within groups, not in input order; each line names its file)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on with an interrupted run: skip the files already in --output (for textgrid: whose "
        ".TextGrid exists), drop a last line cut off mid-write, append the rest. Without it an "
        "existing output is replaced",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="files (or windows of long files) decoded together (default 8). They are sorted by "
        "length to limit padding, but padding still changes a file's result slightly, as in "
        "the original ZIPA; 1 decodes each file alone, exactly as one-file inference",
    )
    p.add_argument(
        "--inventory",
        metavar="FILE",
        default=None,
        help="restrict the output to the phones in FILE (one per line or separated by spaces; # starts "
        "a comment): the search never emits other tokens (word boundaries stay allowed). Tokens are "
        "IPA characters, so a phone allows each of its characters (tʰ allows t and ʰ). Symbols "
        "the model's tokenizer lacks are named in a warning. Overrides the inventory of --lang",
    )
    p.add_argument(
        "--lang",
        metavar="CODE",
        default=None,
        help="the language of the audio: an ISO 639-3 code (eng, cmn, yor...) or an espeak-ng code "
        "(en-us, es, fr-fr...). Restricts the output to its built-in phone inventory (from PHOIBLE; "
        "`zipa inventories` lists the codes). In forced alignment (zipa align --text, or "
        "--orthographic) it is instead the language the text is converted to IPA in (G2P: "
        "espeak-ng codes, or epitran codes such as yor-Latn)",
    )
    p.add_argument(
        "--topk",
        type=positive_int,
        default=0,
        metavar="K",
        help="also write each phone's K most probable tokens with their probabilities (jsonl: "
        '"alternatives": [{"phone", "prob"}...] per phone; tsv: an alternatives column '
        '"a:0.7100 e:0.1200 ..."); implies --timestamps, jsonl and tsv only. CTC: the posteriors '
        "averaged over the phone's frames; transducer: the joiner's distribution where the phone "
        "was emitted; both renormalised over the non-blank tokens",
    )
    p.add_argument(
        "--remove-diacritics",
        action="store_true",
        help="strip diacritics from the output (zipa.text.ipa.normalize_ipa)",
    )
    p.add_argument(
        "--aligner",
        default="auto",
        metavar="PATH",
        help="the frame aligner that times phones (trained by zipformer_crctc/train_aligner.py): a file; "
        "auto (default): <model stem>.aligner.pt beside the model when there is one; none: CTC "
        "spike times. Forced alignment places the given phones with it, free transcription the "
        "decoded ones (the phones themselves do not change)",
    )
    p.add_argument(
        "--no-word-boundaries",
        action="store_true",
        help="transcript = all phones joined with no spaces; no word tier/list",
    )
    add_runtime_args(p)


def _add_forced_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("forced alignment (see below)")
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--transcript",
        metavar="IPA",
        default=None,
        help="align these phones (IPA; spaces separate words) to the one audio file",
    )
    source.add_argument(
        "--text",
        metavar="TEXT",
        default=None,
        help="align this orthographic text of the one audio file, converted to IPA in --lang by "
        "zipa.text.g2p (espeak-ng; epitran for codes such as yor-Latn)",
    )
    source.add_argument(
        "--transcripts",
        metavar="TSV",
        default=None,
        help="path<TAB>IPA per line (the TSV of zipa evaluate --ref; a header and language/speaker "
        "columns are allowed): each audio file is matched by its path, its path below an input "
        "folder, or its file name",
    )
    source.add_argument(
        "--textgrid",
        metavar="FILE_OR_DIR",
        default=None,
        help="a Praat TextGrid with utterance intervals (for one audio file), or a folder of them "
        "named as the audio files (<relative path or name>.TextGrid): each non-empty interval "
        "of --tier is aligned with its text; --format textgrid writes a copy with phone and "
        "word tiers added",
    )
    source.add_argument(
        "--eaf",
        metavar="FILE_OR_DIR",
        default=None,
        help="an ELAN file with utterance annotations (for one audio file), or a folder of them named "
        "as the audio files: each annotation of --eaf-tier is aligned with its text, as with "
        "--textgrid",
    )
    group.add_argument(
        "--tier",
        metavar="NAME",
        default=None,
        help="the interval tier of --textgrid holding the utterances (default: the only one)",
    )
    group.add_argument(
        "--eaf-tier",
        metavar="NAME",
        default=None,
        help="the tier of --eaf holding the utterances (default: the only one)",
    )
    group.add_argument(
        "--strict",
        action="store_true",
        help="a transcript that cannot be the audio's (too many phones for its length, phones "
        "squeezed into single frames, or a very low mean confidence: zipa.decoding.fit) fails its "
        "file instead of a warning",
    )
    group.add_argument(
        "--orthographic",
        action="store_true",
        help="the texts of --transcripts, --textgrid or --eaf are orthography: converted to IPA in --lang",
    )
    corpus = p.add_argument_group("corpus folders as the Montreal Forced Aligner keeps them (see below)")
    corpus.add_argument(
        "--output-dir",
        metavar="DIR",
        default=None,
        help="align the AUDIO_OR_DIR folders as an MFA corpus: each audio file with the transcript "
        "beside it (<stem>.lab or .txt: one utterance; <stem>.TextGrid: its intervals), written "
        "to DIR/<relative path>.TextGrid with tiers words and phones (<speaker> - words... for "
        "TextGrids with several speaker tiers), and DIR/alignment_summary.csv; files without a "
        "transcript are transcribed freely. Needs --lang (orthographic transcripts) or --ipa",
    )
    corpus.add_argument("--ipa", action="store_true", help="the transcripts of --output-dir are IPA")


def add_parsers(sub) -> None:
    """zipa transcribe and zipa align."""
    p = sub.add_parser(
        "transcribe",
        help="audio -> IPA transcripts",
        epilog=formats_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Transcribe audio files to IPA phones.",
    )
    _add_decoding_args(p, "txt")
    p.add_argument(
        "--timestamps",
        action="store_true",
        help="per-phone times and confidences in jsonl/tsv (always on for ctm/textgrid)",
    )
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser(
        "align",
        help="audio -> timed phones and words (TextGrid, CTM...)",
        epilog=formats_help() + FORCED_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Per-phone and per-word times and confidences from the model's frame "
        "alignment (greedy path), or of given phones (forced alignment: --transcript, "
        "--text, --transcripts, --textgrid), written as Praat TextGrid, CTM, jsonl or tsv.",
    )
    _add_decoding_args(p, "textgrid")
    p.add_argument(
        "--plot",
        metavar="OUT",
        default=None,
        help="also draw each file's spectrogram with its phone and word tiers: OUT.png for one "
        "input, else a folder OUT holding <relative path>.png (needs matplotlib)",
    )
    _add_forced_args(p)
    p.set_defaults(func=cmd_align)
