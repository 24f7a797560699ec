"""How far phone start times are from the truth, on speech whose phone times are known.

espeak-ng reports when it starts each phoneme of the audio it synthesises
(:func:`zipa.text.espeak.synthesize_with_phones`), so its speech comes with exact phone start
times. This module turns such speech into a *timed reference* and compares a model's phone
start times with it, for the two ways the package times phones:

* **free transcription** (`Transcriber.timestamps`, greedy CTC): the hypothesis phones are
  matched to the reference phones by a Levenshtein alignment of their labels; only matched
  pairs with *equal* labels count (a substituted or inserted phone has no reference time);
* **forced alignment** (`Transcriber.align`, `zipa.inference.forced`): the reference transcript
  itself is aligned to the audio, so phones correspond 1:1 and every reference phone with a
  known start counts.

The timed reference
-------------------
Its transcript is the training label of the demo corpus (`zipa.data.demo_corpus`):
``normalize_ipa(clean_espeak(phonemize(text, voice), voice))``, split into phones as
`zipa.decoding.timestamps.split_phones` does (base character plus modifiers). Its times come
from espeak's phoneme events, whose names are normalised the same way. Events and transcript
are two renderings of the same phoneme string and mostly agree phone for phone, but not always:
events carry no context length marks (Finnish ``a`` where the label has ``aː``), one event may
hold several phones (diphthongs ``aɪ``, affricates ``tʃ``, Mandarin finals ``oŋ``), a
palatalisation may be an event of its own (Russian ``n`` + ``ʲ``), and names longer than 8 bytes
are cut. So the two are matched on *base characters* by a Levenshtein alignment, and a label
phone gets a start time only where it meets the *first* phone of an event with the same base
character; the others (second halves of diphthongs and affricates, unmatched phones) keep
``start=None`` and are left out of the statistics but stay in the transcript that forced
alignment uses.

The statistics (:class:`TimingStats`) are over signed errors ``hypothesis start - reference
start`` in seconds: median and mean of their absolute values, the bias (mean signed error:
positive = times late), and the share within 20 and 40 ms, overall and per phone class
(:func:`phone_class`: stops, fricatives, nasals, vowels, approximants). ``benchmarks/timestamps.py``
measures a model this way on sentences and voices of its own.

Where a phone begins (the boundary convention)
----------------------------------------------
A stop (or affricate) begins where its closure begins, as in TIMIT's labelling and Praat/MFA
practice: the silent or near-silent stretch before the burst belongs to the stop, not to the
phone before it. Festival's segments already follow it (a ``k`` segment starts at the closure).
espeak-ng's phoneme event for a voiceless stop fires at the burst, after a run of digital
silence that espeak counts in the previous phone; :func:`espeak_reference` therefore moves such a
stop's start back to where that silence begins (:func:`closure_starts`; voiced stops, whose
events espeak fires at the closure, and stops after a pause keep their event time).

Festival speech
---------------
:func:`festival_reference` builds the same timed reference from Festival
(`zipa.text.festival`): transcript and times both come from the voice's ``Segment`` relation
(IPA through the voice's phone-set table, words from its word structure); geminates, which
Festival writes as two identical segments, become one long phone (``t t`` -> ``tː``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from zipa.decoding.timestamps import Interval, is_modifier, split_phones
from zipa.text import espeak, festival
from zipa.text.g2p import clean_espeak
from zipa.text.ipa import PHONE_CLASSES, normalize_ipa, phone_class

__all__ = [
    "ReferencePhone",
    "TimedUtterance",
    "TimingStats",
    "espeak_reference",
    "festival_reference",
    "closure_starts",
    "phone_class",
    "PHONE_CLASSES",
    "class_stats",
    "reference_phones",
    "matched_indices",
    "free_errors",
    "forced_errors",
    "free_pairs",
    "forced_pairs",
    "timing_stats",
]


@dataclass(frozen=True)
class ReferencePhone:
    """A phone of the reference transcript and when it starts (seconds; None where unknown)."""

    label: str
    start: float | None


@dataclass
class TimedUtterance:
    """Synthesised speech with its transcript (normalised IPA, words separated by spaces), the
    transcript's phones with their known start times, and espeak's phoneme events (pauses
    included: empty names)."""

    text: str
    voice: str
    samples: np.ndarray
    sample_rate: int
    transcript: str
    phones: list[ReferencePhone]
    events: list[espeak.PhonemeEvent] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def matched_indices(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[int, int]]:
    """``(i, j)`` of the pairs with ``ref[i] == hyp[j]`` in a Levenshtein alignment of ``ref``
    and ``hyp`` (unit costs), in order. Where several alignments are optimal, the trace back from
    the end takes a match or substitution first, then a deletion, then an insertion."""
    M, N = len(ref), len(hyp)
    cost = np.zeros((M + 1, N + 1), dtype=np.int64)
    cost[:, 0] = np.arange(M + 1)
    cost[0, :] = np.arange(N + 1)
    for m in range(1, M + 1):
        for n in range(1, N + 1):
            cost[m, n] = min(cost[m - 1, n - 1] + (ref[m - 1] != hyp[n - 1]), cost[m - 1, n] + 1, cost[m, n - 1] + 1)
    pairs = []
    m, n = M, N
    while m and n:
        same = ref[m - 1] == hyp[n - 1]
        if cost[m, n] == cost[m - 1, n - 1] + (not same):
            if same:
                pairs.append((m - 1, n - 1))
            m, n = m - 1, n - 1
        elif cost[m, n] == cost[m - 1, n] + 1:
            m -= 1
        else:
            n -= 1
    return pairs[::-1]


def _event_phones(events: Sequence[espeak.PhonemeEvent], voice: str) -> list[tuple[str, float | None]]:
    """Base characters of the phones in espeak's phoneme events, the first of each event with
    the event's start time. Events that normalise to nothing (pauses, tones) or to a lone
    modifier (a separate palatalisation, a length mark) add no phone."""
    out: list[tuple[str, float | None]] = []
    for event in events:
        phones = split_phones(normalize_ipa(clean_espeak(event.phoneme, voice)))
        phones = [p for p in phones if not is_modifier(p)]
        out.extend((p[0], event.start if k == 0 else None) for k, p in enumerate(phones))
    return out


def reference_phones(transcript: str, events: Sequence[espeak.PhonemeEvent], voice: str) -> list[ReferencePhone]:
    """The phones of ``transcript`` (normalised IPA) with the start times of the phoneme events
    that espeak-ng spoke them with (see the module docstring for the matching)."""
    phones = split_phones(transcript)
    timed = _event_phones(events, voice)
    starts: list[float | None] = [None] * len(phones)
    for i, j in matched_indices([p[0] for p in phones], [base for base, _ in timed]):
        starts[i] = timed[j][1]
    return [ReferencePhone(p, s) for p, s in zip(phones, starts)]


MIN_CLOSURE = 0.01  # s: a shorter silence before a stop's burst is not taken for its closure
MAX_CLOSURE = 0.1  # s: a longer one is a pause that espeak did not mark (the stop then keeps its time)
SILENT = 1e-3  # peak |sample| of 2.5 ms that counts as silent (espeak's closures are digital zeros)


def closure_starts(
    samples: np.ndarray, sample_rate: int, events: Sequence[espeak.PhonemeEvent], voice: str
) -> list[espeak.PhonemeEvent]:
    """espeak's phoneme events with each stop that follows a phone moved back to the start of the
    silence before its burst (its closure; see the module docstring), the previous event ending
    there; a silence over ``MAX_CLOSURE`` is taken for an unmarked pause, as after a marked one.
    The silence is found in 2.5 ms steps back from the event, no further than 10 ms after the
    previous event's start."""
    hop = max(1, int(0.0025 * sample_rate))
    out = list(events)
    for k in range(1, len(out)):
        event, previous = out[k], out[k - 1]
        phones = split_phones(normalize_ipa(clean_espeak(event.phoneme, voice)))
        if not previous.phoneme or not phones or phone_class(phones[0]) != "stops":
            continue
        earliest = previous.sample + hop * 4
        start = event.sample
        while start - hop >= earliest and np.abs(samples[start - hop : start]).max(initial=0.0) < SILENT:
            start -= hop
        if MIN_CLOSURE <= (event.sample - start) / sample_rate <= MAX_CLOSURE:
            out[k] = event._replace(sample=start, start=start / sample_rate)
            out[k - 1] = previous._replace(end=start / sample_rate)
    return out


