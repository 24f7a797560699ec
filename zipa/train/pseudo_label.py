"""Pseudo-labelling for noisy-student training: unlabelled audio -> lhotse shar labelled by a model.

What ``zipformer_crctc/pseudo_label.py`` (and its transducer twin) runs. A model decodes the
utterances of lhotse shar folders (cuts with recordings) or of audio files, and each one that
passes the filters is written to ``out_dir`` as a shar cut whose one supervision holds the
hypothesis: the folder that ``--unsup-shar-dirs`` (with ``--use-unsup-cr-ctc``) and
``--train-shar-dirs`` of the training recipes read, and ``CutSet.from_shar(in_dir=out_dir)`` too.

Decoding goes through the one audio->phones path, the :class:`~zipa.inference.transcriber.Transcriber`
(``features`` then ``token_spans``: greedy or beam, the CTC head when the model has one, else the
transducer). A shard's utterances are sorted longest first and decoded in zero-padded batches of
at most ``max_duration`` seconds of padded audio and/or ``batch_size`` utterances.

What each kept cut holds:

- its audio as 16 kHz mono 16-bit flac (``fields={"recording": "flac"}``, read, mixed and
  resampled as :func:`zipa.data.shar.write_shar` does);
- one supervision over the whole cut whose ``text`` is the hypothesis as ``zipa transcribe``
  prints it: IPA, words separated by single spaces, the form training labels take
  (:mod:`zipa.data.labels`); its ``language`` and ``speaker`` are copied from the input
  supervisions when they have one (``language`` else from ``--language``);
- ``supervision.custom``:

  - ``confidence``: the mean, over the tokens of the hypothesis (word boundaries included), of
    each token's confidence: for CTC its posterior averaged over the frames of its run in the
    greedy path, which are the frames where it is the most probable token (with beam search:
    the frames of the best alignment of the hypothesis); for transducers the joiner's
    probability of the token where it was emitted (`zipa.decoding.alignment`). In (0, 1].
  - ``mean_log_prob``: the mean of the natural log of the same token confidences (<= 0): the
    log of their geometric mean, which a few unsure tokens pull down more.
  - ``tokens_per_second``: phone tokens (IPA characters; word boundaries not counted) per
    second of audio.

Filters: an utterance is dropped for the first of these reasons that applies, and counted under
it: ``unreadable`` (its audio cannot be read), ``too_short`` (under 0.1 s, too short for the
encoder), ``too_long`` (over ``max_utt_duration``; not decoded: segment long recordings first),
``empty`` (no phone token), ``too_few_tokens_per_second`` / ``too_many_tokens_per_second``
(outside [``min_tokens_per_second``, ``max_tokens_per_second``]), ``low_confidence`` (under
``min_confidence``), ``not_writable`` (refused by the shar writer, e.g. an id with ``/``).

Shards, resuming, ranks: the input is cut into jobs, one per output shard: each shard of the
``--shar-dirs`` folders in order, then the audio files in groups of ``shard_size``. Job ``k``
writes ``cuts.{k:06d}.jsonl.gz`` and ``recording.{k:06d}.tar`` into ``out_dir`` (nothing when
all its utterances are dropped); it is written in a temporary folder, renamed into place, and
then a record of the finished shard is left. A run restarted with the same settings skips the
shards with a record and redoes the others, so a killed run, restarted, ends with the output an
uninterrupted run writes. With ``world_size`` ranks, rank ``r`` takes the jobs ``k`` with
``k % world_size == r`` (on CUDA, one GPU each: ``cuda:<local rank>``); the ranks need no
communication, and whichever finishes last writes the summary.

Layout: ``out_dir`` holds the shard files and nothing else (``CutSet.from_shar(in_dir=...)``
turns every entry of a folder into a field); the rest lies beside it, as hidden files named
after it, as for :func:`zipa.data.shar.write_shar`::

    data/pseudo/                      cuts.NNNNNN.jsonl.gz, recording.NNNNNN.tar only
    data/.pseudo.summary.json         kept / dropped per reason, cuts and hours; marks the run complete
    data/.pseudo.dropped.tsv          id, reason, detail of every dropped utterance
    data/.pseudo.pseudo_label/        the run's state: params.json, done/shard.NNNNNN.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from zipa.audio.files import find_audio
from zipa.audio.load import SAMPLING_RATE
from zipa.data.shar import (
    ShardRecord,
    SkipItem,
    as_record,
    beside,
    discover_shards,
    load_record_audio,
    publish_shard,
    record_to_cut,
    shard_names,
    write_shard,
)
from zipa.decoding.options import DECODING_METHODS
from zipa.decoding.timestamps import WORD_BOUNDARY
from zipa.inference.long_audio import audio_info
from zipa.inference.transcriber import Transcriber
from zipa.train.distributed import DistInfo, barrier, launched_by_torchrun, run_distributed
from zipa.utils.atomic import open_atomic, write_text_atomic
from zipa.utils.progress import DEFAULT_INTERVAL, PROGRESS_MODES, Progress

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
MIN_SECONDS = 0.1  # shorter audio gives the encoder too few frames
DEFAULT_MAX_DURATION = 600.0  # seconds of padded audio per batch when neither limit is given
DROP_REASONS = (
    "unreadable",
    "too_short",
    "too_long",
    "empty",
    "too_few_tokens_per_second",
    "too_many_tokens_per_second",
    "low_confidence",
    "not_writable",
)
# Test hook: set to N, the process dies (exit status 86) in the middle of publishing its
# (N+1)-th shard, after the first of its files was renamed into place.
CRASH_ENV = "ZIPA_PSEUDO_LABEL_CRASH_AFTER"
MASTER_PORT = 12364  # spawned ranks' rendezvous, apart from training's default
_SHAR_READER_KEYS = ("shard_origin", "shar_epoch")  # what lhotse's shar reader adds to cut.custom


class PseudoLabelError(ValueError):
    """A problem with the inputs, the output folder or the settings (reported, no traceback)."""


# ---------------------------------------------------------------------------------------------
# Labels and filters


@dataclass(frozen=True)
class PseudoLabel:
    """A hypothesis with what the filters look at (see the module docstring)."""

    text: str
    num_tokens: int  # phone tokens: word boundaries not counted
    confidence: float
    mean_log_prob: float
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.num_tokens / self.seconds if self.seconds > 0 else 0.0

    def custom(self) -> dict[str, float]:
        """What goes into ``supervision.custom``."""
        return {
            "confidence": round(self.confidence, 6),
            "mean_log_prob": round(self.mean_log_prob, 6),
            "tokens_per_second": round(self.tokens_per_second, 4),
        }

    def detail(self) -> str:
        """One line for the dropped list."""
        return (
            f"{self.num_tokens} tokens in {self.seconds:.2f} s ({self.tokens_per_second:.2f}/s), "
            f"confidence {self.confidence:.4f}"
        )


def make_label(spans: Sequence, transcriber: Transcriber, seconds: float) -> PseudoLabel:
    """The `PseudoLabel` of one utterance's token spans (`Transcriber.token_spans`)."""
    text = " ".join(transcriber.tokenizer.decode([s.token for s in spans]).split())
    phones = sum(1 for s in spans if transcriber.token_label(s.token) != WORD_BOUNDARY)
    confidences = [float(s.confidence) for s in spans]
    if not confidences:
        return PseudoLabel(text, 0, 0.0, 0.0, seconds)
    confidence = sum(confidences) / len(confidences)
    mean_log_prob = sum(math.log(max(c, 1e-30)) for c in confidences) / len(confidences)
    return PseudoLabel(text, phones, confidence, mean_log_prob, seconds)


