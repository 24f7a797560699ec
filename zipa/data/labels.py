"""Labels: IPA text as stored in the shards -> normalised IPA -> token ids.

The filters (which must know how many tokens a cut will have) and the dataset (which makes the
``token_ids`` of a batch) share one :class:`LabelEncoder`, so both see the same normalisation:
:func:`zipa.text.ipa.normalize_ipa` (inventory mapping; with ``remove_diacritics`` ZIPA's
``--remove-diacritics``) and then the tokenizer's ``encode``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zipa.text.tokenizer import Tokenizer


class LabelEncoder:
    """``text -> (normalised text, token ids)``; cheap to pickle (the tokenizer loads lazily)."""

    def __init__(
        self,
        remove_diacritics: bool = False,
        normalize: bool = True,
        bpe_model: str | Path | None = None,
    ):
        self.remove_diacritics = remove_diacritics
        self.normalize_text = normalize
        self.bpe_model = str(bpe_model) if bpe_model is not None else None
        self._tokenizer: Tokenizer | None = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from zipa.text.tokenizer import Tokenizer

            self._tokenizer = Tokenizer.from_file(self.bpe_model) if self.bpe_model else Tokenizer.default()
        return self._tokenizer

    def normalize(self, text: str | None) -> str:
        text = text or ""
        if self.normalize_text:
            from zipa.text.ipa import normalize_ipa

            return normalize_ipa(text, remove_diacritics=self.remove_diacritics)
        if self.remove_diacritics:
            from zipa.text.ipa import remove_diacritics

            return remove_diacritics(text)
        return " ".join(text.split())

    def encode(self, text: str | None) -> tuple[str, list[int]]:
        norm = self.normalize(text)
        return norm, (self.tokenizer.encode(norm) if norm else [])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_tokenizer"] = None
        return state


def cut_text(cut) -> str:
    """The transcription of a cut: its supervisions' texts joined by spaces."""
    return " ".join(s.text for s in cut.supervisions if s.text)
