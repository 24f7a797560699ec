"""Output formats for transcripts and alignments: txt, tsv, jsonl, CTM and Praat TextGrid.

Each writer turns `Record`s into text; `write_text` puts text on stdout or, atomically (temp
file + rename), in a file.

- ``txt``: one line per file, ``<path>\\t<transcript>``. No times.
- ``tsv``: a header, then ``path  transcript`` per file; with timestamps one row per phone:
  ``path  start  end  phone  confidence``, and with ``alternatives`` (top-k) a sixth column
  ``alternatives``: the phone's alternatives as ``label:prob`` separated by spaces, most probable
  first (``a:0.7100 e:0.1200 ▁:0.0500``).
- ``jsonl``: one JSON object per file: ``path``, ``duration`` (s), ``text``; with timestamps
  also ``phones`` and (unless word boundaries are off) ``words``, lists of
  ``{"phone"|"word", "start", "end", "confidence"}``; with ``alternatives`` each phone also has
  ``"alternatives": [{"phone", "prob"}, ...]``, most probable first.
- ``ctm``: one line per phone: ``<file-id> 1 <start> <duration> <phone> <confidence>``, the
  file id being the path with whitespace replaced by ``_``.
- ``textgrid``: Praat's long text format, one file per audio file, with an IntervalTier
  ``phones`` and (unless word boundaries are off) ``words``; each tier's intervals are ordered,
  contiguous and cover ``[0, duration]``, gaps carrying an empty label. Forced alignment from a
  TextGrid (`textgrid_with_alignment`) writes a copy of that TextGrid with the two tiers added.

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

from zipa.inference.textgrid import IntervalTier, TextGrid
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


def format_txt(
    records: Sequence[Record], timestamps: bool = False, words: bool = True, alternatives: bool = False
) -> str:
    return "".join(f"{_clean(r.path)}\t{r.alignment.text}\n" for r in records)


def format_tsv(
    records: Sequence[Record], timestamps: bool = False, words: bool = True, alternatives: bool = False
) -> str:
    if not timestamps:
        return "path\ttranscript\n" + "".join(f"{_clean(r.path)}\t{r.alignment.text}\n" for r in records)
    if alternatives:
        lines = ["path\tstart\tend\tphone\tconfidence\talternatives\n"]
        for r in records:
            for p in r.alignment.phones:
                alts = " ".join(f"{_clean(label)}:{_c(prob)}" for label, prob in (p.alternatives or ()))
                lines.append(
                    f"{_clean(r.path)}\t{_t(p.start)}\t{_t(p.end)}\t{p.label}\t{_c(p.confidence)}\t{alts}\n"
                )
        return "".join(lines)
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


def format_jsonl(
    records: Sequence[Record], timestamps: bool = False, words: bool = True, alternatives: bool = False
) -> str:
    lines = []
    for r in records:
        obj = {"path": r.path, "duration": round(r.duration, 6), "text": r.alignment.text}
        if timestamps:
            obj["phones"] = _intervals_json(r.alignment.phones, "phone")
            if alternatives:
                for item, p in zip(obj["phones"], r.alignment.phones):
                    item["alternatives"] = [
                        {"phone": label, "prob": round(prob, 4)} for label, prob in (p.alternatives or ())
                    ]
            if words:
                obj["words"] = _intervals_json(r.alignment.words, "word")
        lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
    return "".join(lines)


def ctm_file_id(path: str) -> str:
    return re.sub(r"\s", "_", path) or "_"


def format_ctm(
    records: Sequence[Record], timestamps: bool = True, words: bool = True, alternatives: bool = False
) -> str:
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


def fill_tier(intervals: Sequence[Interval], duration: float, xmin: float = 0.0) -> List[Interval]:
    """Ordered, contiguous intervals covering [xmin, duration]: gaps get an empty label.

    Input intervals must be ordered and not overlap; empty ones (end <= start) are dropped and
    times are clipped to [xmin, duration].
    """
    out: List[Interval] = []
    cursor = float(xmin)
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


def format_textgrid(duration: float, tiers: Dict[str, Sequence[Interval]]) -> str:
    """Praat's long text TextGrid over [0, duration] with one IntervalTier per entry of ``tiers``
    (each filled by `fill_tier`)."""
    return TextGrid(0.0, duration, [interval_tier(name, intervals, 0.0, duration)
                                    for name, intervals in tiers.items()]).to_text()


def interval_tier(name: str, intervals: Sequence[Interval], xmin: float, xmax: float) -> IntervalTier:
    """A TextGrid tier of ``intervals`` covering [xmin, xmax] (gaps with empty labels)."""
    return IntervalTier(name, xmin, xmax, [(iv.start, iv.end, iv.label) for iv in fill_tier(intervals, xmax, xmin)])


def textgrid_for(record: Record, words: bool = True) -> str:
    tiers: Dict[str, Sequence[Interval]] = {"phones": record.alignment.phones}
    if words:
        tiers["words"] = record.alignment.words
    return format_textgrid(record.duration, tiers)


def textgrid_with_alignment(grid: TextGrid, record: Record, words: bool = True) -> str:
    """A copy of ``grid`` (e.g. a TextGrid with an utterance tier) with the record's phones and
    words added as two more tiers over the grid's time range, named ``phones`` and ``words``
    (``phones (zipa)``... where the grid has those names already)."""
    copy = TextGrid(grid.xmin, grid.xmax, list(grid.tiers))
    added = [("phones", record.alignment.phones)] + ([("words", record.alignment.words)] if words else [])
    for name, intervals in added:
        copy.tiers.append(interval_tier(copy.unique_name(name), intervals, grid.xmin, grid.xmax))
    return copy.to_text()


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
