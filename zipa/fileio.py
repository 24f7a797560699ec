"""Small file helpers shared by the preparation scripts: atomic text writes, line readers that
name the file and line of bad input."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, TextIO, Union

PathLike = Union[str, Path]


@contextlib.contextmanager
def open_atomic(path: PathLike, encoding: str = "utf-8") -> Iterator[TextIO]:
    """Open ``path`` for writing text through a temporary file in the same folder, renamed over
    ``path`` only when the block finishes without an exception (so readers never see half a
    file and an interrupted run leaves the old file, if any, in place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="\n") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: PathLike, text: str) -> None:
    with open_atomic(path) as f:
        f.write(text)


class InputError(ValueError):
    """Bad input, with the file and line it came from in the message."""


def read_tsv(path: PathLike, min_fields: int, max_fields: int) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` of a tab-separated file; blank lines and lines starting
    with ``#`` are skipped; a line with too few or too many fields raises :class:`InputError`."""
    with open(path, encoding="utf-8") as f:
        yield from parse_tsv_lines(f, str(path), min_fields, max_fields)


def parse_tsv_lines(lines, name: str, min_fields: int, max_fields: int):
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\n").rstrip("\r")
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if not (min_fields <= len(fields) <= max_fields):
            want = str(min_fields) if min_fields == max_fields else f"{min_fields}-{max_fields}"
            raise InputError(
                f"{name}:{n}: expected {want} tab-separated fields, found {len(fields)}: "
                f"{line[:80]!r}"
            )
        yield n, fields
