"""The settings of the one audio -> phones path, in one object that every front end passes on
(the Python API, `zipa transcribe/align/evaluate`, the web page): how hypotheses are searched,
how long files are windowed, how many segments are decoded together, which phones the output
may use and how many alternatives each phone gets. Light to import (`zipa --help` reads the
defaults without loading torch)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# How hypotheses are searched: "greedy" (as the released ZIPA inference) or "beam" (CTC prefix
# beam search / transducer modified beam search).
DECODING_METHODS = ("greedy", "beam")
DEFAULT_WINDOW = 30.0  # files longer than this (s) are decoded in overlapping windows
DEFAULT_OVERLAP = 2.0
MIN_WINDOW = 1.0


def check_window(window: float, overlap: float) -> None:
    if not window >= MIN_WINDOW:
        raise ValueError(f"window must be at least {MIN_WINDOW} s, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window) = [0, {window}), got {overlap}")


@dataclass(frozen=True)
class DecodingOptions:
    """How audio is decoded; checked when made (ValueError naming the setting).

    decoding, beam: "greedy", or "beam" with ``beam`` hypotheses. window, overlap: files longer
    than ``window`` seconds are cut into windows overlapping by ``overlap``. batch_size: files
    (or windows) decoded together. inventory: the phones the output may use (a language code,
    an inventory file, an `Inventory`, a list of phones or a `TokenMask`; None: all). topk: each
    phone's ``topk`` most probable tokens also come out (0: none). remove_diacritics: strip
    diacritics from transcripts to align and references to score (models trained without)."""

    decoding: str = "greedy"
    beam: int = 4
    window: float = DEFAULT_WINDOW
    overlap: float = DEFAULT_OVERLAP
    batch_size: int = 8
    inventory: Any = None
    topk: int = 0
    remove_diacritics: bool = False

    def __post_init__(self) -> None:
        check_window(self.window, self.overlap)
        if self.decoding not in DECODING_METHODS:
            raise ValueError(f"decoding must be one of {', '.join(DECODING_METHODS)}, got {self.decoding!r}")
        if self.beam < 1:
            raise ValueError(f"beam must be at least 1, got {self.beam}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.topk < 0:
            raise ValueError(f"topk must be 0 (none) or more, got {self.topk}")

    def replace(self, **changes: Any) -> DecodingOptions:
        """A copy with ``changes`` (checked)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, options: DecodingOptions | None = None, **changes: Any) -> DecodingOptions:
        """``options`` (default: the defaults) with ``changes``, the keyword arguments a caller
        gave one by one; unknown names are a TypeError naming them."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown decoding option(s): {', '.join(sorted(unknown))}")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **changes) if changes else base
