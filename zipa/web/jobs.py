"""The page's work: one job per uploaded file, decoded one at a time by a single worker thread.

An upload is stored in a temporary folder of its own (under ``tmp_dir``, default the system's),
checked (`zipa.inference.long_audio.audio_info`: readable, not empty) and queued. The worker
takes jobs in order and runs each through the path the command line runs:
`Transcriber.iter_transcribe_files` (what `zipa align FILE` runs) or, with a transcript,
`Transcriber.align_files` (`zipa align FILE --transcript/--text`), then `Transcriber.alignment`;
the outputs are the writers' (`zipa.inference.writers`), so the page's downloads are the bytes
`zipa align FILE -f FORMAT` writes for a file of that name. The model is used by that one
thread only: requests never decode in parallel, they wait in the queue. The job's folder is
removed as soon as the job is done or fails; what stays in memory is the result (phones,
words, spectrogram tiles), for the last `KEEP_JOBS` jobs.

The queue is bounded twice, so that no number of uploads can fill the memory or the disk: an
upload is admitted (`JobQueue.admit`) before its body is read, when fewer than ``max_queue``
files are waiting (those being uploaded and those queued; not the one being decoded) and when
its size (the request's, or the upload limit when it gives none) fits in what ``max_bytes``
leaves to the files held. The place is freed when the worker takes the job, the bytes when its
folder is removed.
"""

from __future__ import annotations

import itertools
import json
import queue
import re
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from zipa.audio.load import load_audio
from zipa.decoding.options import DecodingOptions
from zipa.inference.forced import AlignJob, FileAlignment
from zipa.inference.long_audio import audio_info, plan_windows
from zipa.inference.writers import FORMATS, Record, format_jsonl
from zipa.utils.atomic import open_atomic
from zipa.utils.progress import Progress
from zipa.web.spectrogram import Tile, spectrogram_tiles

if TYPE_CHECKING:
    from zipa.inference.transcriber import FileTranscript, Transcriber

KEEP_JOBS = 50
DEFAULT_MAX_QUEUE = 64
MB = 1024 * 1024
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "error"


def downloads() -> list[str]:
    """The formats the page's download links give: every registered output format with times
    (`zipa.inference.writers.FORMATS`), each the output of `zipa align FILE --format FORMAT`."""
    return [name for name in FORMATS if name != "txt"]


class UploadError(ValueError):
    """An upload that cannot be a job (empty, unreadable): its message names the file."""


