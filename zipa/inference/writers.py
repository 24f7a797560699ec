"""Output formats for transcripts and alignments: txt, tsv, jsonl, CTM, Praat TextGrid and ELAN.

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
  ``"alternatives": [{"phone", "prob"}, ...]``, most probable first. Forced alignment adds
  ``fit`` (``mean_confidence``, ``phones_per_second``, ``squeezed_share``: `zipa.decoding.fit`)
  and ``warnings``, the reasons its transcript cannot be the audio's (empty when it fits).
- ``ctm``: one line per phone: ``<file-id> 1 <start> <duration> <phone> <confidence>``, the
  file id being the path with whitespace replaced by ``_``.
- ``textgrid``: Praat's long text format, one file per audio file, with an IntervalTier
  ``phones`` and (unless word boundaries are off) ``words``; each tier's intervals are ordered,
  contiguous and cover ``[0, duration]``, gaps carrying an empty label. Forced alignment from a
  TextGrid (`textgrid_with_alignment`) writes a copy of that TextGrid with the two tiers added.
- ``eaf``: an ELAN file per audio file, linking it (`format_eaf`): the same tiers as
  time-aligned annotations, each with a dependent tier of confidences.

Times are in seconds, rounded to the millisecond in text formats (TextGrid keeps full precision
so that its intervals stay exactly contiguous); confidences to 4 decimals.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from zipa.data.eaf import eaf_text
from zipa.data.textgrid import IntervalTier, TextGrid
from zipa.decoding.timestamps import Alignment, Interval
from zipa.utils.atomic import write_text_atomic

PathLike = Union[str, Path]

TEXTGRID_SUFFIX = ".TextGrid"


@dataclass
class Record:
    """One transcribed file, as the writers see it. ``textgrid``: the TextGrid whose utterance
    tier was force-aligned, when there is one (the TextGrid writer then writes a copy of it)."""

    path: str
    duration: float
    alignment: Alignment
    textgrid: TextGrid | None = None
    # MFA's layout (`zipa align CORPUS --output-dir`): the speakers' stretches of the file,
    # (speaker, start, end); None for the layout of every other command (tiers phones, words).
    speakers: list[tuple[str, float, float]] | None = None


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
                lines.append(f"{_clean(r.path)}\t{_t(p.start)}\t{_t(p.end)}\t{p.label}\t{_c(p.confidence)}\t{alts}\n")
        return "".join(lines)
    lines = ["path\tstart\tend\tphone\tconfidence\n"]
    for r in records:
        for p in r.alignment.phones:
            lines.append(f"{_clean(r.path)}\t{_t(p.start)}\t{_t(p.end)}\t{p.label}\t{_c(p.confidence)}\n")
    return "".join(lines)


def _intervals_json(intervals: Sequence[Interval], key: str) -> list[dict]:
    return [
        {key: iv.label, "start": round(iv.start, 3), "end": round(iv.end, 3), "confidence": round(iv.confidence, 4)}
        for iv in intervals
    ]


def format_jsonl(
    records: Sequence[Record], timestamps: bool = False, words: bool = True, alternatives: bool = False
) -> str:
    lines = []
    for r in records:
        obj: dict[str, Any] = {"path": r.path, "duration": round(r.duration, 6), "text": r.alignment.text}
        if timestamps:
            obj["phones"] = _intervals_json(r.alignment.phones, "phone")
            if alternatives:
                for item, p in zip(obj["phones"], r.alignment.phones):
                    item["alternatives"] = [
                        {"phone": label, "prob": round(prob, 4)} for label, prob in (p.alternatives or ())
                    ]
            if words:
                obj["words"] = _intervals_json(r.alignment.words, "word")
        if r.alignment.fit is not None:  # forced alignment: how well the transcript fits the audio
            obj["fit"] = r.alignment.fit.to_json()
            obj["warnings"] = list(r.alignment.warnings)
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


# ---------------------------------------------------------------------------------------------
# Praat TextGrid
# ---------------------------------------------------------------------------------------------


def fill_tier(intervals: Sequence[Interval], duration: float, xmin: float = 0.0) -> list[Interval]:
    """Ordered, contiguous intervals covering [xmin, duration]: gaps get an empty label.

    Input intervals must be ordered and not overlap; empty ones (end <= start) are dropped and
    times are clipped to [xmin, duration].
    """
    out: list[Interval] = []
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


def format_textgrid(duration: float, tiers: dict[str, Sequence[Interval]]) -> str:
    """Praat's long text TextGrid over [0, duration] with one IntervalTier per entry of ``tiers``
    (each filled by `fill_tier`)."""
    return TextGrid(
        0.0, duration, [interval_tier(name, intervals, 0.0, duration) for name, intervals in tiers.items()]
    ).to_text()


def interval_tier(name: str, intervals: Sequence[Interval], xmin: float, xmax: float) -> IntervalTier:
    """A TextGrid tier of ``intervals`` covering [xmin, xmax] (gaps with empty labels)."""
    return IntervalTier(name, xmin, xmax, [(iv.start, iv.end, iv.label) for iv in fill_tier(intervals, xmax, xmin)])


def format_textgrids(
    records: Sequence[Record], timestamps: bool = True, words: bool = True, alternatives: bool = False
) -> str:
    """The TextGrid of one record: its phones and words over [0, duration], or, when the record
    comes from a TextGrid's utterance tier, a copy of that TextGrid with both tiers added."""
    (record,) = records
    return (
        textgrid_for(record, words)
        if record.textgrid is None
        else textgrid_with_alignment(record.textgrid, record, words)
    )


