"""Reference transcriptions for `zipa evaluate`: a TSV, a folder of TextGrids, or shar folders.

A :class:`Reference` is one utterance to score: its id, its audio (a file, an array, or a
loader called when the audio is needed) and its raw reference IPA, with an optional language
and speaker. Normalising the IPA and decoding the audio happen in
:mod:`zipa.evaluation.evaluate`; here the references are read and matched to audio files.

TSV (``--ref refs.tsv``)
------------------------
One utterance per line, tab-separated: ``path<TAB>ipa[<TAB>language[<TAB>speaker]]``. Blank
lines and lines starting with ``#`` are ignored. A first line whose first column is ``path``
is a header naming the columns, in any order: ``path`` and ``ipa`` (also accepted: ``text``,
``reference``, ``ref``, ``transcript``) are required, ``language`` (``lang``) and ``speaker``
(``spk``) optional, other columns ignored; for example ``path<TAB>speaker<TAB>ipa``. Without
a header the columns are positional as above. A ``path`` names the audio file: absolute,
relative to the TSV's folder, or relative to the current folder; with audio inputs on the
command line it may also be a relative path below an input folder or just a file name, with
or without its suffix (see :func:`match_references`).

TextGrids (``--ref grids/ [--tier NAME]``)
------------------------------------------
Praat TextGrids (text format, long or short, UTF-8 or UTF-16; read by
:mod:`zipa.data.textgrid`) found recursively in the folder; ``grids/sub/a.TextGrid`` is
the reference of an audio file ``sub/a.*`` (or of any ``a.*`` when that name is unique). The
reference is the non-empty labels of the interval tier named ``--tier``, in time order, joined
by spaces; without ``--tier`` a TextGrid must have exactly one interval tier.

Shar (``--ref test_shar/``)
---------------------------
A lhotse shar folder (``cuts.NNNNNN.jsonl.gz`` + ``recording.NNNNNN.tar``; see
:mod:`zipa.data.shar`): the audio and the references both come from it, each cut's
supervisions giving the text (joined), the language and the speaker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from zipa.utils.tsv import tsv_rows

PathLike = Union[str, Path]

REFERENCE_KINDS = ("tsv", "textgrid", "shar")
TSV_COLUMNS = {
    "path": "path",
    "ipa": "ipa",
    "text": "ipa",
    "reference": "ipa",
    "ref": "ipa",
    "transcript": "ipa",
    "language": "language",
    "lang": "language",
    "speaker": "speaker",
    "spk": "speaker",
}
POSITIONAL_COLUMNS = ("path", "ipa", "language", "speaker")
TEXTGRID_SUFFIX = ".textgrid"


@dataclass
class Reference:
    """One utterance to score. ``audio``: a file path, an array (at ``sampling_rate``, default
    16 kHz) or a function returning 16 kHz mono samples; ``text``: the reference IPA as written
    (normalised later); ``error``: why it cannot be scored, when that is known beforehand (no
    reference for this file, an unreadable TextGrid...)."""

    id: str
    audio: Any
    text: str | None
    language: str | None = None
    speaker: str | None = None
    sampling_rate: int | None = None
    error: str | None = None


@dataclass
class ReferenceEntry:
    """One reference as read from a TSV line or a TextGrid, before it is matched to audio.
    ``key``: the path as written in the TSV, or the TextGrid's path below its folder without
    the suffix; ``source``: where it was read (``refs.tsv:3``); ``audio``: the file it names
    (TSV only)."""

    key: str
    text: str | None
    source: str
    language: str | None = None
    speaker: str | None = None
    audio: Path | None = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# Which kind


def reference_kind(path: PathLike) -> str:
    """``"tsv"`` for a file, ``"shar"`` for a folder with shar shards, ``"textgrid"`` for a
    folder with TextGrids; ``FileNotFoundError``/``ValueError`` otherwise."""
    from zipa.data.shar import discover_shards

    path = Path(path)
    if path.is_file():
        return "tsv"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    try:
        discover_shards(path, fields=())
        return "shar"
    except FileNotFoundError:
        pass
    if any(p.suffix.lower() == TEXTGRID_SUFFIX for p in path.rglob("*") if p.is_file()):
        return "textgrid"
    raise ValueError(f"{path}: neither shar shards (cuts.NNNNNN.jsonl.gz) nor TextGrids in this folder")


# ---------------------------------------------------------------------------------------------
# TSV


def read_reference_tsv(path: PathLike) -> list[ReferenceEntry]:
    """The entries of a references TSV (layout in the module docstring). ``ValueError`` for a
    header without ``path`` and ``ipa`` columns, or a path listed twice."""
    path = Path(path)
    base = path.parent
    entries: list[ReferenceEntry] = []
    seen: dict[str, str] = {}
    columns: dict[str, int] | None = None
    first = True
    for lineno, row in tsv_rows(path):
        cells = [c.strip() for c in row]
        if first:
            first = False
            if cells[0].lower() == "path":
                columns = _header(cells, f"{path.name}:{lineno}")
                continue
        if columns is None:
            columns = {name: i for i, name in enumerate(POSITIONAL_COLUMNS)}
        value = {name: (cells[i] if i < len(cells) and cells[i] else None) for name, i in columns.items()}
        source = f"{path.name}:{lineno}"
        key = value.get("path")
        if not key:
            raise ValueError(f"{source}: no path in the first column")
        if key in seen:
            raise ValueError(f"{source}: {key} is listed twice (first on {seen[key]})")
        seen[key] = source
        entries.append(
            ReferenceEntry(
                key=key,
                text=value.get("ipa"),
                source=source,
                language=value.get("language"),
                speaker=value.get("speaker"),
                audio=_audio_path(key, base),
            )
        )
    return entries


def _header(cells: Sequence[str], source: str) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, cell in enumerate(cells):
        name = TSV_COLUMNS.get(cell.lower())
        if name is not None and name not in columns:
            columns[name] = i
    if "ipa" not in columns:
        raise ValueError(f"{source}: the header names no reference column (ipa, text, reference...)")
    return columns


def _audio_path(key: str, base: Path) -> Path:
    """A TSV path: absolute, else relative to the TSV's folder, else to the current folder."""
    path = Path(key)
    if path.is_absolute():
        return path
    if (base / path).exists() or not path.exists():
        return base / path
    return path


