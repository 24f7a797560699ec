"""Corpus folders as the Montreal Forced Aligner keeps them: speaker folders of recordings, each
with its transcript beside it.

    corpus/
      speaker1/utt1.wav  speaker1/utt1.lab      one utterance (.lab or .txt: the whole file)
      speaker2/long.wav  speaker2/long.TextGrid utterance intervals; one interval tier per speaker
      region/speaker3/utt.flac  utt.txt        speakers may be nested: the speaker is the folder

`pair_transcripts` finds each audio file's transcript (the file of the same stem beside it:
``.lab``, ``.txt`` or ``.TextGrid``, any case) and reads its utterances; `CorpusSummary` is the
table of what aligning each file gave (``alignment_summary.csv`` in the output folder, in the
spirit of MFA's alignment analysis), kept across interrupted runs.

The speaker of a .lab/.txt transcript, and of a TextGrid with one interval tier, is the folder
holding the audio file; a TextGrid with several interval tiers has, as in MFA, a speaker per
tier (named by the tier).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from zipa.data.textgrid import IntervalTier, read_textgrid
from zipa.utils.atomic import open_atomic

PathLike = Union[str, Path]
TRANSCRIPT_SUFFIXES = (".lab", ".txt", ".textgrid")  # in order of preference
SUMMARY_NAME = "alignment_summary.csv"


@dataclass(frozen=True)
class SpeakerUtterance:
    """A stretch of a recording, its speaker and its text; ``end`` None: to the end of the file."""

    speaker: str
    start: float
    end: float | None
    text: str


@dataclass
class CorpusFile:
    """An audio file of a corpus with its speaker and transcript (None: it has none, it is
    transcribed freely), the transcript's utterances, or the error reading it."""

    audio: Path
    relative: Path
    speaker: str
    transcript: Path | None = None
    utterances: list[SpeakerUtterance] = field(default_factory=list)
    error: str | None = None

    @property
    def transcript_name(self) -> str:
        """The transcript's path relative to the corpus ("" without one)."""
        return "" if self.transcript is None else str(self.relative.parent / self.transcript.name)

    def speaker_spans(self) -> list[tuple[str, float, float]]:
        """(speaker, start, end) of each utterance; the whole file for its folder's speaker when
        it has no transcript."""
        spans = [(u.speaker, u.start, float("inf") if u.end is None else u.end) for u in self.utterances]
        return spans or [(self.speaker, 0.0, float("inf"))]


def find_transcript(audio: PathLike, listing: dict[Path, dict[str, dict[str, Path]]] | None = None) -> Path | None:
    """The transcript beside ``audio``: ``<stem>.lab``, ``.txt`` or ``.TextGrid`` (any case of
    the suffix; that order when there are several), or None. ``listing``: the transcripts of
    each folder read so far (filled here), so that a folder of many files is read once."""
    audio = Path(audio)
    listing = {} if listing is None else listing
    if audio.parent not in listing:
        listing[audio.parent] = {}
        for p in audio.parent.iterdir():
            if p.suffix.lower() in TRANSCRIPT_SUFFIXES and p.is_file():
                listing[audio.parent].setdefault(p.stem, {})[p.suffix.lower()] = p
    found = listing[audio.parent].get(audio.stem, {})
    return next((found[s] for s in TRANSCRIPT_SUFFIXES if s in found), None)


def speaker_of(audio: PathLike) -> str:
    """The name of the folder holding the file, as MFA takes it (for a file at the top of the
    corpus folder, that folder's name)."""
    return Path(audio).resolve().parent.name


def read_utterances(transcript: PathLike, speaker: str, tier: str | None = None) -> list[SpeakerUtterance]:
    """The utterances of a transcript file: a .lab/.txt is one utterance of ``speaker`` over the
    whole file (its lines joined); a TextGrid gives the non-empty intervals of ``tier``, or, with
    ``tier`` None, of its only interval tier (speaker ``speaker``) or of every interval tier
    (each a speaker, named by the tier). ValueError naming the file for an empty transcript or
    an unreadable TextGrid."""
    path = Path(transcript)
    if path.suffix.lower() != ".textgrid":
        text = " ".join(path.read_text(encoding="utf-8-sig", errors="replace").split())
        if not text:
            raise ValueError(f"{path}: the transcript is empty")
        return [SpeakerUtterance(speaker, 0.0, None, text)]
    grid = read_textgrid(path)
    if tier is not None:
        tiers = [(speaker, grid.interval_tier(tier, str(path)))]
    else:
        interval_tiers = [t for t in grid.tiers if isinstance(t, IntervalTier)]
        if not interval_tiers:
            raise ValueError(f"{path}: no interval tier")
        tiers = [(speaker if len(interval_tiers) == 1 else t.name, t) for t in interval_tiers]
    utterances = sorted(
        (
            SpeakerUtterance(name, float(a), float(b), text.strip())
            for name, t in tiers
            for a, b, text in t.intervals
            if text.strip()
        ),
        key=lambda u: (u.start, u.speaker),
    )
    if not utterances:
        raise ValueError(f"{path}: no interval has text: nothing to align")
    return utterances