def textgrid_for(record: Record, words: bool = True) -> str:
    return format_textgrid(record.duration, dict(alignment_tiers(record, words)))


def alignment_tiers(record: Record, words: bool = True) -> list[tuple[str, Sequence[Interval]]]:
    """The tiers a record's alignment is written as: ``phones`` and ``words``; in MFA's layout
    (``record.speakers``) ``words`` then ``phones``, and for a file with several speakers
    ``<speaker> - words``, ``<speaker> - phones`` for each, a phone or word going to the first
    speaker whose stretch holds its midpoint."""
    tiers: list[tuple[str, Sequence[Interval]]] = []
    speakers = record.speakers
    if speakers is None:
        tiers.append(("phones", record.alignment.phones))
        if words:
            tiers.append(("words", record.alignment.words))
        return tiers
    names = list(dict.fromkeys(speaker for speaker, _, _ in speakers))

    def of(speaker: str, intervals: Sequence[Interval]) -> list[Interval]:
        if len(names) == 1:
            return list(intervals)
        return [iv for iv in intervals if _speaker_at(speakers, (iv.start + iv.end) / 2) == speaker]

    for speaker in names:
        prefix = f"{speaker} - " if len(names) > 1 else ""
        if words:
            tiers.append((f"{prefix}words", of(speaker, record.alignment.words)))
        tiers.append((f"{prefix}phones", of(speaker, record.alignment.phones)))
    return tiers


def _speaker_at(speakers: Sequence[tuple[str, float, float]], time: float) -> str | None:
    return next((speaker for speaker, start, end in speakers if start <= time <= end), None)


def textgrid_with_alignment(grid: TextGrid, record: Record, words: bool = True) -> str:
    """A copy of ``grid`` (e.g. a TextGrid with an utterance tier) with the record's phones and
    words added as two more tiers over the grid's time range, named ``phones`` and ``words``
    (``phones (zipa)``... where the grid has those names already)."""
    copy = TextGrid(grid.xmin, grid.xmax, list(grid.tiers))
    for name, intervals in alignment_tiers(record, words):
        copy.tiers.append(interval_tier(copy.unique_name(name), intervals, grid.xmin, grid.xmax))
    return copy.to_text()


# ---------------------------------------------------------------------------------------------
# ELAN
# ---------------------------------------------------------------------------------------------


def format_eaf(
    records: Sequence[Record], timestamps: bool = True, words: bool = True, alternatives: bool = False
) -> str:
    """The ELAN file of one record, linking its audio: the interval tiers of the TextGrid (or
    ELAN file) it was aligned from, if any, then its phone and word tiers as time-aligned
    annotations (`alignment_tiers`), each with a dependent tier ``<tier> confidence`` holding
    each annotation's confidence (ELAN's Symbolic Association: one value per annotation)."""
    (record,) = records
    grid = TextGrid(
        0.0,
        record.duration,
        [t for t in (record.textgrid.tiers if record.textgrid else []) if isinstance(t, IntervalTier)],
    )
    tiers = [(t.name, t.intervals) for t in grid.tiers if isinstance(t, IntervalTier)]  # all of them
    dependents = []
    for name, intervals in alignment_tiers(record, words):
        name = grid.unique_name(name)
        grid.tiers.append(IntervalTier(name, 0.0, record.duration))
        tiers.append((name, [(iv.start, iv.end, iv.label) for iv in intervals]))
        dependents.append((f"{name} confidence", name, [_c(iv.confidence) for iv in intervals]))
    return eaf_text(record.path, tiers, dependents)


# ---------------------------------------------------------------------------------------------
# Where outputs go
# ---------------------------------------------------------------------------------------------


def write_text(text: str, output: Path | None) -> None:
    """Text to stdout (``output`` None or ``-``) or atomically to a file."""
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_text_atomic(output, text)


# ---------------------------------------------------------------------------------------------
# The registry: every output format is one entry, read by the CLI (--format, file names,
# --resume) and the web page (downloads).
# ---------------------------------------------------------------------------------------------


def _first_field(line: str) -> str:
    return line.split("\t")[0]


def _jsonl_key(line: str) -> str:
    try:
        return json.loads(line)["path"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"not a jsonl record of this command: {line[:80]!r}") from None


def _ctm_key(line: str) -> str:
    fields = line.split()
    if len(fields) != 6:
        raise ValueError(f"not a CTM line (6 fields): {line[:80]!r}")
    return fields[0]


