"""Tab-separated input whose errors name the file and line they come from."""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Union

PathLike = Union[str, os.PathLike]


class InputError(ValueError):
    """Bad input, with the file and line it came from in the message."""


def read_tsv(path: PathLike, min_fields: int, max_fields: int) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` of a tab-separated file; blank lines and lines starting
    with ``#`` are skipped; a line with too few or too many fields raises :class:`InputError`."""
    with open(path, encoding="utf-8") as f:
        yield from parse_tsv_lines(f, str(path), min_fields, max_fields)


def parse_tsv_lines(
    lines: Iterable[str], name: str, min_fields: int, max_fields: int
) -> Iterator[tuple[int, list[str]]]:
    """:func:`read_tsv` over lines already open; ``name`` is what error messages call them."""
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
