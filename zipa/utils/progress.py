"""Progress of a long transcription job: a tqdm bar on a terminal, log lines in batch jobs.

Modes:

- ``bar``: a tqdm bar on stderr counting files, with the hours of audio decoded so far.
- ``log``: one line on stderr at the start, every ``interval`` seconds while files complete,
  and at the end: files done / total, audio decoded, time elapsed and an ETA (from the rate of
  files so far). What SLURM and other batch logs want, where a bar is unreadable.
- ``none``: nothing (messages given to `Progress.write` are still printed).
- ``auto``: ``bar`` when stderr is a terminal, else ``log``.

Counts are in files: the job does not read every file's header up front (that alone can take
minutes over a network file system), so the total audio length is not known in advance.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

PROGRESS_MODES = ("auto", "bar", "log", "none")
DEFAULT_INTERVAL = 30.0


class Progress:
    """Files done out of ``total`` files, shown as ``mode`` says (see the module docstring);
    ``unit`` names what is counted when it is not files (``"shard"``).

    `advance(seconds)` counts decoded audio, `file_done()` a finished file (whatever its
    outcome); `write(message)` prints a line without breaking the bar. Use it as a context
    manager, or call `close()`.
    """

    def __init__(
        self,
        total: int,
        mode: str = "auto",
        interval: float = DEFAULT_INTERVAL,
        desc: str = "transcribing",
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "file",
    ):
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress mode must be one of {', '.join(PROGRESS_MODES)}, got {mode!r}")
        if not interval > 0:
            raise ValueError(f"progress interval must be positive, got {interval}")
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "bar" if _isatty(self.stream) else "log"
        self.mode = mode
        self.total = int(total)
        self.interval = float(interval)
        self.desc = desc
        self.unit = unit
        self.files = 0
        self.seconds = 0.0
        self._clock = clock
        self._start = clock()
        self._last_log = self._start
        self._closed = False
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit=unit, desc=desc, file=self.stream, leave=False, dynamic_ncols=True)
        elif mode == "log":
            self._log(f"{self.total} {unit}s to do")

    @classmethod
    def make(cls, progress: None | bool | str | Progress, total: int, **kwargs) -> Progress:
        """The `progress` argument of `Transcriber.transcribe_files`: a `Progress` as is, a mode
        name, True (a bar), False (nothing) or None (a bar when stderr is a terminal, else nothing)."""
        if isinstance(progress, Progress):
            return progress
        if progress is None:
            stream = kwargs.get("stream") or sys.stderr
            progress = "bar" if _isatty(stream) else "none"
        elif isinstance(progress, bool):
            progress = "bar" if progress else "none"
        return cls(total, progress, **kwargs)

    # ------------------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """``seconds`` more of audio decoded."""
        self.seconds += max(0.0, seconds)
        if self._bar is not None:
            self._bar.set_postfix_str(f"{_audio(self.seconds)} of audio", refresh=False)

    def file_done(self, count: int = 1) -> None:
        self.files += count
        if self._bar is not None:
            self._bar.update(count)
        elif self.mode == "log" and self._clock() - self._last_log >= self.interval:
            self._log(self.summary())

    def write(self, message: str) -> None:
        """A line on the progress stream (above the bar when there is one)."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def summary(self) -> str:
        """``"12/300 files (4%), 1.2 min of audio, elapsed 0:00:42, ETA 0:16:48"``."""
        elapsed = self._clock() - self._start
        share = f" ({100 * self.files / self.total:.0f}%)" if self.total else ""
        eta = "?"
        if self.files:
            eta = _hms(elapsed / self.files * max(0, self.total - self.files))
        return (
            f"{self.files}/{self.total} {self.unit}s{share}, {_audio(self.seconds)} of audio, "
            f"elapsed {_hms(elapsed)}, ETA {eta}"
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log":
            self._log(self.summary())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _log(self, text: str) -> None:
        self._last_log = self._clock()
        print(f"{self.desc}: {text}", file=self.stream, flush=True)


def _audio(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
