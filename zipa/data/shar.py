"""Lhotse shar shards: write them from audio + IPA labels, and find them in a folder.

A shar folder holds numbered pairs ``cuts.NNNNNN.jsonl.gz`` (the cut manifests) and
``recording.NNNNNN.tar`` (16 kHz mono 16-bit flac), as ZIPA's IPAPack++ release does; each cut
has one supervision whose ``text`` is the IPA transcription and whose ``language`` names the
language. ZIPA's README asks users to "place all tar and json files in the same folder":
:func:`discover_shards` globs such a folder and returns the ``fields`` dict that
``CutSet.from_shar`` takes; :func:`read_shar_dir` returns the lazy ``CutSet`` directly.

:func:`write_shar` is the writer behind ``local/make_shar.py`` and the demo corpus:

- Items are :class:`ShardRecord` (id, audio as a path, an array or a lhotse ``Cut``, IPA text,
  language) or lhotse ``Cut`` objects (text and language taken from their supervisions).
  Audio is read with :func:`zipa.audio.load.load_audio` (or ``Cut.load_audio``), mixed to mono and
  resampled to 16 kHz.
- Unreadable or unusable items (missing or corrupt file, empty or non-finite audio, shorter than
  one 10 ms frame, empty text, duplicate id) are skipped, counted, logged and listed in the skip
  report (``id  source  reason``, see the layout below).
- Nothing half-written is ever visible under ``out_dir``: the run works in ``.<name>.partial``
  next to it (shards in its ``shards/`` subfolder, per-shard completion markers beside them) and
  the shard folder is renamed into place when all are done, its index (counts, hours) being
  the completion mark. Running again on a complete folder is a no-op (unless ``overwrite``); an
  interrupted run resumes: the input is cut into groups of ``shard_size`` items, shard ``k``
  holds what survives of group ``k``, and groups whose shard was finished are not redone. (A
  shard may therefore hold fewer than ``shard_size`` cuts, and a group whose items are all
  skipped leaves a gap in the numbering; readers do not mind.)

Layout: the shar folder holds the shard files and nothing else; the side files lie next to it,
as hidden files named after it::

    data/demo/train/                      cuts.NNNNNN.jsonl.gz, recording.NNNNNN.tar only
    data/demo/.train.shar_index.json      counts and hours; marks train/ complete
    data/demo/.train.skipped.tsv          the skip report (a header line when nothing was skipped)

Why beside and not inside: ``CutSet.from_shar(in_dir=DIR)`` (how ZIPA's README and lhotse's
tutorial read shar) turns *every* entry of ``DIR`` into a field named by the part of its name
before the first dot, and fails unless each field has one file per cut shard; no name escapes
(lhotse 1.33 lists ``DIR.glob("*")``: a dot-file or a hidden ``.zipa/`` subfolder becomes the
field ``''``). Why hidden: ``--train-shar-dirs /data/train/*`` (docs/hpc.md) must expand to the
shar folders only; a shell ``*`` does not match dot-files, and :func:`discover_shards` skips
hidden folders. :func:`index_path` and :func:`skipped_path` name the two files. Folders written
before this layout (``shar_index.json`` and ``skipped.tsv`` inside) are still recognised by this
module's readers; :func:`move_side_files_out` (run by :func:`write_shar` on such a complete
folder) moves their side files out.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from io import BytesIO
from itertools import islice
from pathlib import Path
from typing import Any, Union

import numpy as np

from zipa.audio.load import SAMPLING_RATE, load_audio, resample
from zipa.utils.atomic import open_atomic, write_text_atomic
from zipa.utils.tsv import tsv_rows

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

INDEX_NAME = "shar_index.json"  # the side files are ``.<folder name>.<NAME>`` next to the folder
SKIPPED_NAME = "skipped.tsv"
SHARDS_SUBDIR = "shards"  # inside the ``.<name>.partial`` work folder
MIN_SAMPLES = 160  # one 10 ms frame at 16 kHz; shorter audio gives no fbank frame
_MAX_LOGGED_SKIPS = 20

_SHARD_RE = re.compile(r"^(?P<field>[A-Za-z_][A-Za-z0-9_]*)(?:\.(?P<idx>\d+))?\.(?P<ext>jsonl\.gz|tar)$")


# ---------------------------------------------------------------------------------------------
# Items


@dataclass
class ShardRecord:
    """One utterance to write.

    ``audio`` is a file path, a 1-D/2-D array (at ``sampling_rate``, default 16 kHz) or a lhotse
    ``Cut`` (its own audio, at its own rate). ``text`` is stored as given (normalise it first).
    """

    id: str
    audio: Any
    text: str
    language: str | None = None
    sampling_rate: int | None = None
    custom: dict[str, Any] | None = None


class SkipItem(Exception):
    """Raised while preparing an item that must be skipped; the message is the reason."""


def as_record(item: Any) -> ShardRecord:
    """A :class:`ShardRecord` from a record, a lhotse ``Cut`` or a dict with the same keys."""
    if isinstance(item, ShardRecord):
        return item
    if isinstance(item, dict):
        return ShardRecord(**item)
    if hasattr(item, "supervisions") and hasattr(item, "load_audio"):  # a lhotse Cut
        texts = [s.text for s in item.supervisions if s.text]
        langs = [s.language for s in item.supervisions if s.language]
        custom = dict(item.custom) if getattr(item, "custom", None) else None
        return ShardRecord(
            id=item.id,
            audio=item,
            text=" ".join(texts),
            language=langs[0] if langs else None,
            custom=custom,
        )
    raise TypeError(f"write_shar: cannot use an item of type {type(item).__name__}")


def describe_source(record: ShardRecord) -> str:
    """Where a record's audio comes from, for the skip report."""
    audio = record.audio
    if isinstance(audio, (str, Path)):
        return str(audio)
    if isinstance(audio, _Malformed):
        return "<input line>"
    if hasattr(audio, "recording") and getattr(audio, "recording", None) is not None:
        try:
            return str(audio.recording.sources[0].source)
        except Exception:  # pragma: no cover - exotic recordings
            return f"cut {audio.id}"
    if hasattr(audio, "load_audio"):
        return f"cut {audio.id}"
    return "<array>"


