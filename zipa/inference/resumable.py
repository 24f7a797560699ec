"""Line outputs (txt, tsv, jsonl, CTM) that grow one audio file at a time, and resume.

A long job writes each file's lines as soon as the file is decoded: one ``write`` of all its
lines, then flush and fsync, so what is on disk is a sequence of whole files' lines and an
interrupted job keeps everything it finished. TextGrids, one file per audio file, need none of
this: each is written atomically (`zipa.utils.atomic`).

Resuming (`LineOutput.load`) reads the existing output back: the paths it names are done, and
what a kill may have left unfinished is cut off before appending, namely a last line without
its newline and, in the formats with one line per phone (CTM, tsv with timestamps), the whole
last file's lines, which may be a part of them (that file is decoded again).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from zipa.inference.writers import FORMATS, Record


def line_formats() -> list[str]:
    """The registered formats whose files' lines go into one output (all but TextGrid's kind)."""
    return [name for name, fmt in FORMATS.items() if not fmt.one_file_each]


class LineOutput:
    """Where a job's txt/tsv/jsonl/ctm lines go: a file (``path``) or stdout (``path`` None).

    `load()` (resume) reads what an earlier run wrote, `open()` starts writing (a file is
    truncated, unless loaded: then it is appended to), `write(record)` adds one audio file's
    lines durably, `close()` ends.
    """

    def __init__(
        self, path: Path | None, fmt: str, timestamps: bool = False, words: bool = True, alternatives: bool = False
    ):
        if fmt not in line_formats():
            raise ValueError(f"not a line format: {fmt!r} (one of {', '.join(line_formats())})")
        self.path = None if path is None or str(path) == "-" else Path(path)
        self.fmt = fmt
        self.format = FORMATS[fmt]
        self.timestamps = timestamps
        self.words = words
        self.alternatives = alternatives  # top-k alternatives per phone (tsv and jsonl with timestamps)
        self.done: set[str] = set()
        self.header = self.format.render([], timestamps=timestamps, words=words, alternatives=alternatives)
        self._keep: int | None = None  # bytes of the existing file to keep (after `load`)
        self._fd: int | None = None
        self._opened = False

    @property
    def multi_line(self) -> bool:
        """Whether a file takes several lines (one per phone)."""
        return self.format.multi_line(self.timestamps)

    def is_done(self, path: str) -> bool:
        return self.format.path_key(path) in self.done

    # ------------------------------------------------------------------------------------------

    def load(self) -> int:
        """Read the existing output (if any) for resuming; returns how many audio files it
        holds. ValueError when it is not what this format and these options write."""
        if self.path is None:
            raise ValueError("cannot resume output written to stdout")
        self.done, self._keep = set(), 0
        if not self.path.exists():
            return 0
        blocks: list[tuple[str, int]] = []  # (key, offset of its first line)
        offset, complete = 0, 0
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    break  # cut off mid-write
                line = raw.decode("utf-8", errors="replace")[:-1]
                if number == 1 and self.header:
                    if line + "\n" != self.header:
                        raise ValueError(
                            f"{self.path}: its header {line!r} is not this command's "
                            f"{self.header.strip()!r} (other --timestamps or --topk?)"
                        )
                else:
                    key = self._key(line, number)
                    if not blocks or blocks[-1][0] != key or not self.multi_line:
                        blocks.append((key, offset))
                offset += len(raw)
                complete = offset
        if self.multi_line and blocks:
            key, start = blocks.pop()  # perhaps only some of its lines: decode it again
            complete = start
        self.done = {key for key, _ in blocks}
        self._keep = complete
        return len(self.done)

    def _key(self, line: str, number: int) -> str:
        """The audio file ``line`` belongs to; ValueError when the line is not what this
        command writes (another format, or the same format with other options)."""
        where = f"{self.path}, line {number}"
        try:
            key = self.format.line_key(line)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if self.fmt == "jsonl":
            obj = json.loads(line)
            if ("phones" in obj) != self.timestamps:
                raise ValueError(
                    f"{where}: written {'without' if self.timestamps else 'with'} timestamps; "
                    "resume with the options of the first run"
                )
            phones = obj.get("phones") or []
            if self.timestamps and phones and ("alternatives" in phones[0]) != self.alternatives:
                raise ValueError(
                    f"{where}: written {'without' if self.alternatives else 'with'} --topk; "
                    "resume with the options of the first run"
                )
        elif (self.header and line.count("\t") != self.header.count("\t")) or (
            self.fmt == "txt" and line.count("\t") != 1
        ):
            raise ValueError(f"{where}: not a {self.fmt} line of this command: {line[:80]!r}")
        return key

    def open(self) -> None:
        """Start writing: truncate the file, or after `load` cut it to its complete part and
        append; write the tsv header where the file starts empty."""
        self._opened = True
        if self.path is None:
            self._emit(self.header)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._keep is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o666)
            if os.fstat(self._fd).st_size != self._keep:
                os.ftruncate(self._fd, self._keep)
            os.lseek(self._fd, self._keep, os.SEEK_SET)
        if self._keep in (None, 0):
            self._emit(self.header)

    def write(self, record: Record) -> None:
        """One audio file's lines, in one write, flushed and fsynced; after a failed write the
        file is cut back to what it held before (best effort) and the error raised."""
        if not self._opened:
            self.open()
        text = self.format.text(record, timestamps=self.timestamps, words=self.words, alternatives=self.alternatives)
        self._emit(text[len(self.header) :])
        self.done.add(self.format.path_key(record.path))

    def _emit(self, text: str) -> None:
        if not text:
            return
        if self._fd is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        data = text.encode("utf-8")
        before = os.lseek(self._fd, 0, os.SEEK_CUR)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except BaseException:
            try:
                os.ftruncate(self._fd, before)
                os.lseek(self._fd, before, os.SEEK_SET)
            except OSError:
                pass
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LineOutput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