# ---------------------------------------------------------------------------------------------
# TextGrids


def tier_text(path: PathLike, tier: str | None = None) -> str:
    """The reference in a TextGrid: the non-empty labels of the interval tier ``tier`` (the only
    interval tier when None) joined by spaces, in time order. ``ValueError`` when the file is
    not a text TextGrid or has no such tier (`zipa.data.textgrid` reads it)."""
    from zipa.data.textgrid import read_textgrid

    intervals = read_textgrid(path).interval_tier(tier, where=str(path)).intervals
    return " ".join(label.strip() for _, _, label in sorted(intervals, key=lambda iv: iv[0]) if label.strip())


def read_textgrid_folder(folder: PathLike, tier: str | None = None) -> list[ReferenceEntry]:
    """One entry per TextGrid below ``folder`` (recursively, sorted), keyed by its path below
    the folder without the suffix; a TextGrid that cannot be read, or lacks the tier, gives an
    entry with its ``error``."""
    folder = Path(folder)
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == TEXTGRID_SUFFIX):
        key = path.relative_to(folder).with_suffix("").as_posix()
        try:
            entries.append(ReferenceEntry(key, tier_text(path, tier), str(path)))
        except (ValueError, OSError) as e:
            entries.append(ReferenceEntry(key, None, str(path), error=str(e)))
    return entries


# ---------------------------------------------------------------------------------------------
# Matching audio files


def _normal_key(key: str) -> str:
    return Path(key.replace("\\", "/")).as_posix()


