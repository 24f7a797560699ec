"""Token spans in encoder frames -> times in seconds -> phone and word intervals.

Time convention
---------------
Features are lhotse fbank frames every 10 ms; with ``snip_edges=False`` frame ``m`` is centred
at ``(m + 0.5) * 10 ms``. The conv front end maps fbank frames to 50 Hz frames by
``(T - 7) // 2``: its output frame ``j`` sees fbank frames ``2j .. 2j + 8`` (three 3-wide
convolutions, the second with stride 2), centred on fbank frame ``2j + 4``, that is
``0.045 + 0.02 j`` seconds. CTC models (``output_downsampling_factor`` 1) emit at that rate;
transducer models average pairs of frames (``2j', 2j' + 1``), centred at ``0.055 + 0.04 j'``.

So the receptive field of encoder frame ``j`` is centred at ``FRAME_START + (j + 0.5) * shift``
with ``FRAME_START = 0.035 s`` and ``shift = 0.02 s * output_downsampling_factor`` (0.02 CTC,
0.04 transducer): geometrically, frame ``j`` covers ``[FRAME_START + j * shift, FRAME_START +
(j + 1) * shift)``.

Tokens are not emitted where their phone starts, though: a CTC spike fires once the model has
heard part of the phone, at a frame whose receptive field already lies inside it. Measured on
speech whose phone start times are known (espeak-ng's phoneme events; ``python
benchmarks/timestamps.py --model exp/demo_ctc/averaged.pth``: 40 sentences in 8 languages, 4
voices, 4,156 timed phones; table in the README), token starts on the geometric grid came late
on average: +13.8 ms in free transcription (greedy CTC spans) and +17.5 ms in forced alignment
(CTC Viterbi spans) with the demo model. Token times are therefore the geometric frame times
moved earlier by the mean of the two measured lags, ``SPIKE_LAG = 0.016 s``::

    encoder frame j  ->  [FRAME_OFFSET + j * shift, FRAME_OFFSET + (j + 1) * shift)
    FRAME_OFFSET = FRAME_START - SPIKE_LAG = 0.019 s

(bias after it: -2.2 ms free, +1.5 ms forced). A token spanning frames ``[start, end)`` (see
`zipa.decoding.alignment`) gets the times of those frames. The lag was measured on a CTC model
(no trained transducer was at hand); transducer tokens get the same shift. What is left is
spread, not bias: a spike sits from a frame before to two frames after its phone's start (with
the demo model 56-57 % of phone starts within 20 ms, 87 % within 40 ms), and other placements
read off the CTC posteriors did not do much better (the middle of the blank frames before a
spike, the end of the previous phone, blank-free Viterbi, the largest fbank change near the
spike). A frame aligner (`zipa.model.aligner`), when the model has one, times phones on its own
10 ms grid instead (`TimeGrid`): forced alignment places the transcript's phones, free
transcription the decoded ones, on its frame posteriors (with the demo model 89 % of phone
starts within 20 ms in forced alignment, 83 % in free transcription; README).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from zipa.decoding.fit import AlignmentFit

FRAME_START = 0.035  # seconds from the start of the audio to where encoder frame 0's receptive field begins
SPIKE_LAG = 0.016  # measured: how late tokens come on the geometric grid (see the module docstring)
FRAME_OFFSET = FRAME_START - SPIKE_LAG  # seconds from the start of the audio to a token at frame 0
BASE_FRAME_SHIFT = 0.02  # seconds per encoder frame before output downsampling
WORD_BOUNDARY = "\u2581"  # ▁
_MODIFIER_CATEGORIES = {"Lm", "Sk", "Mn"}


def frame_shift(output_downsampling_factor: int) -> float:
    """Seconds per encoder output frame: 0.02 for CTC models, 0.04 for transducer models."""
    return BASE_FRAME_SHIFT * output_downsampling_factor


def frame_time(frame: float, shift: float) -> float:
    """Time (s) given to the start of encoder frame ``frame`` for tokens emitted there (the
    geometric start moved earlier by `SPIKE_LAG`; fractional frames give times inside it)."""
    return FRAME_OFFSET + frame * shift


@dataclass(frozen=True)
class TimeGrid:
    """The frames that token spans count in: frame ``k`` starts ``offset + k * shift`` seconds
    into the audio, and ``per_encoder_frame`` of them make one encoder frame. Encoder frames
    (CTC and transducer tokens): ``TimeGrid(FRAME_OFFSET, shift)``, the times of `frame_time`;
    the sub-frames of a `zipa.model.aligner.FrameAligner`: its own offset and step."""

    offset: float
    shift: float
    per_encoder_frame: int = 1

    def time(self, frame: float) -> float:
        return self.offset + frame * self.shift


@dataclass(frozen=True)
class TimedToken:
    """A token with global times in seconds; `alternatives`: with top-k, on the first token of
    each phone, the phone's most probable tokens as (token id, probability) pairs, best first
    (`zipa.decoding.topk`); None otherwise."""

    token: int
    start: float
    end: float
    confidence: float
    alternatives: tuple[tuple[int, float], ...] | None = None


@dataclass(frozen=True)
class Interval:
    """A labelled stretch of time (a phone or a word); `alternatives`: with top-k, a phone's
    most probable tokens as (label, probability) pairs, best first; None otherwise."""

    label: str
    start: float
    end: float
    confidence: float
    alternatives: tuple[tuple[str, float], ...] | None = None


@dataclass
class Alignment:
    """What one file decodes to: the transcript and its timed phones and words. Forced
    alignment also says how well the transcript fits the audio (`fit`, `zipa.decoding.fit`)
    and, in `warnings`, why it may not be the audio's."""

    text: str
    phones: list[Interval]
    words: list[Interval]
    fit: AlignmentFit | None = None
    warnings: list[str] = field(default_factory=list)