@dataclass(frozen=True)
class OutputFormat:
    """One output format.

    ``render(records, timestamps=, words=, alternatives=)`` gives the text of some records
    (with its header, if the format has one: ``render([])`` is the header alone).
    ``one_file_each``: each audio file gets a file of its own, ``<name><suffix>`` (TextGrid);
    otherwise each file's lines are appended to one output as it is decoded, and ``line_key``
    says which audio file a line belongs to when ``--resume`` reads the output back (ValueError
    for a line this format does not write), ``path_key`` how the format writes a path there.
    ``timed``: always written with times. ``multi_line(timestamps)``: a file may take several
    lines (the last file of an interrupted output is then decoded again)."""

    name: str
    suffix: str
    media_type: str
    render: Callable[..., str]
    summary: str
    timed: bool = False
    one_file_each: bool = False
    line_key: Callable[[str], str] = _first_field
    path_key: Callable[[str], str] = _clean
    multi_line: Callable[[bool], bool] = lambda timestamps: False
    topk: bool = False  # writes the top-k alternatives of each phone (--topk)

    def text(self, record: Record, timestamps: bool = True, words: bool = True, alternatives: bool = False) -> str:
        """One record's output, header included."""
        return self.render([record], timestamps=timestamps, words=words, alternatives=alternatives)


FORMATS: dict[str, OutputFormat] = {}


def register_format(fmt: OutputFormat) -> OutputFormat:
    """Add (or replace) an output format; the CLI's --format, --resume and the web page's
    downloads take it from here."""
    FORMATS[fmt.name] = fmt
    return fmt


for _fmt in (
    OutputFormat("txt", ".txt", "text/plain", format_txt, "<path> TAB <transcript>, one line per file"),
    OutputFormat(
        "tsv",
        ".tsv",
        "text/tab-separated-values",
        format_tsv,
        "header, then path, transcript; with times: path, start, end, phone, confidence per phone",
        multi_line=lambda timestamps: timestamps,
        topk=True,
    ),
    OutputFormat(
        "jsonl",
        ".jsonl",
        "application/json",
        format_jsonl,
        '{"path", "duration", "text"}; with times also "phones" and "words" lists',
        line_key=_jsonl_key,
        path_key=lambda path: path,
        topk=True,
    ),
    OutputFormat(
        "ctm",
        ".ctm",
        "text/plain",
        format_ctm,
        "<file-id> 1 <start> <duration> <phone> <confidence>, one line per phone",
        timed=True,
        line_key=_ctm_key,
        path_key=ctm_file_id,
        multi_line=lambda timestamps: True,
    ),
    OutputFormat(
        "textgrid",
        TEXTGRID_SUFFIX,
        "text/plain",
        format_textgrids,
        'Praat TextGrid per file: tiers "phones" and "words" covering the whole file',
        timed=True,
        one_file_each=True,
    ),
    OutputFormat(
        "eaf",
        ".eaf",
        "application/xml",
        format_eaf,
        'ELAN file per file, linking the audio: tiers "phones" and "words", confidences in dependent tiers',
        timed=True,
        one_file_each=True,
    ),
):
    register_format(_fmt)


def write(
    records: Record | Alignment | Sequence[Record | Alignment],
    path: PathLike | None,
    format: str | None = None,
    *,
    duration: float | None = None,
    words: bool = True,
) -> None:
    """Write alignments (or records) to ``path`` (None or ``-``: stdout) in ``format``, by
    default the one ``path``'s suffix names (``.TextGrid``, ``.ctm``, ``.jsonl``, ``.tsv``,
    ``.txt``). An `Alignment` is written as the record of the audio file named as ``path``
    without its suffix (what CTM, jsonl and tsv lines name), over ``duration`` seconds (default:
    its last phone's end). One-file formats (TextGrid) take one alignment."""
    items = [records] if isinstance(records, (Record, Alignment)) else list(records)
    fmt = FORMATS[format] if format is not None else format_for(path)
    out = []
    for item in items:
        if isinstance(item, Alignment):
            end = max([iv.end for iv in item.phones], default=0.0)
            name = Path(str(path)).stem if path is not None and str(path) != "-" else "-"
            item = Record(name, end if duration is None else duration, item)
        out.append(item)
    if fmt.one_file_each and len(out) != 1:
        raise ValueError(f"{fmt.name} holds one file's alignment, got {len(out)}")
    write_text(fmt.render(out, timestamps=True, words=words, alternatives=False), None if path is None else Path(path))


def format_for(path: PathLike | None) -> OutputFormat:
    """The format whose suffix ``path`` has (case-insensitive)."""
    suffix = Path(str(path)).suffix.lower()
    for fmt in FORMATS.values():
        if fmt.suffix.lower() == suffix:
            return fmt
    raise ValueError(f"{path}: no output format has the suffix {suffix!r} (give format=, one of {', '.join(FORMATS)})")
