"""The small commands: zipa models, inventories, export-onnx and serve."""

from __future__ import annotations

import argparse
import sys

from zipa.cli.common import (
    UsageError,
    add_model_arg,
    add_runtime_args,
    decoding_options,
    load_transcriber,
    positive_float,
    positive_int,
)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from zipa.hub.pretrained import resolve_model
    from zipa.model.io import load_model
    from zipa.onnx.export import export_model

    try:
        model, _ = load_model(resolve_model(args.model, cache_dir=args.cache_dir))
        written = export_model(
            model, args.out, int8=args.int8, fp16=args.fp16, bpe_model=args.bpe_model, opset=args.opset
        )
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
    options = decoding_options(args)
    try:
        from zipa.web import create_app
        from zipa.web.app import check_limits
        from zipa.web.server import address, allowed_hosts, is_loopback, listen, run
    except ImportError as e:
        raise UsageError(f"zipa serve needs the web extra: pip install 'zipa-phones[web]' ({e})") from None
    try:
        hosts = allowed_hosts(args.host, args.allow_host)
        check_limits(args.max_upload_mb, args.max_disk_mb)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        sock = listen(args.host, args.port)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e}") from None
    with sock:
        transcriber, model_path = load_transcriber(args)
        app = create_app(
            transcriber,
            model_name=model_path.name,
            max_upload_mb=args.max_upload_mb,
            options=options,
            allowed_hosts=hosts,
            max_queue=args.max_queue,
            max_disk_mb=args.max_disk_mb,
        )
        if not is_loopback(args.host):
            print(
                f"zipa serve: warning: listening on {args.host}: whoever reaches this address can use the model "
                "and upload files; browsers allow the microphone only at localhost or over https; it answers "
                f"only for the host names {', '.join(hosts)} (add others with --allow-host)",
                file=sys.stderr,
            )
        print(
            f"zipa serve: {address(sock)} (model {model_path.name}, device {transcriber.device}); Ctrl-C stops",
            flush=True,
        )
        run(app, sock)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from zipa.hub.pretrained import format_table

    sys.stdout.write(format_table(args.cache_dir))
    print(
        "\nUse a name or repo id with --model; checkpoints are downloaded into the Hugging Face "
        "cache on first use (HF_HUB_OFFLINE=1: cache only)."
    )
    return 0


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

Only the page itself may use the server: a request naming another host (Host header) gets
HTTP 400, so that a web site cannot reach it by DNS rebinding, and an upload sent by a page
of another origin (Origin, Sec-Fetch-Site) gets HTTP 403.
"""


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "export-onnx",
        help="export a model to ONNX (fp32, and int8/fp16 copies)",
        description="Export a model to ONNX for onnxruntime: model.onnx (CTC) or encoder/decoder/"
        "joiner.onnx (transducer), with tokens.txt, bpe.model and config.json. "
        "Run it with `zipa transcribe --backend onnx --model DIR`.",
    )
    add_model_arg(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--int8", action="store_true", help="also write int8 (dynamic quantisation) graphs: *.int8.onnx")
    p.add_argument("--fp16", action="store_true", help="also write float16 graphs (for GPUs): *.fp16.onnx")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--bpe-model", default=None, help="tokenizer model (default: the packaged ipa_simplified one)")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser(
        "inventories",
        help="list the built-in phone inventories (--lang)",
        description="The built-in phone inventories that --lang selects: without CODE, one line per "
        "language (ISO 639-3 code, number of phones, name); with codes, each one's "
        "phones (code TAB phones separated by spaces, usable as an --inventory file "
        "after `cut -f2`). Derived from PHOIBLE 2.0 as extended by Allophoible (the "
        "allophant package, MIT licence): each language's phonemes and allophones over "
        "all its PHOIBLE inventories, mapped onto ZIPA's IPA inventory.",
    )
    p.add_argument("codes", nargs="*", metavar="CODE", help="ISO 639-3 or espeak-ng codes (eng, en-us, cmn...)")
    p.set_defaults(func=cmd_inventories)

    p = sub.add_parser(
        "serve",
        help="a local web page: drop audio, see and hear phones, download TextGrids",
        epilog=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a web page for transcribing and aligning audio in the browser (needs "
        "pip install 'zipa-phones[web]'). Prints the page's address.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=200.0,
        metavar="MB",
        help="largest upload accepted, in MB (default 200); larger ones are refused with HTTP 413",
    )
    p.add_argument(
        "--max-queue",
        type=positive_int,
        default=64,
        metavar="N",
        help="files waiting to be decoded at most (default 64); more are refused with HTTP 503 and "
        "Retry-After (the page retries)",
    )
    p.add_argument(
        "--max-disk-mb",
        type=positive_float,
        default=2048.0,
        metavar="MB",
        help="the uploads held in the temporary folder at most, in MB (default 2048); more are refused "
        "with HTTP 507 and Retry-After (the page retries)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this host name (repeatable; *.example.org for its subdomains): "
        "the name a proxy or another machine reaches the page by. Others get HTTP 400, against "
        "DNS rebinding; allowed are only the --host address (and localhost, 127.0.0.1, [::1] for "
        "a loopback one)",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=8, help="windows of a long file decoded together (default 8)"
    )
    add_runtime_args(p, progress=False)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("models", help="list the released ZIPA models", description="List the released ZIPA models.")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    p.set_defaults(func=cmd_models)
