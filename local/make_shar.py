#!/usr/bin/env python3
"""Make lhotse shar shards (ZIPA's training data format) from your own audio and labels.

Inputs, one of:
  --tsv FILE        lines ``id<TAB>path<TAB>ipa[<TAB>language]``; paths relative to the TSV's
                    folder (or --audio-dir) or absolute; any format soundfile reads, any rate
  --manifest FILE   an existing lhotse CutSet manifest (cuts.jsonl.gz); the text of each cut's
                    supervisions is its label

Output: OUT_DIR/cuts.NNNNNN.jsonl.gz + recording.NNNNNN.tar (16 kHz mono 16-bit flac), one
supervision per cut with ``text`` (normalised IPA) and ``language``, and nothing else in OUT_DIR,
so that plain lhotse reads it (``CutSet.from_shar(in_dir=OUT_DIR)``). Beside OUT_DIR, as hidden
files named after it (``ls -a``): ``.NAME.skipped.tsv`` lists the items left out (unreadable or
empty audio, empty label, duplicate id, malformed line) and why; ``.NAME.shar_index.json``
(counts, hours) marks the folder complete. E.g. --out-dir data/shar/fr gives data/shar/fr/,
data/shar/.fr.skipped.tsv and data/shar/.fr.shar_index.json. The folder appears only when every
shard is written; an interrupted run resumes where it stopped; a complete folder is left alone
unless --overwrite. Point ``--train-shar-dirs`` / ``--dev-shar-dirs`` of the recipes at OUT_DIR.

Labels: IPA is mapped onto the ZIPA inventory (zipa.text.ipa.normalize_ipa; --no-normalize keeps
it as given). With --g2p LANG the third column is orthographic text, converted with espeak-ng
(or epitran for codes like yor-Latn) through zipa.text.g2p.

Examples:
  local/make_shar.py --tsv data/mine/train.tsv --out-dir data/shar/mine_train --shard-size 1000
  local/make_shar.py --tsv words.tsv --g2p fra --out-dir data/shar/fr --num-jobs 4
  local/make_shar.py --manifest data/fbank/cuts_dev.jsonl.gz --out-dir data/shar/dev
"""

from __future__ import annotations

import argparse
import gzip
import logging
import sys
from pathlib import Path

from zipa.data.shar import LabelTransform, read_tsv, write_shar


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tsv", type=Path, help="id<TAB>path<TAB>ipa[<TAB>language] lines")
    src.add_argument("--manifest", type=Path, help="a lhotse CutSet manifest (jsonl/jsonl.gz)")
    p.add_argument("--out-dir", type=Path, required=True, help="output shar folder")
    p.add_argument(
        "--audio-dir",
        type=Path,
        default=None,
        help="folder that relative TSV paths start from (default: the TSV's folder)",
    )
    p.add_argument("--shard-size", type=int, default=1000, help="cuts per shard (default 1000)")
    p.add_argument("--language", default=None, help="language code for items without one (default: the --g2p language)")
    p.add_argument(
        "--g2p", metavar="LANG", default=None, help="the label column is orthographic text in LANG: convert it to IPA"
    )
    p.add_argument(
        "--remove-diacritics", action="store_true", help="drop ʰ ʲ ʷ ʼ ː ˞ ˠ ˤ and combining diacritics (ZIPA's flag)"
    )
    p.add_argument("--no-normalize", action="store_true", help="store the IPA labels as given (no inventory mapping)")
    p.add_argument("--num-jobs", type=int, default=1, help="parallel shard writers")
    p.add_argument("--overwrite", action="store_true", help="replace a complete or partial output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _count_lines(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.g2p:
        from zipa.text.g2p import check_language

        check_language(args.g2p)  # fail now, not once per line
    transform = LabelTransform(
        g2p_language=args.g2p,
        remove_diacritics=args.remove_diacritics,
        normalize=not args.no_normalize,
        default_language=args.language or args.g2p,
    )

    if args.tsv is not None:
        if not args.tsv.is_file():
            print(f"error: TSV not found: {args.tsv}", file=sys.stderr)
            return 2
        items = read_tsv(args.tsv, audio_dir=args.audio_dir)
        total: int | None = _count_lines(args.tsv)
    else:
        if not args.manifest.is_file():
            print(f"error: manifest not found: {args.manifest}", file=sys.stderr)
            return 2
        from lhotse import CutSet

        items = CutSet.from_file(args.manifest)
        total = _count_lines(args.manifest) if ".jsonl" in args.manifest.name else None

    summary = write_shar(
        items,
        args.out_dir,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        num_jobs=args.num_jobs,
        progress=not args.no_progress,
        total=total,
        transform=transform,
    )
    print(summary.line())
    if summary.written == 0 and not summary.already_complete:
        print(f"error: nothing was written; see {summary.skipped_report}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