def load_record_audio(record: ShardRecord) -> np.ndarray:
    """The record's audio as 16 kHz mono float32; raises :class:`SkipItem` when unusable."""
    audio = record.audio
    if isinstance(audio, _Malformed):
        raise SkipItem(f"malformed input line: {audio.message}")
    try:
        if hasattr(audio, "load_audio") and hasattr(audio, "sampling_rate"):  # a lhotse Cut
            samples = np.asarray(audio.load_audio(), dtype=np.float32)
            samples = samples.mean(axis=0) if samples.ndim == 2 else samples
            if samples.size == 0:
                raise ValueError("empty audio (0 samples)")
            if not np.isfinite(samples).all():
                raise ValueError("audio contains NaN or infinite samples")
            if audio.sampling_rate != SAMPLING_RATE:
                samples = resample(samples, audio.sampling_rate, SAMPLING_RATE)
        else:
            samples = load_audio(audio, source_rate=record.sampling_rate, name=record.id)
    except Exception as e:  # unreadable file, corrupt data, bad array: skip, do not crash
        raise SkipItem(f"unreadable audio: {_one_line(e)}") from e
    if samples.size < MIN_SAMPLES:
        raise SkipItem(f"audio too short ({samples.size} samples < {MIN_SAMPLES})")
    return samples


