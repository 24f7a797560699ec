"""Token spans in encoder frames -> times in seconds -> phone and word intervals.

Time convention
---------------
Features are lhotse fbank frames every 10 ms; with ``snip_edges=False`` frame ``m`` is centred
at ``(m + 0.5) * 10 ms``. The conv front end maps fbank frames to 50 Hz frames by
``(T - 7) // 2``: its output frame ``j`` sees fbank frames ``2j .. 2j + 8`` (three 3-wide
convolutions, the second with stride 2), centred on fbank frame ``2j + 4``, that is
``0.045 + 0.02 j`` seconds. CTC models (``output_downsampling_factor`` 1) emit at that rate;
transducer models average pairs of frames (``2j', 2j' + 1``), centred at ``0.055 + 0.04 j'``.

So encoder frame ``j`` is given the interval::

    [FRAME_OFFSET + j * shift, FRAME_OFFSET + (j + 1) * shift)
    FRAME_OFFSET = 0.035 s,  shift = 0.02 s * output_downsampling_factor (0.02 CTC, 0.04 transducer)

whose centre is the centre of the frame's receptive field in the conv front end. A token
spanning frames ``[start, end)`` (see `zipa.decoding.alignment`) gets the times of those frames.
This is the geometry of the network, not a forced alignment: CTC spikes mark where the model
decided on a phone and may sit a frame or two from its acoustic centre.

Phones and words
----------------
Tokens are single IPA characters. A *phone* is a base character followed by the modifier
tokens that attach to it (every modifier in the ZIPA inventory is a postfix: Unicode categories
Lm, Sk and Mn, e.g. ``ː ʰ ʲ ˞`` and combining marks); its interval runs from the start of its
first token to the end of its last, and its confidence is the mean of its tokens'. A modifier
with no phone before it in the word stands alone. ``▁`` tokens separate *words*; a word's
interval runs from its first phone's start to its last phone's end.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

FRAME_OFFSET = 0.035  # seconds from the start of the audio to the start of encoder frame 0
BASE_FRAME_SHIFT = 0.02  # seconds per encoder frame before output downsampling
WORD_BOUNDARY = "\u2581"  # ▁
_MODIFIER_CATEGORIES = {"Lm", "Sk", "Mn"}


def frame_shift(output_downsampling_factor: int) -> float:
    """Seconds per encoder output frame: 0.02 for CTC models, 0.04 for transducer models."""
    return BASE_FRAME_SHIFT * output_downsampling_factor


def frame_time(frame: float, shift: float) -> float:
    """Start time (s) of encoder frame ``frame`` (fractional frames give times inside it)."""
    return FRAME_OFFSET + frame * shift


@dataclass(frozen=True)
class TimedToken:
    """A token with global times in seconds."""

    token: int
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Interval:
    """A labelled stretch of time (a phone or a word)."""

    label: str
    start: float
    end: float
    confidence: float


@dataclass
class Alignment:
    """What one file decodes to: the transcript and its timed phones and words."""

    text: str
    phones: List[Interval]
    words: List[Interval]


def is_modifier(piece: str) -> bool:
    """True for tokens that modify the preceding phone (length, aspiration, diacritics...)."""
    return bool(piece) and all(unicodedata.category(c) in _MODIFIER_CATEGORIES for c in piece)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def build_alignment(
    tokens: Sequence[TimedToken],
    id_to_piece: Callable[[int], str],
    duration: Optional[float] = None,
    normalize: Optional[Callable[[str], str]] = None,
) -> Alignment:
    """Group timed tokens into phones and words.

    ``normalize`` (e.g. diacritic removal) is applied to every phone label; phones it empties
    are dropped, and words are rebuilt from what remains. Interval ends are clipped to the next
    interval's start (neighbouring long-audio windows may disagree by a frame) and to
    ``duration``. ``text`` is the words joined by single spaces.
    """
    words_of_phones: List[List[Interval]] = [[]]
    pending: List[TimedToken] = []  # tokens of the phone being built
    pending_label = ""

    def flush() -> None:
        nonlocal pending, pending_label
        if pending:
            label = normalize(pending_label) if normalize is not None else pending_label
            if label:
                words_of_phones[-1].append(
                    Interval(label, pending[0].start, pending[-1].end, _mean([t.confidence for t in pending]))
                )
        pending, pending_label = [], ""

    for token in tokens:
        piece = id_to_piece(token.token)
        if piece == WORD_BOUNDARY:
            flush()
            if words_of_phones[-1]:
                words_of_phones.append([])
            continue
        if not (is_modifier(piece) and pending):
            flush()
        pending.append(token)
        pending_label += piece
    flush()

    word_lists = [w for w in words_of_phones if w]
    phones = _clip([p for w in word_lists for p in w], duration)
    # Rebuild words from the clipped phones so both tiers agree.
    words, k = [], 0
    for w in word_lists:
        mine = phones[k : k + len(w)]
        k += len(w)
        words.append(
            Interval("".join(p.label for p in mine), mine[0].start, mine[-1].end, _mean([p.confidence for p in mine]))
        )
    return Alignment(" ".join(w.label for w in words), phones, words)


def _clip(intervals: List[Interval], duration: Optional[float]) -> List[Interval]:
    out = []
    for i, iv in enumerate(intervals):
        end = iv.end
        if i + 1 < len(intervals):
            end = min(end, intervals[i + 1].start)
        if duration is not None:
            end = min(end, duration)
        start = max(0.0, iv.start if duration is None else min(iv.start, duration))
        out.append(Interval(iv.label, start, max(start, end), iv.confidence))
    return out
