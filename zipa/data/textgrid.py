"""Praat TextGrids: read (long and short text formats) and write (long text format).

`read_textgrid` reads what Praat saves as text, in either layout, and `TextGrid.to_text` writes
Praat's long layout, the one `zipa align` writes. A text TextGrid is a sequence of numbers,
quoted strings (``""`` inside one is a quote) and flags (``<exists>``); the long layout labels
them (``xmin = 0``, ``item [1]:``) and the short one does not. So the reader keeps those three
kinds of token and skips everything else (labels, and ``[...]`` whose digits are counters), which
reads both layouts with one grammar.

Encodings: UTF-16 with a byte order mark (what Praat writes when a label is not ASCII), UTF-8
(with or without a mark), and as a last resort Latin-1. Binary TextGrids are refused with a
message saying to save them as text.

Written here and not taken from praatio, so that reading a TextGrid needs no extra package (the
tests check that praatio reads what is written here, and that this reads what praatio writes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, Path]
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass
class IntervalTier:
    """Intervals ``(start, end, text)``, ordered and contiguous in a tier Praat wrote."""

    name: str
    xmin: float
    xmax: float
    intervals: list[tuple[float, float, str]] = field(default_factory=list)


@dataclass
class PointTier:
    """Praat's TextTier: points ``(time, mark)``."""

    name: str
    xmin: float
    xmax: float
    points: list[tuple[float, str]] = field(default_factory=list)


Tier = Union[IntervalTier, PointTier]


