#!/usr/bin/env python3
"""Train ZIPA's IPA tokenizer (a sentencepiece unigram model) from a phone inventory.

The inventory, ``ipa_simplified/phone_set.txt``, is ZIPA's simplified IPA phone set: one symbol
per line, 123 symbols in IPA-chart order (pulmonic consonants, non-pulmonic consonants, other
symbols, vowels, then diacritics and suprasegmentals). It was written out once from the symbol
order of the original ZIPA release's ``tokens.jsonl``; it is a list of facts, not code.

Sentencepiece sees every phone as one "sentence", so the unigram model ends up with exactly one
piece per character plus the word-boundary piece ``▁``. The ids are what the released ZIPA
checkpoints were trained with:

    <blk>=0, <sos/eos>=1, <unk>=2, ▁=3, then the single characters in code-point order.

The options below are those of the original training (icefall's ``train_bpe_model.py`` style,
identity normalisation). Unigram training over single characters is deterministic, so no seed
or thread settings are needed. Run from the repository root with the defaults and the model's
bytes equal the original's: the trainer spec stores the input path and model prefix as given
(hence the paths relative to the current directory), and ``add_dummy_prefix=True`` is passed
explicitly because the original's normalizer spec records it as set (the behaviour is the
default either way).

Outputs, in ``--out-dir``; when that is the default ``ipa_simplified/``, also copied byte for
byte into ``zipa/assets/ipa_simplified/`` (what the installed package reads; a test keeps the
two equal) unless ``--no-package-copy``:
  unigram_<V>.model / unigram_<V>.vocab   the sentencepiece model and its vocabulary
  tokens.txt                              icefall's ``symbol id`` list of the model's pieces
  tokens.jsonl                            {phone: id} of the inventory for lexicon-style tools:
                                          <eps>=0, the phones from 1, then <star>, SIL, SPN, <unk>
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import sentencepiece as spm

from zipa.utils.atomic import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT_DIR = REPO / "ipa_simplified"
PACKAGE_COPY = REPO / "zipa" / "assets" / "ipa_simplified"
SPECIAL_SYMBOLS = ["<blk>", "<sos/eos>"]  # ids 0 and 1; <unk> follows at 2
LEXICON_EXTRAS = ["<star>", "SIL", "SPN", "<unk>"]


def read_phone_set(path: Path) -> list[str]:
    phones = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    phones = [p for p in phones if p]
    if len(set(phones)) != len(phones):
        raise ValueError(f"{path}: duplicate phones in the inventory")
    return phones


def train(phone_set: Path, out_dir: Path, vocab_size: int) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / f"unigram_{vocab_size}"
    spm.SentencePieceTrainer.train(
        input=os.path.relpath(phone_set),
        model_prefix=os.path.relpath(prefix),
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=1.0,
        input_sentence_size=100000000,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        user_defined_symbols=SPECIAL_SYMBOLS,
        unk_id=2,
        bos_id=-1,
        eos_id=-1,
        minloglevel=1,
    )
    return prefix.with_suffix(".model")


def write_tokens_txt(model_path: Path, out_path: Path) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    lines = [f"{sp.id_to_piece(i)} {i}\n" for i in range(sp.get_piece_size())]
    write_text_atomic(out_path, "".join(lines))


def write_tokens_jsonl(phones: list[str], out_path: Path) -> None:
    symbols = ["<eps>", *phones, *LEXICON_EXTRAS]
    mapping = {s: i for i, s in enumerate(symbols)}
    # One JSON object on a single line, no trailing newline (as in the original release).
    write_text_atomic(out_path, json.dumps(mapping, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--phone-set",
        type=Path,
        default=REPO / "ipa_simplified" / "phone_set.txt",
        help="phone inventory, one symbol per line",
    )
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument(
        "--no-package-copy", action="store_true", help=f"do not copy the outputs into {PACKAGE_COPY.relative_to(REPO)}"
    )
    parser.add_argument(
        "--vocab-size", type=int, default=None, help="default: number of phones + 4 (<blk>, <sos/eos>, <unk>, ▁)"
    )
    args = parser.parse_args()

    phones = read_phone_set(args.phone_set)
    vocab_size = args.vocab_size or len(phones) + 4
    model = train(args.phone_set, args.out_dir, vocab_size)
    write_tokens_txt(model, args.out_dir / "tokens.txt")
    write_tokens_jsonl(phones, args.out_dir / "tokens.jsonl")
    outputs = [model, model.with_suffix(".vocab"), args.out_dir / "tokens.txt", args.out_dir / "tokens.jsonl"]
    print(f"wrote {', '.join(p.name for p in outputs)} in {args.out_dir}")
    if not args.no_package_copy and args.out_dir.resolve() == DEFAULT_OUT_DIR.resolve():
        PACKAGE_COPY.mkdir(parents=True, exist_ok=True)
        for path in [*outputs, args.phone_set]:
            shutil.copyfile(path, PACKAGE_COPY / path.name)
        print(f"copied them and {args.phone_set.name} to {PACKAGE_COPY}")


if __name__ == "__main__":
    main()