def espeak_reference(
    text: str,
    voice: str,
    rate: int | None = None,
    pitch: int | None = None,
    pitch_range: int | None = None,
    seed: int | None = None,
) -> TimedUtterance:
    """Speak ``text`` with ``voice`` (arguments as `zipa.text.espeak.synthesize`) and return it
    with its transcript and reference phone times. The transcript is the demo corpus's label
    of ``text`` for the voice's language (the variant after ``+`` does not change it)."""
    speech = espeak.synthesize_with_phones(text, voice, rate, pitch, pitch_range, seed)
    language = voice.split("+")[0]
    transcript = normalize_ipa(clean_espeak(espeak.phonemize(text, language), language))
    events = closure_starts(speech.samples, speech.sample_rate, speech.phonemes, language)
    phones = reference_phones(transcript, events, language)
    return TimedUtterance(text, voice, speech.samples, speech.sample_rate, transcript, phones, events)


def festival_reference(speech) -> TimedUtterance:
    """The timed reference of a `zipa.text.festival.FestivalSpeech` (see the module docstring).
    Its ``events`` are the segments as `espeak.PhonemeEvent`s (pauses with an empty name)."""
    segments = festival.joined_segments(speech)
    rate = speech.sample_rate
    events = [
        espeak.PhonemeEvent(ipa, start, end, int(round(start * rate)), -1 if word is None else word)
        for ipa, start, end, word in segments
    ]
    phones = [
        ReferencePhone(p, start if k == 0 else None)
        for ipa, start, _, _ in segments
        if ipa
        for k, p in enumerate(split_phones(ipa))
    ]
    return TimedUtterance(speech.text, speech.voice, speech.samples, rate, festival.transcript(speech), phones, events)


