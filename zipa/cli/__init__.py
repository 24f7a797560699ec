"""The `zipa` command: transcribe, align (timestamps), evaluate, export to ONNX and list models.

    zipa transcribe AUDIO_OR_DIR... --model M [--format txt|tsv|jsonl|ctm|textgrid|eaf] [--output PATH]
    zipa align AUDIO_OR_DIR... --model M [--format textgrid|eaf|ctm|jsonl|tsv|txt] [--output PATH] [--plot OUT]
        [--transcript IPA | --text TEXT --lang CODE | --transcripts TSV | --textgrid FILE_OR_DIR [--tier NAME]
         | --eaf FILE_OR_DIR [--eaf-tier NAME]]
    zipa align CORPUS... --model M --output-dir DIR (--lang CODE | --ipa)   (MFA-style corpus folders)
    zipa evaluate [AUDIO_OR_DIR...] --ref TSV|TEXTGRID_DIR|SHAR_DIR --model M --output-dir DIR [--tier NAME]
    zipa export-onnx --model M --out DIR [--int8] [--fp16]
    zipa models
    zipa inventories [CODE...]
    zipa serve --model M [--host 127.0.0.1] [--port 8000] [--max-upload-mb MB]   (a local web page)

    (transcribe, align: [--resume] [--progress auto|bar|log|none] [-q] [--inventory FILE | --lang CODE] [--topk K])

Argument parsing and wiring only: decoding lives in `zipa.inference.transcriber`, models in
`zipa.hub.pretrained`, times in `zipa.decoding.timestamps`, formats in `zipa.inference.writers`,
outputs that grow file by file and resume in `zipa.inference.resumable`, progress in
`zipa.utils.progress`, scoring against references (`zipa evaluate`) in `zipa.evaluation.evaluate`
and `zipa.evaluation.references`, the web page (`zipa serve`) in `zipa.web`. Here: which files,
where their results go, and signals (a first SIGINT/SIGTERM stops decoding after the current
batch, see `_StopRequest`).

Exit status: 0 when every file was transcribed, 1 when some failed (each is reported on stderr
and skipped) or an output could not be written, 2 for a usage or setup error (bad option, model
not found), 130 / 143 when stopped by SIGINT (Ctrl-C) / SIGTERM (what is finished is kept:
`--resume` goes on from there), 141 when stdout is a pipe whose reader went away (`| head`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from zipa import __version__
from zipa.cli import evaluate, tools, transcribe
from zipa.cli.common import UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zipa", description="ZIPA multilingual IPA phone recognition.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    transcribe.add_parsers(sub)
    evaluate.add_parsers(sub)
    tools.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