@dataclass(frozen=True)
class Filters:
    """Which utterances are kept (see the module docstring for the reasons and their order)."""

    min_confidence: float = 0.5
    min_tokens_per_second: float = 2.0
    max_tokens_per_second: float = 25.0
    max_utt_duration: float | None = 60.0

    def duration_reason(self, seconds: float) -> str | None:
        if seconds < MIN_SECONDS:
            return "too_short"
        if self.max_utt_duration is not None and seconds > self.max_utt_duration:
            return "too_long"
        return None

    def label_reason(self, label: PseudoLabel) -> str | None:
        if label.num_tokens == 0:
            return "empty"
        if label.tokens_per_second < self.min_tokens_per_second:
            return "too_few_tokens_per_second"
        if label.tokens_per_second > self.max_tokens_per_second:
            return "too_many_tokens_per_second"
        if label.confidence < self.min_confidence:
            return "low_confidence"
        return None


@dataclass(frozen=True)
class Settings:
    """How a run decodes, filters and reports; `params` are what a resumed run must repeat."""

    out_dir: Path
    decoding: str = "greedy"
    beam: int = 4
    max_duration: float | None = None
    batch_size: int | None = None
    filters: Filters = Filters()
    language: str | None = None
    progress: str = "auto"
    progress_interval: float = DEFAULT_INTERVAL

    def __post_init__(self):
        object.__setattr__(self, "out_dir", Path(os.path.abspath(self.out_dir)))
        if self.decoding not in DECODING_METHODS:
            raise PseudoLabelError(f"decoding must be one of {', '.join(DECODING_METHODS)}, got {self.decoding!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise PseudoLabelError(f"batch size must be at least 1, got {self.batch_size}")
        if self.max_duration is not None and not self.max_duration > 0:
            raise PseudoLabelError(f"max duration must be positive, got {self.max_duration}")
        if self.progress not in PROGRESS_MODES:
            raise PseudoLabelError(f"progress must be one of {', '.join(PROGRESS_MODES)}, got {self.progress!r}")

    def params(self) -> dict:
        return {
            "decoding": self.decoding,
            "beam": self.beam if self.decoding == "beam" else None,
            "max_duration": self.max_duration,
            "batch_size": self.batch_size,
            "filters": dataclasses.asdict(self.filters),
            "language": self.language,
        }


# ---------------------------------------------------------------------------------------------
# Jobs: one per output shard


@dataclass(frozen=True)
class Job:
    """Output shard ``index``: an input shar shard (``cuts`` + ``recording``) or audio files
    (``files``: (path, cut id) pairs)."""

    index: int
    cuts: str | None = None
    recording: str | None = None
    files: tuple[tuple[str, str], ...] = ()

    @property
    def source(self) -> str:
        """What the job reads, in one line (stored with its record; checked on resume)."""
        if self.cuts is not None:
            return f"{self.cuts} + {self.recording}"
        digest = hashlib.sha1("\n".join(f"{p}\t{i}" for p, i in self.files).encode()).hexdigest()[:12]
        return f"{len(self.files)} audio files {self.files[0][0]} .. {self.files[-1][0]} ({digest})"

    def items(self, language: str | None) -> list[tuple[ShardRecord, float | None]]:
        """(record, seconds) of the job's utterances in input order; the seconds come from the
        cut manifest or the file header (None when the header cannot be read)."""
        if self.cuts is not None:
            from lhotse import CutSet

            cuts = CutSet.from_shar(fields={"cuts": [self.cuts], "recording": [self.recording]})
            items = []
            for cut in cuts:
                record = as_record(cut)
                custom = {k: v for k, v in (record.custom or {}).items() if k not in _SHAR_READER_KEYS} or None
                record = dataclasses.replace(record, language=record.language or language, custom=custom)
                items.append((record, cut.duration))
            return items
        items = []
        for path, cut_id in self.files:
            try:
                seconds: float | None = audio_info(Path(path)).duration
            except (ValueError, OSError):
                seconds = None
            items.append((ShardRecord(cut_id, path, "", language, custom={"source": path}), seconds))
        return items


def audio_cut_id(relative: PathLike) -> str:
    """The cut id of an audio file: its path below its input folder, without suffix, folders
    joined by ``__`` and whitespace replaced by ``_`` (``a b/c.wav`` -> ``a_b__c``)."""
    return "_".join("__".join(Path(relative).with_suffix("").parts).split())


def plan_jobs(
    shar_dirs: Sequence[PathLike] = (), audio_files: Sequence[tuple[PathLike, PathLike]] = (), shard_size: int = 1000
) -> list[Job]:
    """The jobs of a run: each shard of each shar folder (`discover_shards` order), then the
    audio files ((path, path relative to its input) pairs) in groups of ``shard_size``."""
    if shard_size < 1:
        raise PseudoLabelError(f"shard size must be at least 1, got {shard_size}")
    jobs: list[Job] = []
    for folder in shar_dirs:
        try:
            fields = discover_shards(folder, ("recording",))
        except (FileNotFoundError, ValueError) as e:
            raise PseudoLabelError(str(e)) from None
        for cuts, recording in zip(fields["cuts"], fields["recording"]):
            jobs.append(Job(len(jobs), cuts=cuts, recording=recording))
    files: list[tuple[str, str]] = []
    seen: dict[str, PathLike] = {}
    for path, relative in audio_files:
        cut_id = audio_cut_id(relative)
        if cut_id in seen:
            raise PseudoLabelError(f"{seen[cut_id]} and {path} would both be cut {cut_id!r}: rename one")
        seen[cut_id] = path
        files.append((str(path), cut_id))
    for start in range(0, len(files), shard_size):
        jobs.append(Job(len(jobs), files=tuple(files[start : start + shard_size])))
    return jobs


def plan_batches(
    seconds: Sequence[float], max_duration: float | None = None, batch_size: int | None = None
) -> list[list[int]]:
    """Positions in ``seconds`` grouped into batches: longest first (ties in input order), a
    batch closed when one more utterance would make its padded length (count x longest) exceed
    ``max_duration`` or its count exceed ``batch_size``. An utterance longer than
    ``max_duration`` gets a batch of its own. Neither limit: ``DEFAULT_MAX_DURATION``."""
    if max_duration is None and batch_size is None:
        max_duration = DEFAULT_MAX_DURATION
    batches: list[list[int]] = []
    for i in sorted(range(len(seconds)), key=lambda i: (-seconds[i], i)):
        if batches:
            batch = batches[-1]
            fits = batch_size is None or len(batch) < batch_size
            fits = fits and (max_duration is None or (len(batch) + 1) * seconds[batch[0]] <= max_duration)
            if fits:
                batch.append(i)
                continue
        batches.append([i])
    return batches


# ---------------------------------------------------------------------------------------------
# Layout


def work_dir(out_dir: PathLike) -> Path:
    """The run's state beside ``out_dir``: ``params.json``, ``done/``, ``tmp/``."""
    return beside(out_dir, "pseudo_label")


def summary_path(out_dir: PathLike) -> Path:
    return beside(out_dir, "summary.json")


def dropped_path(out_dir: PathLike) -> Path:
    return beside(out_dir, "dropped.tsv")


def _record_path(out_dir: Path, index: int) -> Path:
    return work_dir(out_dir) / "done" / f"shard.{index:06d}.json"


def _is_shard_file(name: str) -> bool:
    field, _, rest = name.partition(".")
    return field in ("cuts", "recording") and rest.endswith((".jsonl.gz", ".tar"))


def run_params(settings: Settings, jobs: Sequence[Job], model: str) -> dict:
    """What a resumed run must repeat: the model, the inputs and the settings."""
    inputs = hashlib.sha1("\n".join(job.source for job in jobs).encode()).hexdigest()
    params = {"model": model, "num_shards": len(jobs), "inputs_sha1": inputs, **settings.params()}
    return json.loads(json.dumps(params))


def prepare(out_dir: PathLike, params: dict, overwrite: bool = False) -> None:
    """Make ``out_dir`` ready: new, or the output of an interrupted or finished run with the
    same ``params`` (then resumed), or replaced (``overwrite``). Anything else is refused."""
    out_dir = Path(os.path.abspath(out_dir))
    work = work_dir(out_dir)
    saved = work / "params.json"
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    foreign = [name for name in entries if not _is_shard_file(name)]
    if foreign:
        raise PseudoLabelError(
            f"{out_dir} holds files that are not shar shards ({', '.join(foreign[:5])}); choose another --out-dir"
        )
    if overwrite:
        for name in entries:
            (out_dir / name).unlink()
        shutil.rmtree(work, ignore_errors=True)
        for path in (summary_path(out_dir), dropped_path(out_dir)):
            path.unlink(missing_ok=True)
    elif saved.is_file():
        old = json.loads(saved.read_text(encoding="utf-8"))
        if old != params:
            changed = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
            raise PseudoLabelError(
                f"{out_dir} holds a run with other settings ({', '.join(changed)} differ): run with the "
                "same settings to resume it, or pass --overwrite to start again"
            )
    elif entries:
        raise PseudoLabelError(
            f"{out_dir} holds shards this command did not write; pass --overwrite to "
            "replace them, or choose another --out-dir"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (work / "done").mkdir(parents=True, exist_ok=True)
    if not saved.is_file():
        write_text_atomic(saved, json.dumps(params, indent=1, sort_keys=True) + "\n")


def _finished(out_dir: Path, job: Job) -> dict | None:
    """The record of a finished job whose files are in place, else None."""
    path = _record_path(out_dir, job.index)
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if record["source"] != job.source:
        raise PseudoLabelError(
            f"shard {job.index} of {out_dir} was made from {record['source']}, not from "
            f"{job.source}: pass --overwrite to start again"
        )
    if record["kept"] and not all((out_dir / name).is_file() for name in shard_names(job.index)):
        logger.warning(
            "shard %d of %s is recorded as done but its files are missing: doing it again", job.index, out_dir
        )
        return None
    return record


# ---------------------------------------------------------------------------------------------
# Decoding and writing one shard


def label_job(job: Job, transcriber: Transcriber, settings: Settings, progress: Progress | None = None) -> dict:
    """Decode job ``job``, write its shard into ``settings.out_dir`` and record it; returns the
    record (kept count and seconds, the dropped utterances with reasons)."""
    items = job.items(settings.language)
    filters = settings.filters
    labels: dict[int, PseudoLabel] = {}
    dropped: dict[int, tuple[str, str]] = {}
    todo: list[int] = []
    lengths: list[float] = []  # the seconds of each of `todo`
    for i, (_, seconds) in enumerate(items):
        if seconds is None:
            dropped[i] = ("unreadable", "cannot read its header")
        elif (reason := filters.duration_reason(seconds)) is None:
            todo.append(i)
            lengths.append(seconds)
        else:
            dropped[i] = (reason, f"{seconds:.3f} s")
    for batch in plan_batches(lengths, settings.max_duration, settings.batch_size):
        positions, audio = [], []
        for i in (todo[b] for b in batch):
            try:
                samples = load_record_audio(items[i][0])
            except SkipItem as e:
                dropped[i] = ("unreadable", str(e))
                continue
            if samples.size < MIN_SECONDS * SAMPLING_RATE:
                dropped[i] = ("too_short", f"{samples.size / SAMPLING_RATE:.3f} s")
                continue
            positions.append(i)
            audio.append(samples)
        if audio:
            feats, feat_lens = transcriber.features(audio)
            spans = transcriber.token_spans(feats, feat_lens, decoding=settings.decoding, beam=settings.beam)
            for i, samples, row in zip(positions, audio, spans):
                label = make_label(row, transcriber, samples.size / SAMPLING_RATE)
                reason = filters.label_reason(label)
                if reason is None:
                    labels[i] = label
                else:
                    dropped[i] = (reason, label.detail())
        if progress is not None:
            progress.advance(sum(lengths[b] for b in batch))
    kept, kept_seconds = _write_shard(job.index, items, labels, dropped, settings.out_dir)
    record = {
        "index": job.index,
        "source": job.source,
        "num_items": len(items),
        "kept": kept,
        "kept_seconds": round(kept_seconds, 3),
        "dropped": [
            [items[i][0].id, reason, round(items[i][1] or 0.0, 3), detail]
            for i, (reason, detail) in sorted(dropped.items())
        ],
    }
    write_text_atomic(_record_path(settings.out_dir, job.index), json.dumps(record, ensure_ascii=False) + "\n")
    return record


def _output_cut(record: ShardRecord, label: PseudoLabel):
    """The cut written for ``record``: 16 kHz mono audio, one supervision with the label."""
    cut = record_to_cut(dataclasses.replace(record, text=label.text))
    speakers = [s.speaker for s in getattr(record.audio, "supervisions", None) or [] if s.speaker]
    supervision = dataclasses.replace(
        cut.supervisions[0], custom=label.custom(), speaker=speakers[0] if speakers else None
    )
    cut.supervisions = [supervision]
    return cut


def _write_shard(
    index: int,
    items: list[tuple[ShardRecord, float | None]],
    labels: dict[int, PseudoLabel],
    dropped: dict[int, tuple[str, str]],
    out_dir: Path,
) -> tuple[int, float]:
    """Write the labelled items (in input order) as shard ``index`` in a temporary folder, then
    rename its files into ``out_dir``. Returns (cuts written, their seconds)."""
    for name in shard_names(index):
        (out_dir / name).unlink(missing_ok=True)  # left by a run killed while publishing this shard
    labelled = sorted(labels)
    tmp = work_dir(out_dir) / "tmp" / f"shard.{index:06d}"
    written, skipped = write_shard(index, labelled, lambda i: _output_cut(items[i][0], labels[i]), tmp)
    for position, why in skipped.items():
        dropped[labelled[position]] = ("not_writable", why)
    publish_shard(index, tmp, out_dir, after_each=_crash_point)
    if written:
        _count_published()
    return len(written), sum(items[labelled[position]][1] or 0.0 for position in written)


_published = [0]


def _count_published() -> None:
    _published[0] += 1


def _crash_point() -> None:
    limit = os.environ.get(CRASH_ENV)
    if limit is not None and _published[0] >= int(limit):
        os._exit(86)


# ---------------------------------------------------------------------------------------------
# A rank's share, and the summary


def label_jobs(
    jobs: Sequence[Job], transcriber: Transcriber, settings: Settings, rank: int = 0, world_size: int = 1
) -> int:
    """Do this rank's unfinished jobs (``index % world_size == rank``); returns how many."""
    mine = [job for job in jobs if job.index % world_size == rank]
    todo = [job for job in mine if _finished(settings.out_dir, job) is None]
    who = f"rank {rank}: " if world_size > 1 else ""
    if len(todo) < len(mine):
        logger.info("%s%d of %d shards already done", who, len(mine) - len(todo), len(mine))
    mode = settings.progress if rank == 0 else ("log" if settings.progress == "log" else "none")
    desc = f"pseudo-labelling{f' (rank {rank})' if world_size > 1 else ''}"
    with Progress(len(todo), mode, interval=settings.progress_interval, desc=desc, unit="shard") as progress:
        for job in todo:
            record = label_job(job, transcriber, settings, progress)
            progress.file_done()
            reasons = Counter(d[1] for d in record["dropped"])
            progress.write(
                f"{who}shard {job.index}: kept {record['kept']} of {record['num_items']}"
                + "".join(f", {reason} {n}" for reason, n in sorted(reasons.items()))
            )
    return len(todo)


def summarise(out_dir: PathLike, jobs: Sequence[Job], params: dict) -> dict | None:
    """When every job is finished: write the summary and the dropped list beside ``out_dir``
    and return the summary; else None."""
    out_dir = Path(os.path.abspath(out_dir))
    finished = [_finished(out_dir, job) for job in jobs]
    records = [r for r in finished if r is not None]
    if len(records) < len(finished):
        return None
    cuts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for record in records:
        cuts["kept"] += record["kept"]
        seconds["kept"] += record["kept_seconds"]
        for _, reason, duration, _ in record["dropped"]:
            cuts[reason] += 1
            seconds[reason] += duration
    dropped = [r for r in DROP_REASONS if cuts[r]]
    summary = {
        "out_dir": str(out_dir),
        "shards": len(jobs),
        "shards_written": sum(1 for r in records if r["kept"]),
        "kept": {"cuts": cuts["kept"], "hours": round(seconds["kept"] / 3600, 6)},
        "dropped": {
            "cuts": sum(cuts[r] for r in dropped),
            "hours": round(sum(seconds[r] for r in dropped) / 3600, 6),
            "by_reason": {r: {"cuts": cuts[r], "hours": round(seconds[r] / 3600, 6)} for r in dropped},
        },
        "settings": params,
    }
    with open_atomic(dropped_path(out_dir)) as f:
        f.write("id\treason\tdetail\n")
        for record in records:
            for cut_id, reason, _, detail in record["dropped"]:
                f.write(f"{cut_id}\t{reason}\t{' '.join(str(detail).split())}\n")
    write_text_atomic(summary_path(out_dir), json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return summary


def summary_lines(summary: dict) -> list[str]:
    """The summary for people: kept, dropped and why, with hours."""
    kept, dropped = summary["kept"], summary["dropped"]
    lines = [
        f"kept {kept['cuts']} cuts ({kept['hours']:.3f} h) in {summary['shards_written']} shards of "
        f"{summary['out_dir']}",
        f"dropped {dropped['cuts']} cuts ({dropped['hours']:.3f} h)"
        + (f", listed in {dropped_path(summary['out_dir'])}" if dropped["cuts"] else ""),
    ]
    lines += [f"  {reason}: {v['cuts']} cuts ({v['hours']:.3f} h)" for reason, v in dropped["by_reason"].items()]
    return lines


def pseudo_label(
    jobs: Sequence[Job], transcriber: Transcriber, settings: Settings, model: str = "", overwrite: bool = False
) -> dict:
    """The whole run in this process: prepare ``settings.out_dir``, do the unfinished jobs,
    write and return the summary. ``model`` names the model in the resume check."""
    params = run_params(settings, jobs, model)
    prepare(settings.out_dir, params, overwrite)
    label_jobs(jobs, transcriber, settings)
    summary = summarise(settings.out_dir, jobs, params)
    assert summary is not None
    return summary


# ---------------------------------------------------------------------------------------------
# The command (zipformer_crctc/pseudo_label.py)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from zipa.model.io import default_device
    from zipa.train.args import add_checkpoint_selection_arguments

    group = parser.add_argument_group("pseudo-labelling")
    add = group.add_argument
    add("--shar-dirs", nargs="+", default=[], help="lhotse shar folders of unlabelled cuts with recordings")
    add("--audio-dirs", nargs="+", default=[], help="audio folders (searched recursively) or files")
    add("--shard-size", type=int, default=1000, help="audio files per output shard (--audio-dirs)")
    add("--out-dir", type=Path, required=True, help="the output shar folder (summary and state beside it)")
    add("--language", default=None, help="language of cuts whose input supervision names none")
    add("--decoding", choices=DECODING_METHODS, default="greedy", help="greedy, or beam search")
    add("--beam-size", type=int, default=4)
    add(
        "--max-duration",
        type=float,
        default=None,
        help=f"seconds of padded audio per batch (default {DEFAULT_MAX_DURATION:g} unless --batch-size)",
    )
    add("--batch-size", type=int, default=None, help="utterances per batch")
    add(
        "--min-confidence",
        type=float,
        default=Filters.min_confidence,
        help="drop utterances whose mean token confidence is lower",
    )
    add("--min-tokens-per-second", type=float, default=Filters.min_tokens_per_second)
    add("--max-tokens-per-second", type=float, default=Filters.max_tokens_per_second)
    add(
        "--max-utt-duration",
        type=float,
        default=Filters.max_utt_duration,
        help="drop (without decoding) utterances longer than this many seconds",
    )
    add("--device", default=str(default_device()), help="cuda or cpu (default: cuda when available)")
    add("--world-size", type=int, default=1, help="processes to spawn, one GPU each on CUDA (torchrun sets its own)")
    add("--bpe-model", default=None, help="tokenizer (default: the packaged one)")
    add("--overwrite", action="store_true", help="replace an existing output instead of resuming it")
    add("--progress", choices=PROGRESS_MODES, default="auto", help="a bar on a terminal, log lines otherwise")
    add("--progress-interval", type=float, default=DEFAULT_INTERVAL, help="seconds between progress log lines")
    add_checkpoint_selection_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> Settings:
    filters = Filters(
        args.min_confidence, args.min_tokens_per_second, args.max_tokens_per_second, args.max_utt_duration
    )
    return Settings(
        args.out_dir,
        args.decoding,
        args.beam_size,
        args.max_duration,
        args.batch_size,
        filters,
        args.language,
        args.progress,
        args.progress_interval,
    )


def model_name(args: argparse.Namespace) -> str:
    """The model in the resume check: --model-path as given, or the checkpoint selection."""
    if args.model_path is not None:
        return str(args.model_path)
    selection = f"iter {args.iter}" if args.iter > 0 else f"epoch {args.epoch}"
    return f"{args.exp_dir} {selection} avg {args.avg}" + (" averaged-model" if args.use_averaged_model else "")


def resolve_model_flags(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with --model-path as a checkpoint file (a folder, a name of `zipa models` or a
    Hub repo id resolved; Hub files fetched into the cache); PseudoLabelError when the flags
    choose no model."""
    from zipa.hub.pretrained import resolve_model

    if args.model_path is None:
        if args.iter <= 0 and args.epoch <= 0:
            raise PseudoLabelError("give --model-path, or --exp-dir with --iter or --epoch")
        return args
    try:
        path = resolve_model(args.model_path)
    except FileNotFoundError as e:
        raise PseudoLabelError(str(e)) from None
    return argparse.Namespace(**{**vars(args), "model_path": path})


def load_transcriber(args: argparse.Namespace, device: str) -> Transcriber:
    """The model the checkpoint-selection flags choose (after `resolve_model_flags`) on ``device``."""
    from zipa.text.tokenizer import Tokenizer, default_bpe_model_path
    from zipa.train.args import decoding_overrides, load_selected_model

    model, _ = load_selected_model(args, device=device, **decoding_overrides(args))
    return Transcriber(model, Tokenizer.from_file(args.bpe_model or default_bpe_model_path()), device)


def rank_device(device: str, local_rank: int, world_size: int) -> str:
    """``cuda`` -> ``cuda:<local rank>`` when several ranks share a machine; else as given."""
    if world_size > 1 and device == "cuda":
        return f"cuda:{local_rank}"
    return device


def _label_rank(args: argparse.Namespace, jobs: list[Job], params: dict, prepared: bool, info: DistInfo) -> None:
    """One rank's work. ``prepared``: the output folder is ready (a single process or spawned
    ranks: the parent prepared it); else (torchrun) rank 0 prepares it while the others wait."""
    if not logging.getLogger().handlers:  # a spawned process starts without the parent's logging
        _setup_logging()
    if not prepared:
        if info.is_main:
            args = resolve_model_flags(args)
            prepare(args.out_dir, params, args.overwrite)
        barrier()
        if not info.is_main:
            args = resolve_model_flags(args)  # found in the cache rank 0 filled
    device = rank_device(args.device, info.local_rank, info.world_size)
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(torch.device(device))
    settings = settings_from_args(args)
    label_jobs(jobs, load_transcriber(args, device), settings, info.rank, info.world_size)
    summarise(settings.out_dir, jobs, params)


def run(args: argparse.Namespace) -> dict | None:
    """Plan, prepare, decode on every rank (`zipa.train.distributed.run_distributed`: this
    process, --world-size spawned ones, or torchrun's); returns the summary (None on a torchrun
    rank that did not finish last)."""
    if not args.shar_dirs and not args.audio_dirs:
        raise PseudoLabelError("nothing to decode: give --shar-dirs and/or --audio-dirs")
    out_dir = Path(os.path.abspath(args.out_dir))
    if any(Path(os.path.abspath(d)) == out_dir for d in args.shar_dirs):
        raise PseudoLabelError(f"--out-dir {args.out_dir} is one of the --shar-dirs")
    audio_files: list = []
    if args.audio_dirs:
        audio_files, errors = find_audio(args.audio_dirs)
        if errors:
            raise PseudoLabelError("; ".join(errors))
    jobs = plan_jobs(args.shar_dirs, audio_files, args.shard_size)
    params = run_params(settings_from_args(args), jobs, model_name(args))
    prepared = not launched_by_torchrun()
    if prepared:  # here, so that a refused output folder is one error line, not a spawned rank's traceback
        args = resolve_model_flags(args)
        prepare(out_dir, params, args.overwrite)
    run_distributed(
        functools.partial(_label_rank, args, jobs, params, prepared), args.world_size, master_port=MASTER_PORT
    )
    path = summary_path(out_dir)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


# ZIPA's pseudo-labelling scripts per recipe: their --decoding-method and --bpe-model defaults,
# and which of their decoding methods is --decoding greedy or beam here.
ORIGINAL_SCRIPTS = {
    "ctc": dict(method="ctc-decoding", bpe_model="ipa_simplified/unigram_127.model"),
    "transducer": dict(method="greedy_search", bpe_model="data/lang_bpe_500/bpe.model"),
}
DECODING_OF_METHOD = {
    "ctc-decoding": "greedy",
    "ctc-greedy-search": "greedy",
    "greedy_search": "greedy",
    "prefix-beam-search": "beam",
    "modified_beam_search": "beam",
}


def get_parser(description: str, recipe: str = "ctc") -> argparse.ArgumentParser:
    """The flags above, plus those of ZIPA's pseudo-labelling script for `recipe` ("ctc" or
    "transducer"): its model flags (what the weights cannot show is taken from them), its
    --decoding-method, and its k2, LM and data-module flags (`zipa.train.compat`)."""
    from zipa.train.args import BPE_MODEL_HELP, add_model_arguments
    from zipa.train.compat import (
        CTC_DECODING_FLAGS,
        PSEUDO_LABEL_DATA_FLAGS,
        TRANSDUCER_DECODING_FLAGS,
        add_foreign_flags,
    )

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(parser)
    add_model_arguments(parser, from_checkpoint=True)
    original = ORIGINAL_SCRIPTS[recipe]
    parser.add_argument(
        "--decoding-method",
        default=original["method"],
        help=f"ZIPA's name for --decoding: {', '.join(DECODING_OF_METHOD)}",
    )
    decoding = CTC_DECODING_FLAGS if recipe == "ctc" else TRANSDUCER_DECODING_FLAGS
    add_foreign_flags(parser, [*decoding, *PSEUDO_LABEL_DATA_FLAGS], "original flags")
    parser.set_defaults(bpe_model=original["bpe_model"])
    for action in parser._actions:
        if "--bpe-model" in action.option_strings:
            action.help = BPE_MODEL_HELP
    return parser


def _apply_original_flags(args: argparse.Namespace, recipe: str) -> None:
    """--bpe-model resolved, the original's flags checked (notes logged), --decoding-method
    given: the --decoding it names."""
    from zipa.train.args import resolve_bpe_model
    from zipa.train.compat import (
        CTC_DECODING_FLAGS,
        PSEUDO_LABEL_DATA_FLAGS,
        TRANSDUCER_DECODING_FLAGS,
        UNSUPPORTED_CTC_METHODS,
        UNSUPPORTED_TRANSDUCER_METHODS,
        check_decoding_methods,
        check_foreign_flags,
        log_notes,
    )

    resolve_bpe_model(args)
    decoding = CTC_DECODING_FLAGS if recipe == "ctc" else TRANSDUCER_DECODING_FLAGS
    log_notes(check_foreign_flags(args, [*decoding, *PSEUDO_LABEL_DATA_FLAGS]))
    if "decoding_method" in args.given_flags:
        check_decoding_methods(
            [args.decoding_method],
            list(DECODING_OF_METHOD),
            {**UNSUPPORTED_CTC_METHODS, **UNSUPPORTED_TRANSDUCER_METHODS},
        )
        args.decoding = DECODING_OF_METHOD[args.decoding_method]


def main(description: str, argv: Sequence[str] | None = None, recipe: str = "ctc") -> dict | None:
    """A recipe's pseudo_label.py: `get_parser`'s flags, then `run`; prints the summary. A user
    error ends in one line and exit status 2."""
    from zipa.train.args import parse_noting_given
    from zipa.utils.flags import UsageError, usage_errors_exit

    parser = get_parser(description, recipe)
    args = parse_noting_given(parser, argv)
    _setup_logging()
    with usage_errors_exit(parser.prog):
        _apply_original_flags(args, recipe)
        try:
            summary = run(args)
        except PseudoLabelError as e:
            raise UsageError(str(e)) from None
    if summary is None:
        print(f"this rank is done; the last rank to finish writes {summary_path(args.out_dir)}")
    else:
        print("\n".join(summary_lines(summary)))
        print(f"summary: {summary_path(args.out_dir)}")
    return summary
