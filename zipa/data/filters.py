"""Which cuts may be trained on: duration limits and the CTC-fit filter.

Frame arithmetic (10 ms fbank frames, as lhotse computes them for a cut of ``duration``):

- encoder input frames  ``T = compute_num_frames(duration, 0.01, 16000)`` (= round(duration/0.01))
- after ``Conv2dSubsampling`` (:mod:`zipa.model.subsampling`): ``T1 = (T - 7) // 2``
- after the Zipformer's output downsampling by ``f`` (1 in the CR-CTC recipe, 2 in the
  transducer recipe; :class:`zipa.model.zipformer.Zipformer2` rounds up):
  ``T' = (T1 + f - 1) // f``

A CTC alignment of ``S`` tokens needs ``T' >= S + R`` frames, ``R`` being the number of adjacent
repeated tokens (each needs a blank between the two copies); pruned RNN-T needs ``T' >= S``.
A cut that cannot fit gives an infinite CTC loss (zeroed by ``zero_infinity``, i.e. wasted
compute, or NaN without it), so it is dropped before batching. Drops are counted and logged a
few times (at the 1st, 10th, 100th, ... drop), never once per cut.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from zipa.data.labels import LabelEncoder, cut_text

logger = logging.getLogger(__name__)

FRAME_SHIFT = 0.01
SAMPLING_RATE = 16000


def num_feature_frames(duration: float, sampling_rate: int = SAMPLING_RATE) -> int:
    """Fbank frames lhotse gives a cut of ``duration`` seconds (``supervisions['num_frames']``)."""
    from lhotse.utils import compute_num_frames

    return compute_num_frames(duration, frame_shift=FRAME_SHIFT, sampling_rate=sampling_rate)


def encoder_output_frames(num_frames: int, output_downsampling_factor: int = 1) -> int:
    """Encoder output frames ``T'`` for ``num_frames`` fbank frames (0 when too short)."""
    t = (num_frames - 7) // 2
    if t <= 0:
        return 0
    f = output_downsampling_factor
    return (t + f - 1) // f


def count_repeats(token_ids: Sequence[int]) -> int:
    """Adjacent equal tokens, each of which needs a blank frame in a CTC alignment."""
    return sum(1 for a, b in zip(token_ids, token_ids[1:]) if a == b)


def min_output_frames(token_ids: Sequence[int], ctc: bool = True) -> int:
    """Fewest encoder frames that can carry ``token_ids`` (CTC, or pruned RNN-T)."""
    return len(token_ids) + (count_repeats(token_ids) if ctc else 0)


class CutFilter:
    """Keep-predicate for ``CutSet.filter``: duration limits, non-empty label, CTC fit.

    ``output_downsampling_factor`` and ``ctc`` describe the model (see the module docstring).
    ``check_labels=False`` (for decoding) only drops cuts too short to give an encoder frame.
    Counts of kept and dropped cuts (by reason) are in :attr:`kept` and :attr:`dropped`.
    """

    def __init__(
        self,
        labels: LabelEncoder | None = None,
        min_duration: float = 0.0,
        max_duration: float | None = None,
        output_downsampling_factor: int = 1,
        ctc: bool = True,
        drop_empty: bool = True,
        check_labels: bool = True,
        name: str = "train",
    ):
        self.labels = labels if labels is not None else LabelEncoder()
        self.min_duration = min_duration or 0.0
        self.max_duration = max_duration
        self.output_downsampling_factor = output_downsampling_factor
        self.ctc = ctc
        self.drop_empty = drop_empty
        self.check_labels = check_labels
        self.name = name
        self.kept = 0
        self.dropped: Counter = Counter()

    def reason(self, cut) -> str | None:
        """Why ``cut`` must be dropped (a short reason and detail), or None to keep it."""
        if cut.duration < self.min_duration:
            return f"shorter than {self.min_duration} s|{cut.duration:.2f} s"
        if self.max_duration is not None and cut.duration > self.max_duration:
            return f"longer than {self.max_duration} s|{cut.duration:.2f} s"
        frames = num_feature_frames(cut.duration, cut.sampling_rate or SAMPLING_RATE)
        have = encoder_output_frames(frames, self.output_downsampling_factor)
        if not self.check_labels:
            # Decoding only: the encoder needs one output frame.
            return None if have >= 1 else f"too short for the encoder|{frames} frames"
        _, ids = self.labels.encode(cut_text(cut))
        if not ids:
            return "empty label|" if self.drop_empty else None
        need = min_output_frames(ids, ctc=self.ctc)
        if have < need:
            return (
                f"too many tokens for the {'CTC' if self.ctc else 'RNN-T'} output length|"
                f"{len(ids)} tokens need {need} frames, {cut.duration:.2f} s gives {have}"
            )
        return None

    def __call__(self, cut) -> bool:
        why = self.reason(cut)
        if why is None:
            self.kept += 1
            return True
        reason, detail = why.split("|", 1)
        self.dropped[reason] += 1
        total = sum(self.dropped.values())
        if _is_log_point(total):
            logger.warning(
                "%s: dropped %d cut(s) so far (kept %d): %s; latest: %s (%s)",
                self.name,
                total,
                self.kept,
                self.summary(),
                cut.id,
                detail or reason,
            )
        return False

    def summary(self) -> str:
        if not self.dropped:
            return "none dropped"
        return ", ".join(f"{n} {reason}" for reason, n in self.dropped.most_common())


def _is_log_point(n: int) -> bool:
    """1, 10, 100, 1000, ...: a handful of log lines however many cuts are dropped."""
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1
