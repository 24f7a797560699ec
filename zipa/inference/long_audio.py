"""Long audio: cutting files into overlapping windows, reading them piecemeal, stitching tokens.

Windows
-------
A file of at most ``window`` seconds is one segment. A longer file is cut into windows of
exactly ``window`` seconds starting every ``window - overlap`` seconds; the last window is moved
back to end at the end of the file (so it overlaps its neighbour by at least ``overlap``).
All windows of a file have the same length, so batching them adds no padding and a window
decodes the same in a batch as alone.

Stitching
---------
Neighbouring windows ``k`` and ``k + 1`` hand over at the middle of their overlap. Window ``k``
owns ``[boundary(k - 1), boundary(k))`` (the first window from -inf, the last to +inf), and
keeps exactly the tokens whose first frame's centre falls in what it owns: every instant of
the file is owned by one window, and each kept token is at least ``overlap / 2`` seconds from
its window's cut edges, where the window's missing context would change it. A phone that two
windows place on different sides of a boundary may be kept twice or not at all; larger
overlaps make that rarer.

Memory
------
Segments are read one batch at a time with soundfile's seek (``sf.read(start=, frames=)``), and
features are computed per segment, so peak memory depends on ``window`` and the batch size,
not on the length of the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zipa.audio.load import load_audio
from zipa.decoding.options import check_window


@dataclass(frozen=True)
class AudioInfo:
    frames: int  # samples per channel, at the file's own rate
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class Segment:
    """A stretch of a file to decode: samples [start, start + length) at the file's rate; the
    tokens it keeps are those whose time (s, global) is in [own_from, own_to)."""

    file_index: int
    index: int  # position among the file's segments
    start: int
    length: int
    sample_rate: int
    own_from: float
    own_to: float
    whole_file: bool

    @property
    def start_time(self) -> float:
        return self.start / self.sample_rate


def audio_info(path: Path) -> AudioInfo:
    """Length and rate from the file's header; ValueError naming the file if unreadable."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise ValueError(f"{path}: cannot read audio file: {e}") from e
    if info.frames <= 0:
        raise ValueError(f"{path}: empty audio (0 samples)")
    return AudioInfo(int(info.frames), int(info.samplerate))


def plan_windows(num_samples: int, sample_rate: int, window: float, overlap: float) -> list[tuple[int, int]]:
    """(start, length) of the windows of a file, in samples at ``sample_rate``."""
    check_window(window, overlap)
    size = int(round(window * sample_rate))
    if num_samples <= size:
        return [(0, num_samples)]
    hop = max(1, size - int(round(overlap * sample_rate)))
    starts = list(range(0, num_samples - size, hop))
    starts.append(num_samples - size)
    return [(s, size) for s in starts]


def plan_segments(file_index: int, info: AudioInfo, window: float, overlap: float) -> list[Segment]:
    """The segments of one file with the part of the timeline each owns."""
    windows = plan_windows(info.frames, info.sample_rate, window, overlap)
    rate = info.sample_rate
    # Hand over in the middle of each overlap: between the next window's start and this one's end.
    bounds = [((s2 + s1 + n1) / 2) / rate for (s1, n1), (s2, _) in zip(windows, windows[1:])]
    owns = [-math.inf] + bounds + [math.inf]
    return [
        Segment(file_index, k, s, n, rate, owns[k], owns[k + 1], whole_file=len(windows) == 1)
        for k, (s, n) in enumerate(windows)
    ]


def read_segment(path: Path, segment: Segment) -> np.ndarray:
    """The segment's samples as 16 kHz mono float32 (errors name the file and the time range)."""
    if segment.whole_file:
        return load_audio(Path(path), name=str(path))
    import soundfile as sf

    t0, t1 = segment.start_time, (segment.start + segment.length) / segment.sample_rate
    label = f"{path} [{t0:.2f}-{t1:.2f} s]"
    try:
        samples, rate = sf.read(str(path), start=segment.start, frames=segment.length, dtype="float32", always_2d=True)
    except Exception as e:
        raise ValueError(f"{label}: cannot read audio: {e}") from e
    if samples.shape[1] == 1:
        samples = samples.reshape(-1)
    else:
        samples = samples.mean(axis=1, dtype=np.float32)
    return load_audio(samples, source_rate=int(rate), name=label)


def owns(segment: Segment, time: float) -> bool:
    return segment.own_from <= time < segment.own_to