@dataclass
class TextGrid:
    xmin: float
    xmax: float
    tiers: list[Tier] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def interval_tier(self, name: str | None, where: str = "TextGrid") -> IntervalTier:
        """The interval tier called ``name``; with ``name`` None, the only interval tier.
        ValueError (listing the interval tiers there are) when there is no such one tier."""
        tiers = [t for t in self.tiers if isinstance(t, IntervalTier)]
        listed = ", ".join(repr(t.name) for t in tiers) or "none"
        if name is None:
            if len(tiers) == 1:
                return tiers[0]
            raise ValueError(f"{where}: {len(tiers)} interval tiers ({listed}); say which with --tier")
        found = [t for t in tiers if t.name == name]
        if not found:
            raise ValueError(f"{where}: no interval tier {name!r} (interval tiers: {listed})")
        if len(found) > 1:
            raise ValueError(f"{where}: {len(found)} interval tiers are named {name!r}")
        return found[0]

    def unique_name(self, name: str) -> str:
        """``name``, or ``name (zipa)``, ``name (zipa 2)``... when a tier already has it."""
        taken = set(self.names)
        candidate, k = name, 1
        while candidate in taken:
            candidate = f"{name} (zipa)" if k == 1 else f"{name} (zipa {k})"
            k += 1
        return candidate

    def to_text(self) -> str:
        """Praat's long text format."""
        lines = [
            'File type = "ooTextFile"',
            'Object class = "TextGrid"',
            "",
            f"xmin = {_num(self.xmin)}",
            f"xmax = {_num(self.xmax)}",
        ]
        if not self.tiers:
            return "\n".join(lines + ["tiers? <absent>"]) + "\n"
        lines += ["tiers? <exists>", f"size = {len(self.tiers)}", "item []:"]
        for k, tier in enumerate(self.tiers, start=1):
            point = isinstance(tier, PointTier)
            items: list[Any] = tier.points if isinstance(tier, PointTier) else tier.intervals
            lines += [
                f"    item [{k}]:",
                f'        class = "{"TextTier" if point else "IntervalTier"}"',
                f"        name = {_quote(tier.name)}",
                f"        xmin = {_num(tier.xmin)}",
                f"        xmax = {_num(tier.xmax)}",
                f"        {'points' if point else 'intervals'}: size = {len(items)}",
            ]
            for i, item in enumerate(items, start=1):
                if point:
                    lines += [
                        f"        points [{i}]:",
                        f"            number = {_num(item[0])}",
                        f"            mark = {_quote(item[1])}",
                    ]
                else:
                    lines += [
                        f"        intervals [{i}]:",
                        f"            xmin = {_num(item[0])}",
                        f"            xmax = {_num(item[1])}",
                        f"            text = {_quote(item[2])}",
                    ]
        return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    """Full precision (intervals stay exactly contiguous), ``3`` rather than ``3.0`` as Praat."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _decode(data: bytes, where: str) -> str:
    if data.startswith(b"ooBinaryFile"):
        raise ValueError(f"{where}: a binary TextGrid; save it as a text file in Praat")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data[:200]:  # UTF-16 without a byte order mark
        return data.decode("utf-16-le" if data[1:2] == b"\x00" else "utf-16-be")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _tokens(text: str, where: str) -> list[tuple[str, object]]:
    """("num", float), ("str", str) and ("flag", str) tokens; everything else is skipped."""
    out: list[tuple[str, object]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j, parts = i + 1, []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise ValueError(f"{where}: a string is not closed (from character {i})")
                parts.append(text[j:k])
                if text.startswith('"', k + 1):  # "" is a quote inside the string
                    parts.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            out.append(("str", "".join(parts)))
        elif c == "<":
            k = text.find(">", i)
            if k < 0:
                raise ValueError(f"{where}: a flag is not closed (from character {i})")
            out.append(("flag", text[i + 1 : k]))
            i = k + 1
        elif c == "[":
            k = text.find("]", i)
            i = n if k < 0 else k + 1
        elif c == "!":  # a comment, to the end of the line
            k = text.find("\n", i)
            i = n if k < 0 else k + 1
        elif c.isdigit() or c in "+-.":
            m = _NUMBER.match(text, i)
            if m:
                out.append(("num", float(m.group())))
                i = m.end()
            else:
                i += 1
        elif c.isalpha():  # a label (xmin, intervals, size...): skip the word
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            i = j
        else:
            i += 1
    return out


class _Reader:
    def __init__(self, tokens: list[tuple[str, object]], where: str):
        self.tokens, self.pos, self.where = tokens, 0, where

    def take(self, kind: str, what: str):
        if self.pos >= len(self.tokens):
            raise ValueError(f"{self.where}: ends early, expected {what}")
        got_kind, value = self.tokens[self.pos]
        if got_kind != kind:
            raise ValueError(f"{self.where}: expected {what}, found {value!r}")
        self.pos += 1
        return value

    def count(self, what: str) -> int:
        value = self.take("num", what)
        if value != int(value) or value < 0:
            raise ValueError(f"{self.where}: {what} is not a count: {value}")
        return int(value)


def parse_textgrid(text: str, where: str = "TextGrid") -> TextGrid:
    """A TextGrid from the text of a file (long or short layout)."""
    r = _Reader(_tokens(text, where), where)
    file_type = r.take("str", 'File type = "ooTextFile"')
    object_class = r.take("str", 'Object class = "TextGrid"')
    if not str(file_type).startswith("ooTextFile") or object_class != "TextGrid":
        raise ValueError(f"{where}: not a Praat TextGrid (file type {file_type!r}, object class {object_class!r})")
    grid = TextGrid(r.take("num", "xmin"), r.take("num", "xmax"))
    if r.take("flag", "tiers? <exists>") != "exists":
        return grid
    for _ in range(r.count("the number of tiers")):
        kind = r.take("str", "a tier class")
        name = r.take("str", "a tier name")
        xmin, xmax = r.take("num", "the tier's xmin"), r.take("num", "the tier's xmax")
        size = r.count(f"the size of tier {name!r}")
        if kind == "IntervalTier":
            tier: Tier = IntervalTier(
                name,
                xmin,
                xmax,
                [(r.take("num", "xmin"), r.take("num", "xmax"), r.take("str", "text")) for _ in range(size)],
            )
        elif kind == "TextTier":
            tier = PointTier(name, xmin, xmax, [(r.take("num", "number"), r.take("str", "mark")) for _ in range(size)])
        else:
            raise ValueError(f"{where}: tier {name!r} has an unknown class {kind!r}")
        grid.tiers.append(tier)
    return grid


def read_textgrid(path: PathLike) -> TextGrid:
    """Read a Praat TextGrid saved as text (long or short layout); ValueError naming the file
    when it is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_textgrid(_decode(data, str(path)), str(path))