def record_to_cut(record: ShardRecord, require_text: bool = True):
    """A lhotse ``MonoCut`` with in-memory 16 kHz audio and one supervision covering it."""
    import soundfile as sf
    from lhotse import Recording, SupervisionSegment
    from lhotse.cut import MonoCut

    if isinstance(record.audio, _Malformed):
        raise SkipItem(f"malformed input line: {record.audio.message}")
    if not record.id or any(ch.isspace() for ch in record.id) or "/" in record.id:
        raise SkipItem(f"invalid id {record.id!r} (empty, or contains whitespace or '/')")
    text = (record.text or "").strip()
    if require_text and not text:
        raise SkipItem("empty transcription")
    samples = load_record_audio(record)
    stream = BytesIO()
    # 16-bit PCM in memory; the flac the shar writer makes from it holds exactly these values.
    sf.write(stream, quantize_pcm16(samples), SAMPLING_RATE, format="WAV", subtype="PCM_16")
    recording = Recording.from_bytes(stream.getvalue(), recording_id=record.id)
    sup = SupervisionSegment(
        id=record.id,
        recording_id=record.id,
        start=0.0,
        duration=recording.duration,
        channel=0,
        text=text,
        language=record.language,
    )
    return MonoCut(
        id=record.id,
        start=0.0,
        duration=recording.duration,
        channel=0,
        recording=recording,
        supervisions=[sup],
        custom=dict(record.custom) if record.custom else None,
    )


