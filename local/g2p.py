#!/usr/bin/env python3
"""Orthographic text -> IPA in ZIPA's inventory ("how do I tokenize my text to phonemes?").

Reads text lines (a file, or stdin with '-') and writes one IPA line per input line, through
espeak-ng (or epitran for codes like yor-Latn), normalised to the 127-token inventory (see
zipa/text/ipa.py). With --tsv, lines are `id<TAB>text` and the output is `id<TAB>ipa`.

Examples:
  echo "Guten Morgen" | local/g2p.py --lang de                # ɡuːtən mɔɾɡən
  local/g2p.py --lang cmn --tsv texts.tsv -o ipa.tsv
  local/g2p.py --lang yor-Latn yoruba.txt -o yoruba.ipa      # needs: pip install epitran

Symbols outside the inventory that had to be dropped are summarised on stderr at the end.
Output files are written atomically (a temporary file renamed at the end), so a re-run simply
replaces them.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from zipa.text.g2p import check_language, g2p_report
from zipa.utils.atomic import open_atomic
from zipa.utils.tsv import InputError, parse_tsv_lines


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", default="-", help="text file, or '-' for stdin")
    p.add_argument(
        "--lang",
        required=True,
        help="espeak-ng voice/language (en-us, fr, cmn, sw, ...), ISO 639-3 code "
        "(eng, spa, ...) or epitran code (yor-Latn, ...)",
    )
    p.add_argument("-o", "--output", default="-", help="output file, or '-' for stdout")
    p.add_argument("--tsv", action="store_true", help="lines are id<TAB>text; write id<TAB>ipa")
    p.add_argument("--backend", choices=["auto", "espeak", "epitran"], default="auto")
    p.add_argument("--remove-diacritics", action="store_true", help="also apply ZIPA's --remove-diacritics mapping")
    return p


def convert(lines, name: str, args, out, dropped: Counter) -> int:
    n_out = 0
    if args.tsv:
        rows = parse_tsv_lines(lines, name, 2, 2)
        for _, (utt_id, text) in tqdm(rows, desc="g2p", unit="line", file=sys.stderr):
            ipa, bad = g2p_report(text, args.lang, args.remove_diacritics, args.backend)
            dropped.update(bad)
            out.write(f"{utt_id}\t{ipa}\n")
            n_out += 1
    else:
        for line in tqdm(lines, desc="g2p", unit="line", file=sys.stderr):
            ipa, bad = g2p_report(line.strip(), args.lang, args.remove_diacritics, args.backend)
            dropped.update(bad)
            out.write(ipa + "\n")
            n_out += 1
    return n_out


def main() -> None:
    args = get_parser().parse_args()
    name = "<stdin>" if args.input == "-" else args.input
    if args.input != "-" and not Path(args.input).is_file():
        sys.exit(f"g2p.py: input file not found: {args.input}")
    try:
        check_language(args.lang, args.backend)
    except RuntimeError as e:  # EspeakError, or epitran missing / unknown code
        sys.exit(f"g2p.py: language {args.lang!r}: {e}")
    dropped: Counter = Counter()
    src = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")  # noqa: SIM115 (closed in the finally below; stdin is not)
    try:
        if args.output == "-":
            n = convert(src, name, args, sys.stdout, dropped)
        else:
            with open_atomic(args.output) as out:
                n = convert(src, name, args, out, dropped)
    except InputError as e:
        sys.exit(f"g2p.py: {e}")
    finally:
        if src is not sys.stdin:
            src.close()
    print(f"g2p.py: {n} lines ({args.lang})", file=sys.stderr)
    if dropped:
        shown = ", ".join(f"{ch!r} U+{ord(ch):04X} x{c}" for ch, c in dropped.most_common(20))
        print(f"g2p.py: dropped symbols outside the inventory: {shown}", file=sys.stderr)


if __name__ == "__main__":
    main()
