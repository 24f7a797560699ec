#!/usr/bin/env python3
"""Build the embedded demo corpus: espeak-ng and Festival speech in 8 training languages + 1 held-out one.

Writes OUT_DIR/{train,dev,test,heldout,unlabeled,test_festival,test_festival_heldout}/
(lhotse shar: cuts.NNNNNN.jsonl.gz +
recording.NNNNNN.tar, 16 kHz flac), OUT_DIR/demo_corpus.json (configuration and statistics)
and OUT_DIR/README.txt (sizes). Texts come from zipa/assets/demo_texts/<language>.txt; labels are
espeak-ng's phonemisation of the same text normalised to ZIPA's inventory (Festival's own phones
for what Festival speaks: --festival-renderings of each train sentence's renderings where the
language has an allowed Festival voice; without Festival installed the corpus is espeak-ng only,
and this says so). The output is a
function of the options (seed included). See zipa/data/demo_corpus.py.

Safe to re-run: a finished corpus with the same options is left alone; an interrupted run
resumes where it stopped; other options for an existing corpus need --overwrite.

Example (the default corpus, as ./prepare.sh builds it):
  local/make_demo_corpus.py --out-dir data/demo --num-jobs 2
Example (the Italian corpus of ./run.sh's fine-tuning and pseudo-labelling stages; with Festival
installed its test sentences are also spoken by lp_diphone and the held-out pc_diphone):
  local/make_demo_corpus.py --out-dir data/demo_it --languages it --heldout "" \
      --num-dev 10 --num-test 60 --num-unlabeled 50
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from zipa.data.demo_corpus import (
    FESTIVAL_VOICES,
    HELDOUT_LANGUAGES,
    TRAIN_LANGUAGES,
    VOICE_VARIANTS,
    DemoCorpusConfig,
    build_demo_corpus,
    readme_text,
)


def int_pair(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two integers), got {text!r}") from None
    if lo > hi:
        raise argparse.ArgumentTypeError(f"LOW > HIGH in {text!r}")
    return lo, hi


def festival_renderings(args) -> int:
    """``--festival-renderings``, or 0 with a message when Festival or a voice it needs is missing."""
    if not args.festival_renderings:
        return 0
    from zipa.data.demo_corpus import language
    from zipa.text import festival

    needed = {
        v
        for code in args.languages
        for allowed, held in [FESTIVAL_VOICES.get(language(code).voice, ("", ()))]
        for v in (allowed, *held)
        if v
    }
    if not needed:  # no language of this corpus has a Festival voice (e.g. German): espeak-ng only
        return 0
    missing = sorted(needed - set(festival.installed_voices()))
    if missing:
        why = (
            "Festival is not installed"
            if not festival.is_available()
            else f"Festival voices missing: {' '.join(missing)}"
        )
        print(
            f"make_demo_corpus.py: {why}; the corpus is espeak-ng only (apt-get install "
            f"{' '.join(sorted({festival.VOICES[v].package for v in missing} | {'festival'}))})",
            file=sys.stderr,
        )
        return 0
    return args.festival_renderings


def code_list(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(",") if x)


def get_parser() -> argparse.ArgumentParser:
    d = DemoCorpusConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=Path("data/demo"))
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--texts-dir",
        type=Path,
        default=None,
        help="folder of <language>.txt sentence lists (default: zipa/assets/demo_texts)",
    )
    p.add_argument(
        "--languages",
        type=code_list,
        default=d.languages,
        help=f"training languages, comma-separated (default: {','.join(x.code for x in TRAIN_LANGUAGES)})",
    )
    p.add_argument(
        "--heldout",
        type=code_list,
        default=d.heldout,
        help=f"held-out languages (default: {','.join(x.code for x in HELDOUT_LANGUAGES)})",
    )
    p.add_argument("--num-dev", type=int, default=d.num_dev, help="dev sentences per language")
    p.add_argument("--num-test", type=int, default=d.num_test, help="test sentences per language")
    p.add_argument(
        "--num-unlabeled",
        type=int,
        default=d.num_unlabeled,
        help="train sentences per language put instead into unlabeled/ (speech for "
        "pseudo-labelling), spoken as often as train sentences",
    )
    p.add_argument(
        "--max-sentences",
        type=int,
        default=None,
        help="use only the first N sentences of each text file (tiny corpora)",
    )
    p.add_argument(
        "--train-renderings",
        type=int,
        default=d.train_renderings,
        help="voice variants each train sentence is spoken with",
    )
    p.add_argument("--rate", type=int_pair, default=d.rate, help="LOW,HIGH words per minute")
    p.add_argument("--pitch", type=int_pair, default=d.pitch, help="LOW,HIGH in 0..100")
    p.add_argument("--pitch-range", type=int_pair, default=d.pitch_range, help="LOW,HIGH in 0..100")
    p.add_argument(
        "--variants",
        type=lambda s: tuple(s.split(",")),
        default=d.variants,
        help=f"espeak-ng voice variants ('' = default voice; default: {','.join(VOICE_VARIANTS)})",
    )
    p.add_argument(
        "--max-token-rate",
        type=float,
        default=d.max_token_rate,
        help="re-speak slower any utterance whose label has more tokens per second",
    )
    p.add_argument("--shard-size", type=int, default=d.shard_size)
    p.add_argument(
        "--festival-renderings",
        type=int,
        default=1,
        help="renderings of each train sentence spoken by Festival where the language has an allowed "
        "voice (0: espeak-ng only; also when Festival or a voice is not installed)",
    )
    p.add_argument("--num-jobs", type=int, default=1, help="processes resampling and encoding flac")
    p.add_argument(
        "--overwrite", action="store_true", help="rebuild even if OUT_DIR holds a corpus (of any configuration)"
    )
    return p


def main() -> None:
    args = get_parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = DemoCorpusConfig(
        seed=args.seed,
        texts_dir=str(args.texts_dir) if args.texts_dir else None,
        languages=args.languages,
        heldout=args.heldout,
        num_dev=args.num_dev,
        num_test=args.num_test,
        num_unlabeled=args.num_unlabeled,
        max_sentences=args.max_sentences,
        train_renderings=args.train_renderings,
        rate=args.rate,
        pitch=args.pitch,
        pitch_range=args.pitch_range,
        variants=args.variants,
        max_token_rate=args.max_token_rate,
        shard_size=args.shard_size,
        festival_renderings=festival_renderings(args),
    )
    try:
        summary = build_demo_corpus(args.out_dir, cfg, num_jobs=args.num_jobs, progress=True, overwrite=args.overwrite)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        sys.exit(f"make_demo_corpus.py: {e}")
    if summary.already_complete:
        print(f"{args.out_dir} is complete already (same configuration); nothing to do.")
    print(readme_text(cfg, summary), end="")


if __name__ == "__main__":
    main()
