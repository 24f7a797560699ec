#!/usr/bin/env python3
"""Phone counts and out-of-inventory symbols per language, from a TSV or shar folders.

Inputs (any number, mixed):
  a TSV file            id<TAB>path<TAB>ipa[<TAB>lang]   (local/make_shar.py's input)
  a shar folder         cuts.NNNNNN.jsonl.gz (+ audio shards, which are not read)

Each transcription is normalised with zipa/text/ipa.py; the report counts the phones the model will
see (one per inventory character, diacritics included) and the symbols that had to be dropped
because they are outside ZIPA's inventory, per language (the TSV's 4th column or the cut's
supervision language; --lang for data without one). --output-json writes everything (all
counts), atomically.

Example:
  local/text_stats.py data/demo/train data/demo/heldout --output-json data/demo/text_stats.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from zipa.data.text_stats import collect, format_report, shar_items, tsv_items
from zipa.utils.atomic import write_text_atomic
from zipa.utils.tsv import InputError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help="TSV files and/or shar folders")
    p.add_argument("--lang", default=None, help="language for items that name none")
    p.add_argument("--top", type=int, default=10, help="phones / symbols shown per language")
    p.add_argument("--output-json", type=Path, default=None, help="write all counts here")
    return p


def items(paths, lang):
    for path in paths:
        if path.is_dir():
            yield from shar_items(path, lang)
        elif path.is_file():
            yield from tsv_items(path, lang)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")


def main() -> None:
    args = get_parser().parse_args()
    try:
        stats = collect(tqdm(items(args.inputs, args.lang), desc="text stats", unit="utt", file=sys.stderr))
    except (InputError, FileNotFoundError, ValueError) as e:
        sys.exit(f"text_stats.py: {e}")
    print(format_report(stats, args.top), end="")
    if args.output_json:
        report = {
            "inputs": [str(p) for p in args.inputs],
            "languages": {lang: s.to_json() for lang, s in stats.items()},
        }
        write_text_atomic(args.output_json, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
        print(f"wrote {args.output_json}", file=sys.stderr)


if __name__ == "__main__":
    main()
