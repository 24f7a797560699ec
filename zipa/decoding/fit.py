"""Does a transcript fit its audio? Forced alignment places any transcript somewhere, even one
of other speech; these measures of the result say when it cannot be the audio's.

- ``mean_confidence``: the phones' confidences averaged (the posterior of each phone over the
  frames it was given). The transcript's phones are not what the model hears when it is low.
- ``phones_per_second``: phones over the seconds aligned. Speech carries some 10-15 phones a
  second, fast speech up to about 20 (counted in IPA symbols with their diacritics); more than
  `MAX_PHONES_PER_SECOND` is more text than the audio can hold.
- ``squeezed_share``: the share of phones packed into the least time the frames allow (the next
  phone starts one frame later). Forced alignment squeezes phones that have no sound of their own.

The thresholds are generous on purpose: a warning means the transcript is very unlikely to be
this audio's, not that the alignment is poor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class _Timed(Protocol):
    # Read-only (properties), so that frozen dataclasses such as `Interval` conform.
    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def confidence(self) -> float: ...


MIN_MEAN_CONFIDENCE = 0.25
MAX_PHONES_PER_SECOND = 25.0
MAX_SQUEEZED_SHARE = 0.5


@dataclass(frozen=True)
class AlignmentFit:
    """How well a transcript fits the audio it was aligned to (see the module docstring)."""

    mean_confidence: float
    phones_per_second: float
    squeezed_share: float
    num_phones: int

    def problems(self) -> list[str]:
        """Why the transcript cannot be the audio's, one reason a line (none: it fits)."""
        out = []
        if self.num_phones and self.phones_per_second > MAX_PHONES_PER_SECOND:
            out.append(
                f"{self.num_phones} phones in {self.num_phones / self.phones_per_second:.2f} s is "
                f"{self.phones_per_second:.1f} phones a second, more than speech holds "
                f"(at most {MAX_PHONES_PER_SECOND:g})"
            )
        if self.num_phones and self.squeezed_share > MAX_SQUEEZED_SHARE:
            out.append(f"{self.squeezed_share:.0%} of the phones are squeezed into a single frame")
        if self.num_phones and self.mean_confidence < MIN_MEAN_CONFIDENCE:
            out.append(
                f"the phones' mean confidence is {self.mean_confidence:.2f} (below {MIN_MEAN_CONFIDENCE:g}): "
                "the model hears other sounds"
            )
        return out

    def to_json(self) -> dict:
        return {
            "mean_confidence": round(self.mean_confidence, 4),
            "phones_per_second": round(self.phones_per_second, 2),
            "squeezed_share": round(self.squeezed_share, 4),
        }


def alignment_fit(phones: Sequence[_Timed], seconds: float, frame: float) -> AlignmentFit:
    """The fit of ``phones`` (aligned intervals, in time order) to ``seconds`` of audio whose
    alignment frames are ``frame`` seconds long."""
    if not phones:
        return AlignmentFit(1.0, 0.0, 0.0, 0)
    starts = [p.start for p in phones]
    nexts = starts[1:] + [phones[-1].end]
    squeezed = sum(1 for start, nxt in zip(starts, nexts) if nxt - start <= frame * 1.5)
    return AlignmentFit(
        mean_confidence=sum(p.confidence for p in phones) / len(phones),
        phones_per_second=len(phones) / max(seconds, frame),
        squeezed_share=squeezed / len(phones),
        num_phones=len(phones),
    )
