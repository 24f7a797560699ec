"""The IPA tokenizer: a thin wrapper over the sentencepiece unigram model ZIPA was trained with.

Ids: ``<blk>``=0 (CTC/transducer blank), ``<sos/eos>``=1, ``<unk>``=2, ``▁``=3 (word boundary),
then one id per IPA character. ``local/make_tokenizer.py`` regenerates the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

import sentencepiece as spm

from zipa.assets import TOKENIZER_MODEL

PathLike = Union[str, Path]


def default_bpe_model_path() -> Path:
    """Path of the packaged tokenizer, ``zipa/assets/ipa_simplified/unigram_127.model``."""
    return TOKENIZER_MODEL


def _as_int_list(ids: Iterable) -> list[int]:
    # Accepts lists, numpy arrays and tensors (sentencepiece wants plain ints).
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


class Tokenizer:
    """IPA string <-> token ids."""

    blank_id = 0

    def __init__(self, processor: spm.SentencePieceProcessor):
        self.sp = processor

    @classmethod
    def from_file(cls, path: PathLike) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"sentencepiece model not found: {path}")
        return cls(spm.SentencePieceProcessor(model_file=str(path)))

    @classmethod
    def default(cls) -> Tokenizer:
        """The packaged ZIPA tokenizer."""
        return cls.from_file(default_bpe_model_path())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def unk_id(self) -> int:
        return self.sp.unk_id()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: Iterable) -> str:
        return self.sp.decode(_as_int_list(ids))

    def decode_batch(self, batch: Sequence[Iterable]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def piece_to_id(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)