def pair_transcripts(files: Sequence[tuple[Path, Path]], tier: str | None = None) -> list[CorpusFile]:
    """Each audio file (path, path relative to its input folder) with its speaker, transcript
    and utterances; a transcript that cannot be read is the file's ``error``."""
    out: list[CorpusFile] = []
    listing: dict[Path, dict[str, dict[str, Path]]] = {}
    for audio, relative in files:
        item = CorpusFile(Path(audio), Path(relative), speaker_of(audio), find_transcript(audio, listing))
        if item.transcript is not None:
            try:
                item.utterances = read_utterances(item.transcript, item.speaker, tier)
            except (ValueError, OSError) as e:
                item.error = str(e) if str(item.transcript) in str(e) else f"{item.transcript}: {e}"
        out.append(item)
    return out


def written_words(
    utterances: Sequence[SpeakerUtterance], lang: str, remove_diacritics: bool = False
) -> list[str] | None:
    """The written words of orthographic utterances, in order (punctuation around them removed),
    for MFA's ``words`` tier, when G2P gives each utterance as many IPA words as it has written
    words, so that the aligned words can be named by them; None when it does not (a number read
    as several words, a word whose symbols were all dropped...): the tier then keeps IPA words."""
    from zipa.text.g2p import g2p_report

    out: list[str] = []
    for utterance in utterances:
        written = [w for w in (_strip_punctuation(w) for w in utterance.text.split()) if w]
        phones, _ = g2p_report(utterance.text, lang, remove_diacritics)
        if len(phones.split()) != len(written):
            return None
        out += written
    return out


def _strip_punctuation(word: str) -> str:
    import unicodedata

    keep = [unicodedata.category(ch)[0] not in "PSZ" for ch in word]
    if True not in keep:
        return ""
    return word[keep.index(True) : len(word) - keep[::-1].index(True)]


# ---------------------------------------------------------------------------------------------
# The summary table
# ---------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = (
    "file",
    "speaker",
    "transcript",
    "alignment",
    "duration",
    "phones",
    "words",
    "mean_confidence",
    "fit_warnings",
    "notes",
    "error",
)


class CorpusSummary:
    """``alignment_summary.csv``: a row per audio file (its path relative to the corpus), in the
    corpus's order: speaker, transcript file, ``alignment`` (forced; free: no transcript, the
    file was transcribed; failed), duration (s), number of phones and words, mean phone
    confidence, the fit warnings of forced alignment, notes (symbols dropped from the
    transcript, utterances not aligned) and the error that stopped the file. Rewritten
    atomically after each file, so that it always matches the TextGrids written; `load` reads
    an earlier run's rows back (``--resume``)."""

    def __init__(self, path: PathLike, order: Sequence[str]):
        self.path = Path(path)
        self.order = {name: k for k, name in enumerate(order)}
        self.rows: dict[str, dict[str, str]] = {}

    def load(self) -> None:
        """The rows of an earlier run (none when there is no file); ValueError when the file is not
        a summary of this kind."""
        if not self.path.exists():
            return
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != SUMMARY_COLUMNS:
                raise ValueError(f"{self.path}: not an alignment summary (columns {reader.fieldnames})")
            self.rows = {row["file"]: row for row in reader}

    def add(self, file: str, **values) -> None:
        """Set a file's row (unknown columns are a TypeError) and write the table."""
        unknown = set(values) - set(SUMMARY_COLUMNS)
        if unknown:
            raise TypeError(f"not summary columns: {', '.join(sorted(unknown))}")
        self.rows[file] = {column: _cell(values.get(column, "")) for column in SUMMARY_COLUMNS}
        self.rows[file]["file"] = file
        self.save()

    def add_file(self, item: CorpusFile, result=None, alignment=None, error: str = "") -> None:
        """The row of ``item`` from what aligning or transcribing it gave: ``result`` (a
        `zipa.inference.forced.FileAlignment` or a free `FileTranscript`: its duration, notes and
        fit warnings) and ``alignment`` (its phones and words), or the ``error`` that failed it."""
        row: dict[str, object] = dict(
            speaker=", ".join(dict.fromkeys(s for s, _, _ in item.speaker_spans())),
            transcript=item.transcript_name,
            error=error,
            alignment="failed" if alignment is None else "forced" if item.transcript else "free",
        )
        if result is not None:
            row.update(
                duration=round(result.duration, 3),
                fit_warnings=list(getattr(result, "warnings", [])),
                notes=list(getattr(result, "messages", [])) + list(getattr(result, "problems", [])),
            )
        if alignment is not None:
            phones = alignment.phones
            row.update(
                phones=len(phones),
                words=len(alignment.words),
                mean_confidence=sum(p.confidence for p in phones) / len(phones) if phones else "",
            )
        self.add(str(item.relative), **row)

    def save(self) -> None:
        ordered = sorted(
            self.rows.values(), key=lambda row: (self.order.get(row["file"], len(self.order)), row["file"])
        )
        with open_atomic(self.path) as f:
            writer = csv.DictWriter(f, SUMMARY_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(ordered)


def _cell(value) -> str:
    """A CSV cell: lists joined with `` | ``, floats to 4 decimals."""
    if isinstance(value, (list, tuple)):
        return " | ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
