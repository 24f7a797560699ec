"""zipa evaluate: decode audio and score it against reference IPA (TSV, TextGrids or shar)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zipa.audio.files import find_audio
from zipa.cli.common import UsageError, add_runtime_args, decoding_options, load_transcriber, positive_int


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
    from zipa.utils.progress import Progress

    command = "zipa evaluate"
    options = decoding_options(args)
    references, total, input_errors, unused = _evaluation_references(args)
    ref = Path(args.ref)
    name = args.name or (ref.stem if ref.is_file() else ref.resolve().name)
    if not args.no_chart:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            print(
                f"{command}: warning: no chart: it needs matplotlib (pip install 'zipa-phones[plot]'); "
                "--no-chart silences this",
                file=sys.stderr,
            )
            args.no_chart = True
    transcriber, model_path = load_transcriber(args, use_aligner=False)
    for message in input_errors:
        print(f"error: {message}", file=sys.stderr)

    mode = "none" if args.quiet else args.progress
    with Progress(total or 0, mode, interval=args.progress_interval, desc=command) as progress:
        run = run_evaluation(
            transcriber,
            references,
            options,
            progress=progress,
            total=total,
            on_failure=lambda failure: progress.write(f"error: {failure.error}"),
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


def _add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="AUDIO_OR_DIR",
        help="audio files, or folders searched recursively (as zipa transcribe); none for a shar "
        "--ref, or a TSV --ref whose paths name the files",
    )
    p.add_argument(
        "--ref",
        required=True,
        metavar="REFS",
        help="references: a TSV, a folder of TextGrids or a shar folder (see below)",
    )
    p.add_argument("--tier", default=None, metavar="NAME", help="the TextGrid tier holding the reference")
    p.add_argument("--output-dir", "-o", required=True, type=Path, help="folder for the result files")
    p.add_argument(
        "--name", default=None, help="test set name in the file names (default: the --ref file's stem or folder's name)"
    )
    p.add_argument("--no-chart", action="store_true", help="do not draw the PER/PFER chart")
    p.add_argument(
        "--remove-diacritics",
        action="store_true",
        help="score without diacritics: ZIPA's --remove-diacritics on references and hypotheses",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="files decoded together (default 8; 1 decodes each file alone, see zipa transcribe)",
    )
    add_runtime_args(p)


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="PER and PFER against reference IPA (TSV, TextGrids or shar)",
        epilog=EVALUATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Decode audio and score it against reference IPA: icefall's recogs-*, errs-* "
        "and metrics-*.json (as ctc_decode.py writes them), a PER/PFER table overall "
        "and per language/speaker, and a bar chart.",
    )
    _add_evaluate_args(p)
    p.set_defaults(func=cmd_evaluate)