# ---------------------------------------------------------------------------------------------
# Errors


def free_pairs(reference: Sequence[ReferencePhone], hypothesis: Sequence[Interval]) -> list[tuple[str, float]]:
    """``(label, signed start error in s)`` of the hypothesis phones that match reference phones
    with a known start (Levenshtein alignment of the labels; equal labels only)."""
    pairs = matched_indices([p.label for p in reference], [h.label for h in hypothesis])
    return [
        (reference[i].label, hypothesis[j].start - start) for i, j in pairs if (start := reference[i].start) is not None
    ]


def forced_pairs(reference: Sequence[ReferencePhone], aligned: Sequence[Interval]) -> list[tuple[str, float]]:
    """``(label, signed start error in s)`` of a forced alignment of the reference transcript
    (phone k of ``aligned`` is reference phone k)."""
    if [p.label for p in reference] != [a.label for a in aligned]:
        raise ValueError("the forced alignment's phones are not the reference phones")
    return [(r.label, a.start - r.start) for r, a in zip(reference, aligned) if r.start is not None]


def free_errors(reference: Sequence[ReferencePhone], hypothesis: Sequence[Interval]) -> list[float]:
    """The errors of :func:`free_pairs`."""
    return [e for _, e in free_pairs(reference, hypothesis)]


def forced_errors(reference: Sequence[ReferencePhone], aligned: Sequence[Interval]) -> list[float]:
    """The errors of :func:`forced_pairs`."""
    return [e for _, e in forced_pairs(reference, aligned)]


@dataclass(frozen=True)
class TimingStats:
    """Start errors summarised: ``n`` phones; ``median`` and ``mean`` of |error| and ``bias``
    (mean signed error, positive = late) in seconds; ``within_20`` / ``within_40``: the share of
    phones with |error| <= 20 / 40 ms."""

    n: int
    median: float
    mean: float
    bias: float
    within_20: float
    within_40: float

    def row(self) -> dict[str, float]:
        """Milliseconds and percentages, rounded, for printing."""
        return {
            "phones": self.n,
            "median_ms": round(self.median * 1000, 1),
            "mean_ms": round(self.mean * 1000, 1),
            "bias_ms": round(self.bias * 1000, 1),
            "within_20ms_%": round(self.within_20 * 100, 1),
            "within_40ms_%": round(self.within_40 * 100, 1),
        }


def class_stats(labels: Sequence[str], errors: Sequence[float]) -> dict[str, TimingStats]:
    """:func:`timing_stats` per :func:`phone_class` of ``labels`` (one per error); classes with no
    phone are left out."""
    by_class: dict[str, list[float]] = {}
    for label, error in zip(labels, errors):
        by_class.setdefault(phone_class(label), []).append(error)
    return {name: timing_stats(e) for name, e in sorted(by_class.items())}


def timing_stats(errors: Sequence[float]) -> TimingStats:
    """:class:`TimingStats` of signed start errors in seconds (tolerances include a hair for
    rounding: |error| <= 20 ms + 1 µs counts as within 20 ms)."""
    if not errors:
        raise ValueError("no start errors to summarise")
    abs_errors = [abs(e) for e in errors]
    return TimingStats(
        n=len(errors),
        median=statistics.median(abs_errors),
        mean=statistics.fmean(abs_errors),
        bias=statistics.fmean(errors),
        within_20=sum(e <= 0.020 + 1e-6 for e in abs_errors) / len(errors),
        within_40=sum(e <= 0.040 + 1e-6 for e in abs_errors) / len(errors),
    )
