"""Tab-separated input, read one way everywhere: UTF-8 (a byte-order mark tolerated), blank
lines and ``#`` comments skipped, fields split at tabs, line numbers kept for error messages."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Union

PathLike = Union[str, os.PathLike]


class InputError(ValueError):
    """Bad input, with the file and line it came from in the message."""


def tsv_rows(path: PathLike) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of each line of a tab-separated file that is neither blank nor
    a ``#`` comment."""
    with open(path, encoding="utf-8-sig") as f:
        yield from _rows(f)


def read_tsv(path: PathLike, min_fields: int, max_fields: int) -> Iterator[tuple[int, list[str]]]:
    """`tsv_rows` whose lines have ``min_fields`` to ``max_fields`` fields; :class:`InputError`
    naming the file and line for one that has not."""
    return _checked(tsv_rows(path), str(path), min_fields, max_fields)


def parse_tsv_lines(
    lines: Iterable[str], name: str, min_fields: int, max_fields: int
) -> Iterator[tuple[int, list[str]]]:
    """`read_tsv` over lines already open (standard input...); ``name`` is what error messages
    call them."""
    return _checked(_rows(lines), name, min_fields, max_fields)


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n").rstrip("\r")
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line.split("\t")


def _checked(
    rows: Iterator[tuple[int, list[str]]], name: str, min_fields: int, max_fields: int
) -> Iterator[tuple[int, list[str]]]:
    for number, fields in rows:
        if not (min_fields <= len(fields) <= max_fields):
            want = str(min_fields) if min_fields == max_fields else f"{min_fields}-{max_fields}"
            line = "\t".join(fields)
            raise InputError(
                f"{name}:{number}: expected {want} tab-separated fields, found {len(fields)}: {line[:80]!r}"
            )
        yield number, fields