def _resolved(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def match_references(
    entries: Sequence[ReferenceEntry], files: Sequence[tuple[Path, Path]], refs_name: str = "the references"
) -> tuple[list[Reference], list[ReferenceEntry]]:
    """Pair audio files ``(path, path relative to its input)`` with entries: the first of
    (1) the entry naming this very file (TSV paths), (2) the entry whose key is the relative
    path, with or without the suffix, (3) the only entry whose key's file name is the file's
    name, with or without the suffix. A file without an entry, or matching several, gets a
    :class:`Reference` with an ``error``. Returns the references (in the order of ``files``)
    and the entries no file matched."""
    by_path: dict[str, ReferenceEntry] = {}
    by_key: dict[str, ReferenceEntry] = {}
    by_name: dict[str, list[ReferenceEntry]] = {}
    for given in entries:
        if given.audio is not None:
            by_path.setdefault(_resolved(given.audio), given)
            by_path.setdefault(_resolved(Path(given.key)), given)
        key = _normal_key(given.key)
        by_key.setdefault(key, given)
        name = Path(key).name
        names = {name, Path(name).stem}
        for n in names:
            by_name.setdefault(n, []).append(given)

    ids = _unique_ids(files)
    used = set()
    refs: list[Reference] = []
    for (path, rel), cut_id in zip(files, ids):
        error: str | None = None
        entry = by_path.get(_resolved(path)) or by_key.get(rel.as_posix()) or by_key.get(rel.with_suffix("").as_posix())
        if entry is None:
            for name in (path.name, path.stem):
                found = by_name.get(name, [])
                if len(found) == 1:
                    entry = found[0]
                    break
                if len(found) > 1:
                    error = (
                        f"{path}: ambiguous reference: {name!r} matches "
                        f"{', '.join(e.source for e in found[:3])}{' ...' if len(found) > 3 else ''}"
                    )
                    break
        if entry is None:
            refs.append(Reference(cut_id, path, None, error=error or f"{path}: no reference in {refs_name}"))
            continue
        used.add(id(entry))
        refs.append(_reference(cut_id, path, entry))
    return refs, [e for e in entries if id(e) not in used]


def tsv_references(entries: Sequence[ReferenceEntry]) -> list[Reference]:
    """The references of a TSV with the audio files its paths name (no audio inputs given)."""
    return [_reference(Path(_normal_key(e.key)).with_suffix("").as_posix(), e.audio, e) for e in entries]


def _reference(cut_id: str, audio: Path | None, entry: ReferenceEntry) -> Reference:
    error = entry.error
    if error is None and not (entry.text or "").strip():
        error = f"{audio}: empty reference ({entry.source})"
    return Reference(cut_id, audio, entry.text, entry.language, entry.speaker, error=error)


def _unique_ids(files: Sequence[tuple[Path, Path]]) -> list[str]:
    """Each file's id: its relative path without the suffix, or its whole path where two
    inputs share a relative path."""
    ids = [rel.with_suffix("").as_posix() for _, rel in files]
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    return [i if counts[i] == 1 else path.with_suffix("").as_posix() for i, (path, _) in zip(ids, files)]


# ---------------------------------------------------------------------------------------------
# Shar


def shar_references(folder: PathLike) -> Iterator[Reference]:
    """The cuts of a shar folder as references, lazily: each cut's audio is read (16 kHz mono,
    :func:`zipa.data.shar.load_record_audio`) only when its reference is decoded."""
    from zipa.data.shar import as_record, read_shar_dir

    for cut in read_shar_dir(folder):
        record = as_record(cut)
        speakers = [s.speaker for s in cut.supervisions if getattr(s, "speaker", None)]
        yield Reference(
            record.id,
            _shar_loader(record),
            record.text,
            record.language,
            speakers[0] if speakers else None,
            error=None if (record.text or "").strip() else f"{record.id}: no reference text in the shar",
        )


def _shar_loader(record) -> Callable[[], Any]:
    from zipa.data.shar import load_record_audio

    return lambda: load_record_audio(record)