class Refused(Exception):
    """An upload turned away before it is read because the server is full for now: ``status``
    is the HTTP answer (503: too many files waiting, 507: too many bytes held)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Ticket:
    """An upload's admission: a place in the queue and ``size`` bytes of the disk cap, held
    until a job takes them over (`JobQueue.submit`) or the upload fails."""

    size: int
    taken: bool = False


@dataclass
class Job:
    """One uploaded file: its state, progress and, when done, its `Record` and spectrogram."""

    id: str
    name: str  # the file's name as uploaded: what messages and outputs call it
    folder: Path  # the temporary folder holding the upload (removed when the job ends)
    path: Path
    duration: float
    windows: int  # how many windows the file is decoded in (zipa.inference.long_audio)
    transcript: str | None = None  # forced alignment of this text instead of recognition
    lang: str | None = None  # the transcript is orthography in this language (G2P)
    state: str = QUEUED
    seconds_done: float = 0.0
    error: str | None = None
    messages: list[str] = field(default_factory=list)
    held: int = 0  # bytes of the disk cap the job holds until its folder is removed
    record: Record | None = None
    tiles: list[Tile] = field(default_factory=list)

    def public(self, message: str) -> str:
        return _public(message, self.path, self.name)

    def to_json(self, position: int = 0) -> dict:
        """What the page polls: state, progress and, once done, the result as `zipa align -f
        jsonl` writes it (``path`` being the file's name) plus the spectrogram tiles."""
        out = {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "position": position,
            "mode": "transcribe" if self.transcript is None else "align",
            "duration": self.duration,
            "windows": self.windows,
            "seconds_done": self.seconds_done,
            "error": self.error,
            "messages": self.messages,
        }
        if self.record is not None:
            out["result"] = json.loads(format_jsonl([self.record], timestamps=True))
            out["spectrogram"] = [tile.to_json() for tile in self.tiles]
            out["downloads"] = downloads()
        return out

    def download(self, fmt: str) -> tuple:
        """(file name, media type, text) of the result in ``fmt`` (one of `downloads`)."""
        output = FORMATS[fmt]
        if self.record is None:
            raise ValueError(f"job {self.name}: no result to download ({self.state})")
        return Path(self.name).stem + output.suffix, output.media_type, output.text(self.record, timestamps=True)


class _JobProgress(Progress):
    """Progress that the page polls: the seconds of audio decoded so far, on the job."""

    def __init__(self, job: Job):
        super().__init__(1, "none")
        self.job = job

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        self.job.seconds_done = min(self.seconds, self.job.duration)


def _public(message: str, path: Path, name: str) -> str:
    """``message`` with the upload's temporary path replaced by the file's name."""
    return message.replace(str(path), name)


def _suffix(name: str) -> str:
    """The upload's suffix, kept (lower case, letters and digits only) for formats that need it."""
    suffix = Path(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,10}", suffix) else ""


class JobQueue:
    """The jobs of one server and the one worker thread that decodes them (started with the
    first job; `close` stops it). ``window``, ``overlap``, ``batch_size``, ``decoding``, ``beam``:
    as for `zipa align` (`Transcriber.iter_transcribe_files`, `Transcriber.align_files`).
    ``max_queue``: files waiting at most; ``max_bytes``: bytes of uploads held at most (None:
    no cap); see `admit`."""

    def __init__(
        self,
        transcriber: Transcriber,
        tmp_dir: None | str | Path = None,
        options: DecodingOptions | None = None,
        keep: int = KEEP_JOBS,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_bytes: int | None = None,
    ):
        self.transcriber = transcriber
        self.tmp_dir = Path(tmp_dir) if tmp_dir is not None else None
        self.options = options if options is not None else DecodingOptions()
        self.keep = keep
        self.max_queue, self.max_bytes = max_queue, max_bytes
        self.waiting = 0  # admitted uploads not yet taken by the worker
        self.held = 0  # bytes admitted and not yet removed
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._running: Job | None = None  # the job the worker is on
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------------------------------
    # Requests

    @contextmanager
    def admit(self, size: int) -> Iterator[Ticket]:
        """A `Ticket` for an upload of at most ``size`` bytes, given back on leaving the block
        unless `submit` made a job of it. Refused (503 or 507) when ``max_queue`` files are
        waiting or when ``size`` does not fit in what ``max_bytes`` leaves."""
        with self._lock:
            if self.waiting >= self.max_queue:
                raise Refused(
                    503,
                    f"the server is busy: {self.waiting} files are waiting to be decoded, its limit "
                    "(zipa serve --max-queue); try again when some are done",
                )
            if self.max_bytes is not None and self.held + size > self.max_bytes:
                raise Refused(
                    507,
                    f"the server is full: the uploads it holds take {self.held / MB:.1f} MB, and "
                    f"{size / MB:.1f} MB more would pass its limit of {self.max_bytes / MB:g} MB "
                    "(zipa serve --max-disk-mb); try again when some are done",
                )
            self.waiting += 1
            self.held += size
        ticket = Ticket(size)
        try:
            yield ticket
        finally:
            if not ticket.taken:
                self._release(places=1, size=size)

    def submit(
        self, ticket: Ticket, name: str, data: IO[bytes], transcript: str | None = None, lang: str | None = None
    ) -> Job:
        """Store an upload admitted with ``ticket`` (``name``: its file name, ``data``: its bytes)
        and queue it; UploadError naming the file when it is empty or not audio soundfile can
        read (nothing is kept then)."""
        name = Path(name.replace("\\", "/")).name or "audio"
        folder = Path(tempfile.mkdtemp(prefix="zipa-web-", dir=self.tmp_dir))
        path = folder / f"upload{_suffix(name)}"
        try:
            with open_atomic(path, "wb") as f:  # the project's one way to write a file
                shutil.copyfileobj(data, f)
            if path.stat().st_size == 0:
                raise UploadError(f"{name}: the file is empty (0 bytes)")
            try:
                info = audio_info(path)
            except ValueError as e:
                raise UploadError(_public(str(e), path, name)) from None
            windows = len(plan_windows(info.frames, info.sample_rate, self.options.window, self.options.overlap))
            job = Job(
                f"{next(self._ids)}-{secrets.token_hex(4)}",
                name,
                folder,
                path,
                info.duration,
                windows,
                (transcript or "").strip() or None,
                (lang or "").strip() or None,
                held=ticket.size,
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            ticket.taken = True
            self._jobs[job.id] = job
            self._forget_old()
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="zipa-web-worker", daemon=True)
                self._worker.start()
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """How many jobs are queued or running before ``job`` (0 once it runs)."""
        if job.state != QUEUED:
            return 0
        with self._lock:
            ahead = itertools.takewhile(lambda other: other is not job, self._jobs.values())
            return sum(other.state in (QUEUED, RUNNING) for other in ahead)

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker: queued jobs are dropped, the running one is waited for (at most
        ``timeout`` seconds; after that its folder is removed under it and the worker, a daemon
        thread, ends with the process). No upload is left behind either way."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.state, job.error = FAILED, f"{job.name}: the server stopped before decoding it"
                self._release(places=1)
                self._remove(job)
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout)
            running = self._running
            if self._worker.is_alive() and running is not None:
                self._remove(running)
            self._worker = None

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.state in (DONE, FAILED)]
        for job_id in finished[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[job_id]

    def _release(self, places: int = 0, size: int = 0) -> None:
        with self._lock:
            self.waiting -= places
            self.held -= size

    def _remove(self, job: Job) -> None:
        """Remove the job's folder and give back the bytes it held (once)."""
        shutil.rmtree(job.folder, ignore_errors=True)
        with self._lock:
            self.held -= job.held
            job.held = 0

    # ------------------------------------------------------------------------------------------
    # The worker

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._release(places=1)
            self._running = job
            self.run(job)
            self._running = None

    def run(self, job: Job) -> None:
        """Decode one job (in the worker thread): its state ends DONE or FAILED, and its folder
        is removed whatever happens, before the state says so."""
        job.state, state = RUNNING, FAILED
        try:
            job.record = self._decode(job)
            job.tiles = spectrogram_tiles(load_audio(job.path, name=job.name))
            state = DONE
        except Exception as e:  # a bad file must not stop the server: the job reports it
            job.error = job.public(str(e)) or type(e).__name__
        finally:
            self._remove(job)
            job.state = state

    def _decode(self, job: Job) -> Record:
        transcriber, progress = self.transcriber, _JobProgress(job)
        results: Iterator[FileTranscript | FileAlignment]
        if job.transcript is None:
            results = transcriber.iter_transcribe_files([job.path], self.options, progress=progress)
        else:
            results = transcriber.align_files(
                [AlignJob.whole(job.path, job.transcript)], self.options, lang=job.lang, progress=progress
            )
        (result,) = results
        job.messages = [job.public(m) for m in [*getattr(result, "messages", ()), *getattr(result, "warnings", ())]]
        if not result.ok:
            raise ValueError(result.error)
        return Record(job.name, result.duration, transcriber.alignment(result.tokens, result.duration))
