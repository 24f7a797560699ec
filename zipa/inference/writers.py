"""Output formats for transcripts and alignments: txt, tsv, jsonl, CTM and Praat TextGrid.

Each writer turns `Record`s into text; `write_text` puts text on stdout or, atomically (temp
file + rename), in a file.

- ``txt``: one line per file, ``<path>\\t<transcript>``. No times.
- ``tsv``: a header, then ``path  transcript`` per file; with timestamps one row per phone:
  ``path  start  end  phone  confidence``.
- ``jsonl``: one JSON object per file: ``path``, ``duration`` (s), ``text``; with timestamps
  also ``phones`` and (unless word boundaries are off) ``words``, lists of
  ``{"phone"|"word", "start", "end", "confidence"}``.
- ``ctm``: one line per phone: ``<file-id> 1 <start> <duration> <phone> <confidence>``, the
  file id being the path with whitespace replaced by ``_``.
- ``textgrid``: Praat's long text format, one file per audio file, with an IntervalTier
  ``phones`` and (unless word boundaries are off) ``words``; each tier's intervals are ordered,
  contiguous and cover ``[0, duration]``, gaps carrying an empty label.

Times are in seconds, rounded to the millisecond in text formats (TextGrid keeps full precision
so that its intervals stay exactly contiguous); confidences to 4 decimals.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from zipa.inference.timestamps import Alignment, Interval
from zipa.utils.atomic import write_text_atomic

FORMATS = ("txt", "tsv", "jsonl", "ctm", "textgrid")
TIMED_FORMATS = ("ctm", "textgrid")  # formats that need timestamps
TEXTGRID_SUFFIX = ".TextGrid"


@dataclass
class Record:
    """One transcribed file, as the writers see it."""

    path: str
    duration: float
    alignment: Alignment


def _t(x: float) -> str:
    return f"{x:.3f}"


def _c(x: float) -> str:
    return f"{x:.4f}"


def _clean(field: str) -> str:
    """A tsv field without tabs or newlines."""
    return re.sub(r"[\t\r\n]", " ", field)


def format_txt(records: Sequence[Record], timestamps: bool = False, words: bool = True) -> str:
    return "".join(f"{_clean(r.path)}\t{r.alignment.text}\n" for r in records)


def format_tsv(records: Sequence[Record], timestamps: bool = False, words: bool = True) -> str:
    if not timestamps:
        return "path\ttranscript\n" + "".join(f"{_clean(r.path)}\t{r.alignment.text}\n" for r in records)
    lines = ["path\tstart\tend\tphone\tconfidence\n"]
    for r in records:
        for p in r.alignment.phones:
            lines.append(f"{_clean(r.path)}\t{_t(p.start)}\t{_t(p.end)}\t{p.label}\t{_c(p.confidence)}\n")
    return "".join(lines)


def _intervals_json(intervals: Sequence[Interval], key: str) -> List[dict]:
    return [
        {key: iv.label, "start": round(iv.start, 3), "end": round(iv.end, 3), "confidence": round(iv.confidence, 4)}
        for iv in intervals
    ]


def format_jsonl(records: Sequence[Record], timestamps: bool = False, words: bool = True) -> str:
    lines = []
    for r in records:
        obj = {"path": r.path, "duration": round(r.duration, 6), "text": r.alignment.text}
        if timestamps:
            obj["phones"] = _intervals_json(r.alignment.phones, "phone")
            if words:
                obj["words"] = _intervals_json(r.alignment.words, "word")
        lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
    return "".join(lines)


def ctm_file_id(path: str) -> str:
    return re.sub(r"\s", "_", path) or "_"


def format_ctm(records: Sequence[Record], timestamps: bool = True, words: bool = True) -> str:
    lines = []
    for r in records:
        file_id = ctm_file_id(r.path)
        for p in r.alignment.phones:
            start = round(p.start, 3)
            lines.append(f"{file_id} 1 {_t(start)} {_t(round(p.end, 3) - start)} {p.label} {_c(p.confidence)}\n")
    return "".join(lines)


STREAM_WRITERS: Dict[str, Callable[..., str]] = {
    "txt": format_txt,
    "tsv": format_tsv,
    "jsonl": format_jsonl,
    "ctm": format_ctm,
}


# ---------------------------------------------------------------------------------------------
# Praat TextGrid
# ---------------------------------------------------------------------------------------------


def fill_tier(intervals: Sequence[Interval], duration: float) -> List[Interval]:
    """Ordered, contiguous intervals covering [0, duration]: gaps get an empty label.

    Input intervals must be ordered and not overlap; empty ones (end <= start) are dropped and
    times are clipped to [0, duration].
    """
    out: List[Interval] = []
    cursor = 0.0
    for iv in intervals:
        start, end = max(iv.start, cursor), min(iv.end, duration)
        if end <= start:
            continue
        if start > cursor:
            out.append(Interval("", cursor, start, 0.0))
        out.append(Interval(iv.label, start, end, iv.confidence))
        cursor = end
    if duration > cursor or not out:
        out.append(Interval("", cursor, max(duration, cursor), 0.0))
    return out


def _num(x: float) -> str:
    return repr(float(x))


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def format_textgrid(duration: float, tiers: Dict[str, Sequence[Interval]]) -> str:
    """Praat's long text TextGrid with one IntervalTier per entry of ``tiers``."""
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0",
        f"xmax = {_num(duration)}",
        "tiers? <exists>",
        f"size = {len(tiers)}",
        "item []:",
    ]
    for k, (name, intervals) in enumerate(tiers.items(), start=1):
        filled = fill_tier(intervals, duration)
        lines += [
            f"    item [{k}]:",
            '        class = "IntervalTier"',
            f"        name = {_quote(name)}",
            "        xmin = 0",
            f"        xmax = {_num(duration)}",
            f"        intervals: size = {len(filled)}",
        ]
        for i, iv in enumerate(filled, start=1):
            lines += [
                f"        intervals [{i}]:",
                f"            xmin = {_num(iv.start)}",
                f"            xmax = {_num(iv.end)}",
                f"            text = {_quote(iv.label)}",
            ]
    return "\n".join(lines) + "\n"


def textgrid_for(record: Record, words: bool = True) -> str:
    tiers: Dict[str, Sequence[Interval]] = {"phones": record.alignment.phones}
    if words:
        tiers["words"] = record.alignment.words
    return format_textgrid(record.duration, tiers)


# ---------------------------------------------------------------------------------------------
# Where outputs go
# ---------------------------------------------------------------------------------------------


def write_text(text: str, output: Optional[Path]) -> None:
    """Text to stdout (``output`` None or ``-``) or atomically to a file."""
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_text_atomic(output, text)