def is_modifier(piece: str) -> bool:
    """True for tokens that modify the preceding phone (length, aspiration, diacritics...)."""
    return bool(piece) and all(unicodedata.category(c) in _MODIFIER_CATEGORIES for c in piece)


def split_phones(text: str) -> list[str]:
    """The phones of IPA text, as `build_alignment` groups tokens: each base character with the
    modifiers after it, word by word (whitespace and ``▁`` separate words and are dropped); a
    modifier with no phone before it in its word stands alone. ``"tʰaː kʲ"`` -> ``tʰ aː kʲ``."""
    phones: list[str] = []
    for word in text.replace(WORD_BOUNDARY, " ").split():
        first = len(phones)
        for ch in word:
            if is_modifier(ch) and len(phones) > first:
                phones[-1] += ch
            else:
                phones.append(ch)
    return phones


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def build_alignment(
    tokens: Sequence[TimedToken],
    id_to_piece: Callable[[int], str],
    duration: float | None = None,
    normalize: Callable[[str], str] | None = None,
) -> Alignment:
    """Group timed tokens into phones and words.

    ``normalize`` (e.g. diacritic removal) is applied to every phone label; phones it empties
    are dropped, and words are rebuilt from what remains. Interval ends are clipped to the next
    interval's start (neighbouring long-audio windows may disagree by a frame) and to
    ``duration``. ``text`` is the words joined by single spaces.
    """
    words_of_phones: list[list[Interval]] = [[]]
    pending: list[TimedToken] = []  # tokens of the phone being built
    pending_label = ""

    def flush() -> None:
        nonlocal pending, pending_label
        if pending:
            label = normalize(pending_label) if normalize is not None else pending_label
            if label:
                ids = pending[0].alternatives
                alternatives = None if ids is None else tuple((id_to_piece(t), p) for t, p in ids)
                words_of_phones[-1].append(
                    Interval(
                        label, pending[0].start, pending[-1].end, _mean([t.confidence for t in pending]), alternatives
                    )
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


def _clip(intervals: list[Interval], duration: float | None) -> list[Interval]:
    out = []
    for i, iv in enumerate(intervals):
        end = iv.end
        if i + 1 < len(intervals):
            end = min(end, intervals[i + 1].start)
        if duration is not None:
            end = min(end, duration)
        start = max(0.0, iv.start if duration is None else min(iv.start, duration))
        out.append(Interval(iv.label, start, max(start, end), iv.confidence, iv.alternatives))
    return out
