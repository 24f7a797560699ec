"""Signals while a batch job runs: a first SIGINT/SIGTERM stops after the current batch, a
second at once, though never in the middle of writing one file's output."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any


class Interrupted(BaseException):
    """A second SIGINT/SIGTERM: stop decoding at once (BaseException, as KeyboardInterrupt, so
    that no `except Exception` on the way takes it for a bad file)."""


class StopRequest:
    """SIGINT and SIGTERM while decoding: the first asks to stop after the current batch
    (`stop()` turns True), a second stops at once, though never in the middle of writing one
    file's output (`deferred()`). Handlers are installed for the ``with`` block only."""

    def __init__(self):
        self.signum: int | None = None
        self._deferring = False
        self._pending = False
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        elif self._deferring:
            self._pending = True
        else:
            raise Interrupted()

    @contextlib.contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending:
            self._pending = False
            raise Interrupted()