def quantize_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples -> int16 as libsndfile's flac encoder does it: round(x * 32768), clipped."""
    return np.clip(np.rint(samples.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass
class SharSummary:
    """What :func:`write_shar` did (or found, when the output was already complete)."""

    out_dir: Path
    written: int
    skipped: int
    num_shards: int
    duration: float  # seconds of audio written
    already_complete: bool = False
    skipped_report: Path | None = None

    def line(self) -> str:
        state = " (already complete, nothing done)" if self.already_complete else ""
        return (
            f"{self.out_dir}: written {self.written} cuts in {self.num_shards} shards "
            f"({self.duration / 3600:.3f} h), skipped {self.skipped}"
            + (f" (listed in {self.skipped_report})" if self.skipped else "")
            + state
        )


@dataclass
class _GroupResult:
    index: int
    num_items: int
    written: int
    duration: float
    skipped: list[tuple[str, str, str]] = field(default_factory=list)


def _as_dir(out_dir: PathLike) -> Path:
    """``out_dir`` as a path with a real last component (``.`` and ``..`` made absolute)."""
    path = Path(out_dir)
    return Path(os.path.abspath(path)) if path.name in ("", "..") else path


def beside(out_dir: PathLike, name: str) -> Path:
    """A side file of the shar folder ``out_dir``: ``.<folder name>.<name>`` next to it, where
    plain ``CutSet.from_shar(in_dir=...)`` does not see it."""
    folder = _as_dir(out_dir)
    return folder.parent / f".{folder.name}.{name}"


def shard_names(index: int) -> tuple[str, str]:
    """The files of shard ``index``, the recording first (publishing renames it first)."""
    return f"recording.{index:06d}.tar", f"cuts.{index:06d}.jsonl.gz"


def write_shard(
    index: int,
    items: Sequence[Any],
    to_cut: Callable[[Any], Any],
    folder: Path,
    on_item: Callable[[], None] | None = None,
) -> tuple[dict[int, float], dict[int, str]]:
    """Write the cuts ``to_cut`` makes of ``items`` (in order) as shard ``index`` into ``folder``
    (emptied first): 16 kHz flac recordings and the cuts. An item whose ``to_cut`` raises
    :class:`SkipItem` is left out. Returns ({position: seconds} of the cuts written, {position:
    why skipped}); no file is written when no cut is. ``on_item`` is called after each item."""
    from lhotse.shar import SharWriter

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    written: dict[int, float] = {}
    skipped: dict[int, str] = {}
    writer = None
    try:
        for position, item in enumerate(items):
            try:
                cut = to_cut(item)
            except SkipItem as e:
                skipped[position] = str(e)
            else:
                if writer is None:
                    writer = SharWriter(
                        str(folder), fields={"recording": "flac"}, shard_size=max(len(items), 1), shard_offset=index
                    )
                    writer.__enter__()
                writer.write(cut)
                written[position] = cut.duration
            if on_item is not None:
                on_item()
    finally:
        if writer is not None:
            writer.close()
    return written, skipped


def publish_shard(index: int, folder: Path, out_dir: Path, after_each: Callable[[], None] | None = None) -> None:
    """Rename the files of shard ``index`` that :func:`write_shard` left in ``folder`` into
    ``out_dir``, in the order of :func:`shard_names`, then remove ``folder``. ``after_each``
    runs after each rename (a test's crash point)."""
    for name in shard_names(index):
        if (folder / name).exists():
            os.replace(folder / name, out_dir / name)
            if after_each is not None:
                after_each()
    shutil.rmtree(folder)


def index_path(out_dir: PathLike) -> Path:
    """Where :func:`write_shar` puts the index of ``out_dir``: ``.<name>.shar_index.json`` next
    to it (its presence, with the folder, marks the folder complete)."""
    return beside(out_dir, INDEX_NAME)


def skipped_path(out_dir: PathLike) -> Path:
    """Where :func:`write_shar` lists the items it skipped: ``.<name>.skipped.tsv`` next to
    ``out_dir``."""
    return beside(out_dir, SKIPPED_NAME)


def _find_index(out_dir: PathLike) -> Path | None:
    """The index of a complete output: beside the folder, or inside it (older layout)."""
    folder = _as_dir(out_dir)
    if not folder.is_dir():
        return None
    for path in (index_path(folder), folder / INDEX_NAME):
        if path.is_file():
            return path
    return None


def _skip_report_of(out_dir: Path, index: Path) -> Path:
    return out_dir / SKIPPED_NAME if index.parent == out_dir else skipped_path(out_dir)


def is_complete(out_dir: PathLike) -> bool:
    """True when ``out_dir`` is a finished :func:`write_shar` output."""
    return _find_index(out_dir) is not None


def move_side_files_out(out_dir: PathLike) -> bool:
    """Move the index and skip report of a complete folder written with the older layout (both
    inside it) to their places beside it, so that plain ``CutSet.from_shar(in_dir=...)`` reads
    it. Returns whether anything moved. At every step the folder stays complete."""
    folder = _as_dir(out_dir)
    inner_index, inner_skipped = folder / INDEX_NAME, folder / SKIPPED_NAME
    if not inner_index.is_file():
        return False
    if inner_skipped.is_file():
        os.replace(inner_skipped, skipped_path(folder))
    write_text_atomic(index_path(folder), inner_index.read_text(encoding="utf-8"))
    inner_index.unlink()
    return True


def write_shar(
    items: Iterable[Any],
    out_dir: PathLike,
    shard_size: int = 1000,
    overwrite: bool = False,
    num_jobs: int = 1,
    require_text: bool = True,
    progress: bool = False,
    total: int | None = None,
    transform: Callable[[ShardRecord], ShardRecord] | None = None,
) -> SharSummary:
    """Write ``items`` as shar shards in ``out_dir`` (see the module docstring).

    ``transform`` (picklable when ``num_jobs > 1``) is applied to each record before its audio
    is read, e.g. label normalisation or G2P; raising :class:`SkipItem` in it skips the item.
    ``total`` sizes the progress bar when ``items`` has no ``len``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = _as_dir(out_dir)
    work = out_dir.parent / f".{out_dir.name}.partial"
    if is_complete(out_dir) and not overwrite:
        move_side_files_out(out_dir)
        if work.is_dir():  # left by a run interrupted just after its folder was renamed into place
            shutil.rmtree(work)
        return _summary_from_index(out_dir)
    if out_dir.exists() and not overwrite and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} exists but is not a complete shar output of this tool (no "
            f"{index_path(out_dir)}); pass overwrite=True (--overwrite) to replace it, or choose "
            "another folder"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and work.exists():
        shutil.rmtree(work)
    work.mkdir(exist_ok=True)
    _check_params(work, {"shard_size": shard_size, "require_text": require_text})
    shards = work / SHARDS_SUBDIR
    shards.mkdir(exist_ok=True)
    for path in list(work.glob("cuts.*.jsonl.gz")) + list(work.glob("recording.*.tar")):
        os.replace(path, shards / path.name)  # a partial run of the older layout: shards on top

    if total is None and hasattr(items, "__len__"):
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = _progress_bar(progress, total, out_dir.name)
    results: list[_GroupResult] = []
    logged = [0]

    def finish(res: _GroupResult) -> None:
        results.append(res)
        for cut_id, source, reason in res.skipped:
            if logged[0] < _MAX_LOGGED_SKIPS:
                logger.warning("skipped %s (%s): %s", cut_id, source, reason)
            elif logged[0] == _MAX_LOGGED_SKIPS:
                logger.warning("more items skipped; all are listed in %s", skipped_path(out_dir))
            logged[0] += 1
        if bar is not None and num_jobs > 1:
            bar.update(res.num_items)

    seen_ids: set = set()
    groups = _groups(items, shard_size, seen_ids)
    try:
        if num_jobs <= 1:
            for index, records, pre_skipped in groups:
                done = _load_marker(work, index, records, pre_skipped)
                if done is None:
                    done = _write_group(index, records, pre_skipped, work, require_text, transform, bar)
                elif bar is not None:
                    bar.update(done.num_items)
                finish(done)
        else:
            with ProcessPoolExecutor(max_workers=num_jobs) as pool:
                pending = set()
                for index, records, pre_skipped in groups:
                    done = _load_marker(work, index, records, pre_skipped)
                    if done is not None:
                        finish(done)
                        continue
                    pending.add(
                        pool.submit(_write_group, index, records, pre_skipped, work, require_text, transform, None)
                    )
                    if len(pending) >= 2 * num_jobs:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for f in finished:
                            finish(f.result())
                for f in pending:
                    finish(f.result())
    finally:
        if bar is not None:
            bar.close()

    return _finalize(work, out_dir, results, shard_size)


def _groups(
    items: Iterable[Any], shard_size: int, seen_ids: set
) -> Iterator[tuple[int, list[ShardRecord], list[tuple[str, str, str]]]]:
    """Consecutive groups of ``shard_size`` items as records; duplicate ids are pre-skipped."""
    it = iter(items)
    index = 0
    while True:
        chunk = list(islice(it, shard_size))
        if not chunk:
            return
        records, pre_skipped = [], []
        for item in chunk:
            rec = as_record(item)
            if rec.id in seen_ids:
                pre_skipped.append((rec.id, describe_source(rec), "duplicate id"))
                continue
            seen_ids.add(rec.id)
            records.append(rec)
        yield index, records, pre_skipped
        index += 1


def _write_group(
    index: int,
    records: Sequence[ShardRecord],
    pre_skipped: list[tuple[str, str, str]],
    work: Path,
    require_text: bool,
    transform: Callable[[ShardRecord], ShardRecord] | None,
    bar: Any,
) -> _GroupResult:
    """Write shard ``index`` from one group into ``work`` and leave its completion marker."""
    shards = work / SHARDS_SUBDIR
    for name in shard_names(index):
        (shards / name).unlink(missing_ok=True)  # from a run interrupted before this group's marker

    def to_cut(rec: ShardRecord):
        return record_to_cut(transform(rec) if transform is not None else rec, require_text=require_text)

    tmp = work / f".shard.{index:06d}.tmp"
    written, skipped = write_shard(index, records, to_cut, tmp, on_item=None if bar is None else lambda: bar.update(1))
    if bar is not None and pre_skipped:
        bar.update(len(pre_skipped))
    publish_shard(index, tmp, shards)
    res = _GroupResult(
        index=index, num_items=len(records) + len(pre_skipped), written=len(written), duration=sum(written.values())
    )
    res.skipped.extend(pre_skipped)
    res.skipped.extend((records[i].id, describe_source(records[i]), why) for i, why in skipped.items())
    marker = {
        "index": index,
        "num_items": res.num_items,
        "first_id": _first_id(records, pre_skipped),
        "written": res.written,
        "duration": res.duration,
        "skipped": res.skipped,
    }
    write_text_atomic(_marker_path(work, index), json.dumps(marker, ensure_ascii=False))
    return res


def _first_id(records: Sequence[ShardRecord], pre_skipped: Sequence[tuple[str, str, str]]) -> str:
    ids = [r.id for r in records] + [s[0] for s in pre_skipped]
    return min(ids) if ids else ""


def _marker_path(work: Path, index: int) -> Path:
    return work / f"shard.{index:06d}.done.json"


def _load_marker(
    work: Path, index: int, records: Sequence[ShardRecord], pre_skipped: Sequence[tuple[str, str, str]]
) -> _GroupResult | None:
    path = _marker_path(work, index)
    if not path.is_file():
        return None
    m = json.loads(path.read_text(encoding="utf-8"))
    if m["num_items"] != len(records) + len(pre_skipped) or m["first_id"] != _first_id(records, pre_skipped):
        raise RuntimeError(
            f"{work} holds an interrupted run over different input (shard {index} does not match); "
            "pass overwrite=True (--overwrite) to start again"
        )
    return _GroupResult(
        index=index,
        num_items=m["num_items"],
        written=m["written"],
        duration=m["duration"],
        skipped=[tuple(s) for s in m["skipped"]],
    )


def _check_params(work: Path, params: dict[str, Any]) -> None:
    path = work / "params.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != params:
            raise RuntimeError(
                f"{work} holds an interrupted run with other settings ({old} != {params}); "
                "pass overwrite=True (--overwrite) to start again"
            )
    else:
        write_text_atomic(path, json.dumps(params))


def _finalize(work: Path, out_dir: Path, results: list[_GroupResult], shard_size: int) -> SharSummary:
    """Write the side files beside ``out_dir`` and rename the shard folder into place.

    Order: the previous output (``overwrite``) is moved aside, the index and skip report are
    written, ``work/shards`` becomes ``out_dir``, and only then are the work folder (markers,
    parameters) and the previous output removed. An interruption before the rename leaves
    ``out_dir`` absent (so not complete, whatever index lies beside it) and the markers in place,
    so the next run only finalises again."""
    results = sorted(results, key=lambda r: r.index)
    skipped = [s for r in results for s in r.skipped]
    shards = work / SHARDS_SUBDIR
    num_shards = len(list(shards.glob("cuts.*.jsonl.gz")))
    summary = SharSummary(
        out_dir=out_dir,
        written=sum(r.written for r in results),
        skipped=len(skipped),
        num_shards=num_shards,
        duration=sum(r.duration for r in results),
        skipped_report=skipped_path(out_dir),
    )
    index = {
        "format": "lhotse-shar",
        "fields": ["recording"],
        "audio": "16 kHz mono 16-bit flac",
        "num_cuts": summary.written,
        "num_skipped": summary.skipped,
        "num_shards": num_shards,
        "shard_size": shard_size,
        "duration_seconds": round(summary.duration, 3),
        "duration_hours": round(summary.duration / 3600, 6),
    }
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old.{os.getpid()}"
        os.replace(out_dir, old)
    with open_atomic(skipped_path(out_dir)) as f:
        f.write("id\tsource\treason\n")
        for cut_id, source, reason in skipped:
            f.write(f"{_tsv(cut_id)}\t{_tsv(source)}\t{_tsv(reason)}\n")
    write_text_atomic(index_path(out_dir), json.dumps(index, indent=1) + "\n")
    os.replace(shards, out_dir)
    shutil.rmtree(work)
    if old is not None:
        shutil.rmtree(old)
    return summary


def _summary_from_index(out_dir: Path) -> SharSummary:
    path = _find_index(out_dir)
    assert path is not None, out_dir
    index = json.loads(path.read_text(encoding="utf-8"))
    return SharSummary(
        out_dir=out_dir,
        written=index["num_cuts"],
        skipped=index["num_skipped"],
        num_shards=index["num_shards"],
        duration=index["duration_seconds"],
        already_complete=True,
        skipped_report=_skip_report_of(out_dir, path),
    )


def _tsv(s: str) -> str:
    return " ".join(str(s).replace("\t", " ").split())


def _progress_bar(enabled: bool, total: int | None, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="utt", dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------
# Reading


def discover_shards(
    in_dir: PathLike, fields: Sequence[str] = ("recording",), recursive: bool | None = None
) -> dict[str, list[str]]:
    """The ``fields`` dict for ``CutSet.from_shar`` of the shards in ``in_dir``.

    Pairs every ``cuts.N.jsonl.gz`` with ``<field>.N.tar`` for each requested field, in shard
    order. ``recursive=None`` looks at ``in_dir`` itself and, only when it holds no cut shards,
    in its subfolders (corpora shipped as one folder per language). Raises
    ``FileNotFoundError`` when there are no shards, and ``ValueError`` when a field's files do
    not pair up with the cut shards.
    """
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"shar folder not found: {in_dir}")
    cuts = _find(in_dir, "cuts", "jsonl.gz", recursive=False)
    if not cuts and recursive is not False:
        cuts = _find(in_dir, "cuts", "jsonl.gz", recursive=True)
        deep = True
    else:
        deep = bool(recursive)
    if not cuts:
        raise FileNotFoundError(
            f"no shar shards in {in_dir}: expected cuts.NNNNNN.jsonl.gz with matching "
            "recording.NNNNNN.tar files (place all tar and json files in the same folder)"
        )
    out: dict[str, list[str]] = {"cuts": [str(p) for _, p in cuts]}
    for name in fields:
        ext = "jsonl.gz" if name.endswith("jsonl") else "tar"
        found = dict(_find(in_dir, name, ext, recursive=deep))
        keys = [k for k, _ in cuts]
        missing = [k for k in keys if k not in found]
        extra = sorted(set(found) - set(keys))
        if missing or extra:
            raise ValueError(
                f"{in_dir}: {len(keys)} cut shards but {len(found)} '{name}' shards; "
                + (f"no {name} file for cut shards {_fmt_keys(missing)}; " if missing else "")
                + (f"{name} files without cut shards: {_fmt_keys(extra)}" if extra else "")
            )
        out[name] = [str(found[k]) for k in keys]
    return out


def _find(root: Path, name: str, ext: str, recursive: bool) -> list[tuple[tuple[str, int], Path]]:
    """``((relative folder, shard number), path)`` of ``name[.N].ext`` files, sorted."""
    paths = root.rglob(f"{name}*.{ext}") if recursive else root.glob(f"{name}*.{ext}")
    found = []
    for p in paths:
        m = _SHARD_RE.match(p.name)
        if m is None or m.group("field") != name or m.group("ext") != ext:
            continue
        if any(part.startswith(".") for part in p.relative_to(root).parts[:-1]):
            continue  # hidden folders: a run in progress (.NAME.partial), an old copy
        idx = int(m.group("idx")) if m.group("idx") is not None else -1
        found.append(((str(p.parent.relative_to(root)), idx), p))
    return sorted(found)


def _fmt_keys(keys: Sequence[tuple[str, int]]) -> str:
    shown = [f"{d}/{i:06d}" if d != "." else f"{i:06d}" for d, i in keys[:5]]
    return ", ".join(shown) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def read_shar_dir(in_dir: PathLike, fields: Sequence[str] = ("recording",), recursive: bool | None = None, **kwargs):
    """A lazy ``CutSet`` over the shards in ``in_dir`` (``kwargs`` go to ``CutSet.from_shar``:
    ``shuffle_shards``, ``stateful_shuffle``, ``seed``, ...)."""
    from lhotse import CutSet

    return CutSet.from_shar(fields=discover_shards(in_dir, fields, recursive=recursive), **kwargs)


def count_cuts(in_dir: PathLike) -> int:
    """Number of cuts in a shar folder, from its index or by reading the cut manifests."""
    in_dir = Path(in_dir)
    index = _find_index(in_dir)
    if index is not None:
        return int(json.loads(index.read_text(encoding="utf-8"))["num_cuts"])
    n = 0
    for path in discover_shards(in_dir, fields=())["cuts"]:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            n += sum(1 for line in f if line.strip())
    return n


# ---------------------------------------------------------------------------------------------
# Labels on the way in


class LabelTransform:
    """Record transform for :func:`write_shar`: its text -> normalised IPA.

    With ``g2p_language`` the text is orthographic and goes through :func:`zipa.text.g2p.g2p` (which
    normalises); otherwise it is IPA and goes through :func:`zipa.text.ipa.normalize_ipa` (unless
    ``normalize=False``). ``default_language`` fills records without a language.
    """

    def __init__(
        self,
        g2p_language: str | None = None,
        remove_diacritics: bool = False,
        normalize: bool = True,
        default_language: str | None = None,
    ):
        self.g2p_language = g2p_language
        self.remove_diacritics = remove_diacritics
        self.normalize = normalize
        self.default_language = default_language

    def __call__(self, record: ShardRecord) -> ShardRecord:
        from dataclasses import replace

        text = record.text or ""
        if self.g2p_language:
            from zipa.text.g2p import g2p

            try:
                text = g2p(text, self.g2p_language, remove_diacritics=self.remove_diacritics)
            except Exception as e:
                raise SkipItem(f"g2p failed: {_one_line(e)}") from e
        elif self.normalize:
            from zipa.text.ipa import normalize_ipa

            text = normalize_ipa(text, remove_diacritics=self.remove_diacritics)
        elif self.remove_diacritics:
            from zipa.text.ipa import remove_diacritics

            text = remove_diacritics(text)
        return replace(record, text=text, language=record.language or self.default_language)


def read_tsv(tsv: PathLike, audio_dir: PathLike | None = None) -> Iterator[ShardRecord]:
    """Records from ``id<TAB>path<TAB>text[<TAB>language]`` lines.

    Relative paths are taken from ``audio_dir`` (default: the TSV's folder). Blank lines and
    ``#`` comments are ignored, as is a first line ``id<TAB>path...`` (a header). A line with
    fewer than three fields becomes a record without audio, which the writer skips and reports.
    """
    tsv = Path(tsv)
    base = Path(audio_dir) if audio_dir is not None else tsv.parent
    for lineno, cols in tsv_rows(tsv):
        if lineno == 1 and [c.strip().lower() for c in cols[:2]] == ["id", "path"]:
            continue
        if len(cols) < 3 or not cols[0].strip() or not cols[1].strip():
            yield ShardRecord(
                id=cols[0].strip() or f"line{lineno}",
                audio=_Malformed(f"{tsv.name}:{lineno}: expected id<TAB>path<TAB>text[<TAB>language]"),
                text="",
            )
            continue
        path = Path(cols[1].strip())
        yield ShardRecord(
            id=cols[0].strip(),
            audio=str(path if path.is_absolute() else base / path),
            text=cols[2].strip(),
            language=(cols[3].strip() or None) if len(cols) > 3 else None,
        )


class _Malformed:
    """Audio placeholder for a malformed input line: reading it fails with the message."""

    def __init__(self, message: str):
        self.message = message

    def __str__(self) -> str:
        return self.message
