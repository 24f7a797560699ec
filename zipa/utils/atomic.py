"""The one way this project writes a file: atomically.

A temporary file in the target's folder receives the content, is flushed and fsynced, then
renamed over the target (and the folder fsynced, so the rename survives a power cut). Readers
never see half a file; an interrupted or failing write leaves the previous file, if any, in
place and no temporary file behind. Checkpoints, shar side files, result files and CLI outputs
all go through :func:`open_atomic`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def open_atomic(path: PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """Open ``path`` for writing (``mode`` "w" for text, "wb" for bytes); the file appears at
    ``path`` only when the block finishes without an exception.

    Permissions: those of the file being replaced, else the usual ones for a new file (0666
    less the umask), not mkstemp's 0600.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"open_atomic: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        text: dict[str, Any] = {} if mode == "wb" else {"encoding": encoding, "newline": "\n"}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _permissions_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with open_atomic(path) as f:
        f.write(text)


def _permissions_for(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
