"""Forced alignment: where in the audio are the phones of a given transcript?

transcript (IPA, or orthography through `zipa.text.g2p`) -> `zipa.text.ipa.normalize_ipa_report`
(the normalisation of training labels; what it drops is reported) -> tokenizer ids, a ``▁`` before
each word -> the encoder frames of the same path as transcription (`Transcriber.features`,
``forward_encoder``, ``ctc_output``) -> Viterbi (`zipa.decoding.alignment`) -> `TokenSpan`s ->
the `Alignment` (phones, words) that `Transcriber.timestamps` also returns.

- CTC models: the best CTC path that spells the transcript (`ctc_viterbi`). A phone's interval
  is the frames the path spends on its tokens; its score is the posterior probability of its
  tokens averaged over those frames (the confidence of greedy timestamps). CTC posteriors are
  peaky, so phones often take one or two 20 ms frames, blanks lying between them.
- Transducer models: the best way to emit the transcript, one token at most per frame
  (`transducer_forced_align`); a token occupies the one 40 ms frame it is emitted at, its score
  being the joiner's probability of it there.
- With a frame aligner (`Transcriber.aligner`, `zipa.model.aligner`): the phones of the
  transcript (`Transcriber.phone_groups`) are placed on the aligner's 10 ms sub-frames by
  `phone_forced_align` (each phone as the class of its first token, silence optional between
  them); every token of a phone gets the phone's sub-frames, and its score is the posterior of
  the phone's class averaged over them. This is what `aligner_spans` does; free transcription
  uses it too, to time the decoded phones (`Transcriber.timed_tokens`).

Long audio. `align_files` (`zipa align --transcript/--transcripts/--textgrid`) aligns each file,
or each utterance interval of a TextGrid tier, on its own. A stretch longer than ``window``
seconds is encoded in overlapping windows exactly as transcription cuts files
(`zipa.inference.long_audio`); each window keeps the encoder frames whose centre falls in the
part of the timeline it owns, and the kept frames, in time order, make one sequence over which
one Viterbi pass aligns the whole transcript. Memory of the Viterbi pass grows with frames times
tokens (CTC: a byte per frame and state, two states per token; transducer: 17 bytes per frame
and token; aligner: a byte per 10 ms sub-frame and state, two states per phone), so a stretch
above `MAX_ALIGN_BYTES` is refused with a message saying to cut the recording into utterances
(a TextGrid with an utterance tier): at the default 1 GiB and about 12 tokens (phone symbols
and word boundaries, some 9 phones) a second, that is some 15 minutes of speech for a CTC
model, 13 with an aligner, 7 for a transducer.

`Transcriber.align` (the Python API) aligns a batch of items the way `Transcriber.timestamps`
decodes one: zero-padded as one batch, no windows.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Union

import torch
from torch import Tensor

from zipa.data.textgrid import TextGrid
from zipa.decoding.alignment import (
    TokenSpan,
    aligner_spans,
    ctc_forced_align,
    ctc_min_frames,
    transducer_forced_align,
)
from zipa.decoding.fit import AlignmentFit, alignment_fit
from zipa.decoding.options import DecodingOptions
from zipa.decoding.timestamps import Alignment, TimedToken, TimeGrid, frame_time
from zipa.inference.long_audio import AudioInfo, Segment, audio_info, owns, plan_segments
from zipa.utils.progress import Progress

if TYPE_CHECKING:
    from zipa.model.aligner import FrameAligner
    from zipa.model.protocols import EncoderModel
    from zipa.text.tokenizer import Tokenizer


class Transcriber(Protocol):
    """What forced alignment uses of a `zipa.inference.transcriber.Transcriber` (which calls
    it, so it is not imported here)."""

    model: EncoderModel
    tokenizer: Tokenizer
    aligner: FrameAligner | None
    device: torch.device

    @property
    def uses_ctc(self) -> bool: ...
    @property
    def frame_shift(self) -> float: ...
    @property
    def time_grid(self) -> TimeGrid: ...
    def features(self, audio: Sequence, sampling_rate: int | None = None) -> tuple[Tensor, Tensor]: ...
    def encode_segments(
        self, segments: Sequence[tuple[Path, Segment]]
    ) -> tuple[list[int], Tensor | None, Tensor | None, dict[int, str]]: ...
    def phone_groups(self, tokens: Sequence[int]) -> list[list[int]]: ...
    def alignment(
        self, tokens: Sequence[TimedToken], duration: float | None = None, normalize: Callable[[str], str] | None = None
    ) -> Alignment: ...


PathLike = Union[str, Path]
MAX_ALIGN_BYTES = 1 << 30  # the Viterbi pass's memory for one stretch of audio (see the docstring)
# An utterance interval may end this far after the audio (rounding in annotation tools); further is an error.
END_TOLERANCE = 0.1


class TranscriptWarning(UserWarning):
    """Symbols of a transcript outside ZIPA's inventory were dropped before aligning it."""


# ---------------------------------------------------------------------------------------------
# Transcripts
# ---------------------------------------------------------------------------------------------


class FitWarning(UserWarning):
    """A transcript that cannot be its audio's (`zipa.decoding.fit`): aligned all the same."""


@dataclass
class Transcript:
    """A transcript ready to align: ``phones`` (normalised IPA, words separated by spaces), its
    token ids (a ``▁`` before each word), and the symbols dropped on the way (outside the
    inventory, or unknown to the tokenizer), counted."""

    given: str
    phones: str
    tokens: list[int]
    dropped: Counter = field(default_factory=Counter)

    def dropped_message(self) -> str:
        """``"2 symbols outside ZIPA's inventory were dropped: ◌̞ (U+031E) ×1, X (U+0058) ×1"``, or ""."""
        if not self.dropped:
            return ""
        total = sum(self.dropped.values())
        listed = ", ".join(
            f"{'◌' if _combining(ch) else ''}{ch} (U+{ord(ch):04X}) ×{n}" for ch, n in self.dropped.most_common()
        )
        return (
            f"{total} symbol{'s' if total > 1 else ''} outside ZIPA's inventory dropped from the transcript: {listed}"
        )


def _combining(ch: str) -> bool:
    import unicodedata

    return unicodedata.category(ch) in ("Mn", "Me")


def prepare_transcript(
    text: str, tokenizer: Tokenizer, lang: str | None = None, remove_diacritics: bool = False
) -> Transcript:
    """Normalise ``text`` as training labels are (`zipa.text.ipa.normalize_ipa_report`) and
    encode it; with ``lang``, ``text`` is orthography, converted by `zipa.text.g2p` first.
    ``remove_diacritics``: also drop diacritics, as models trained without them expect."""
    if lang is not None:
        from zipa.text.g2p import g2p_report

        phones, dropped = g2p_report(text, lang, remove_diacritics)
    else:
        from zipa.text.ipa import normalize_ipa_report

        phones, dropped = normalize_ipa_report(text, remove_diacritics)
    dropped = Counter(dropped)
    # A tokenizer other than the packaged one may lack pieces for some inventory characters.
    unknown = {ch for ch in set(phones) - {" "} if tokenizer.unk_id in tokenizer.encode(ch)}
    if unknown:
        dropped.update(ch for ch in phones if ch in unknown)
        phones = " ".join("".join(ch for ch in phones if ch not in unknown).split())
    tokens = tokenizer.encode(phones) if phones else []
    return Transcript(text, phones, tokens, dropped)


def find_textgrid(
    folder: PathLike, audio: PathLike, relative: PathLike | None = None, suffix: str = ".TextGrid"
) -> Path:
    """The TextGrid (or other annotation file: ``suffix``) of ``audio`` in ``folder``:
    ``folder/<relative path>.TextGrid`` (any case of the suffix), else the one file under
    ``folder`` named ``<audio file stem>.TextGrid``."""
    folder, audio = Path(folder), Path(audio)
    places = [folder / Path(relative).parent] if relative is not None else []
    for place in places:
        for candidate in sorted(place.glob(f"{_glob_escape(audio.stem)}.*")) if place.is_dir() else []:
            if candidate.suffix.lower() == suffix.lower() and candidate.is_file():
                return candidate
    found = sorted(
        p for p in folder.rglob(f"{_glob_escape(audio.stem)}.*") if p.suffix.lower() == suffix.lower() and p.is_file()
    )
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(
            f"{audio}: {len(found)} files named {audio.stem}{suffix} under {folder} "
            f"({', '.join(map(str, found[:3]))}); put each beside its audio's relative path"
        )
    raise ValueError(f"{audio}: no file named {audio.stem}{suffix} under {folder}")


def _glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


# ---------------------------------------------------------------------------------------------
# Jobs: what to align in a file
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """A stretch of a file and its text; ``end`` None: to the end of the file."""

    start: float
    end: float | None
    text: str


@dataclass
class AlignJob:
    """One audio file and what to align in it: its whole transcript, or the utterances of a
    TextGrid tier (``textgrid``: that TextGrid, to which the output adds tiers)."""

    path: Path
    utterances: list[Utterance]
    textgrid: TextGrid | None = None
    source: Path | None = None  # the file the TextGrid was read from

    @classmethod
    def whole(cls, path: PathLike, text: str) -> AlignJob:
        return cls(Path(path), [Utterance(0.0, None, text)])

    @classmethod
    def from_textgrid(
        cls, path: PathLike, grid: TextGrid, tier: str | None, source: PathLike | None = None
    ) -> AlignJob:
        """The non-empty intervals of ``tier`` (None: the grid's only interval tier) of ``grid``,
        read from ``source``; ValueError naming it when there is no such tier."""
        chosen = grid.interval_tier(tier, str(source) if source is not None else "TextGrid")
        utterances = [Utterance(float(a), float(b), text) for a, b, text in chosen.intervals if text.strip()]
        return cls(Path(path), utterances, grid, Path(source) if source is not None else None)


@dataclass
class FileAlignment:
    """What aligning one file gave: its tokens with global times (as `FileTranscript`), or the
    error that stopped it; ``messages``: notes on its transcripts (symbols dropped);
    ``problems``: utterances that could not be aligned (the others are in ``tokens``);
    ``fit``: how well the transcripts fit the audio (`zipa.decoding.fit`), over all aligned
    utterances; ``warnings``: each utterance whose transcript cannot be its audio's, and why."""

    path: Path
    duration: float = 0.0
    tokens: list[TimedToken] = field(default_factory=list)
    error: str | None = None
    messages: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    textgrid: TextGrid | None = None
    fit: AlignmentFit | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class AlignmentError(ValueError):
    """A transcript that cannot be aligned to its audio (too long for it, or too much to hold)."""


# ---------------------------------------------------------------------------------------------
# Frames -> spans
# ---------------------------------------------------------------------------------------------


def head_frames(transcriber: Transcriber, encoder_out: Tensor, encoder_out_lens: Tensor) -> Tensor:
    """What the Viterbi pass reads per frame of `Transcriber.time_grid`: the aligner's
    log-probs (``per_encoder_frame`` sub-frames per encoder frame) when the transcriber has an
    aligner, else CTC log-probs, or (transducer) the encoder output."""
    if transcriber.aligner is not None:
        return transcriber.aligner(encoder_out, encoder_out_lens)
    return transcriber.model.ctc_output(encoder_out) if transcriber.uses_ctc else encoder_out


def align_frames(transcriber: Transcriber, frames: Tensor, transcript: Transcript, where: str) -> list[TokenSpan]:
    """The best alignment of ``transcript`` to one utterance's ``frames`` (`head_frames`, valid
    frames only). AlignmentError naming ``where`` when the frames are too few for the
    transcript, or the pass would need more than `MAX_ALIGN_BYTES`."""
    tokens = transcript.tokens
    num_frames, num_tokens, shift = frames.shape[0], len(tokens), transcriber.time_grid.shift
    if not tokens:
        return []
    if transcriber.aligner is not None:
        need = len(transcriber.phone_groups(tokens))
        cells, per_cell, why = num_frames * (2 * need + 1), 1, "one per phone"
    elif transcriber.uses_ctc:
        need, cells, per_cell = ctc_min_frames(tokens), num_frames * (2 * num_tokens + 1), 1
        repeats = need - num_tokens
        why = f"one per token{f' and a blank between the {repeats} repeated ones' if repeats else ''}"
    else:
        need, cells, per_cell = num_tokens, num_frames * (num_tokens + 1), 17
        why = "one token at most per frame"
    if num_frames < need:
        words = transcript.phones.count(" ") + 1
        raise AlignmentError(
            f"{where}: the transcript is too long for the audio: its {num_tokens} tokens ({words} word "
            f"boundaries and {num_tokens - words} phone symbols) need at least {need} frames of "
            f"{shift * 1000:.0f} ms ({why}), {need * shift:.2f} s, but the audio gives {num_frames} "
            f"({num_frames * shift:.2f} s). Is it this audio's transcript?"
        )
    if cells * per_cell > MAX_ALIGN_BYTES:
        raise AlignmentError(
            f"{where}: too long to align in one piece ({num_frames * shift:.0f} s, {num_tokens} tokens: "
            f"{cells * per_cell / 2**30:.1f} GiB for the Viterbi pass, the limit is {MAX_ALIGN_BYTES / 2**30:.1f}); "
            "cut the recording into utterances, e.g. a TextGrid with an utterance tier (--textgrid, --tier)"
        )
    if transcriber.aligner is not None:
        return aligner_spans(frames, tokens, transcriber.phone_groups(tokens))
    if transcriber.uses_ctc:
        return ctc_forced_align(frames, tokens)
    return transducer_forced_align(transcriber.model, frames.to(transcriber.device), tokens)


def _timed(span: TokenSpan, times: Sequence[float], shift: float, lo: float, hi: float) -> TimedToken:
    """A span over frames starting at ``times`` -> a token with times, clipped to [lo, hi]."""
    start = min(max(times[span.start], lo), hi)
    end = min(max(times[span.end - 1] + shift, start), hi)
    return TimedToken(span.token, round(start, 6), round(end, 6), span.confidence)


# ---------------------------------------------------------------------------------------------
# The Python API: a batch, as `Transcriber.timestamps`
# ---------------------------------------------------------------------------------------------


def align_batch(
    transcriber: Transcriber,
    audio: Sequence,
    transcripts: str | Sequence[str],
    lang: str | None = None,
    sampling_rate: int | None = None,
    remove_diacritics: bool = False,
    strict: bool = False,
) -> list[Alignment]:
    """`Transcriber.align`: see there."""
    if isinstance(transcripts, str):
        if isinstance(audio, (str, Path)) or len(audio) != 1:
            count = "one item" if isinstance(audio, (str, Path)) else f"{len(audio)} items"
            raise ValueError(
                f"one transcript (a string) for {count}: give a list of audio items and "
                "a list with one transcript per item"
            )
        transcripts = [transcripts]
    transcripts = list(transcripts)
    if not isinstance(audio, (str, Path)) and len(transcripts) != len(audio):
        raise ValueError(f"{len(audio)} audio items but {len(transcripts)} transcripts")
    feats, feat_lens = transcriber.features(audio, sampling_rate)
    prepared = []
    for i, text in enumerate(transcripts):
        transcript = prepare_transcript(text, transcriber.tokenizer, lang, remove_diacritics)
        if transcript.dropped:
            warnings.warn(f"item {i}: {transcript.dropped_message()}", TranscriptWarning, stacklevel=3)
        prepared.append(transcript)
    grid = transcriber.time_grid
    with torch.inference_mode():
        encoder_out, encoder_out_lens = transcriber.model.forward_encoder(
            feats.to(transcriber.device), feat_lens.to(transcriber.device)
        )
        frames = head_frames(transcriber, encoder_out, encoder_out_lens)
        out = []
        for i, (transcript, n) in enumerate(zip(prepared, encoder_out_lens.tolist())):
            label = f"item {i} ({audio[i]})" if isinstance(audio[i], (str, Path)) else f"item {i}"
            n *= grid.per_encoder_frame
            spans = align_frames(transcriber, frames[i, :n], transcript, label)
            times = [grid.time(j) for j in range(n)]
            tokens = [_timed(span, times, grid.shift, 0.0, float("inf")) for span in spans]
            alignment = transcriber.alignment(tokens)
            alignment.fit = alignment_fit(alignment.phones, n * grid.shift, grid.shift)
            alignment.warnings = [
                f"{label}: the transcript does not fit the audio: {why}" for why in alignment.fit.problems()
            ]
            if alignment.warnings and strict:
                raise AlignmentError("; ".join(alignment.warnings))
            for message in alignment.warnings:
                warnings.warn(message, FitWarning, stacklevel=3)
            out.append(alignment)
    return out


# ---------------------------------------------------------------------------------------------
# Files: each file (or utterance) on its own, long stretches in windows
# ---------------------------------------------------------------------------------------------


def align_files(
    transcriber: Transcriber,
    jobs: Iterable[AlignJob],
    options: DecodingOptions,
    lang: str | None = None,
    progress: None | bool | str | Progress = False,
    stop: Callable[[], bool] | None = None,
) -> Iterator[FileAlignment]:
    """`Transcriber.align_files`: see there."""
    jobs = list(jobs)
    reporter = Progress.make(progress, len(jobs))
    owned = reporter is not progress
    stop = stop or (lambda: False)
    try:
        for job in jobs:
            if stop():
                return
            result = FileAlignment(job.path, textgrid=job.textgrid)
            try:
                info = audio_info(job.path)
            except (ValueError, OSError) as e:
                result.error = str(e)
            else:
                result.duration = info.duration
                stopped = _align_file(transcriber, job, info, result, lang, options, reporter, stop)
                if stopped:
                    return
            reporter.file_done()
            yield result
    finally:
        if owned:
            reporter.close()


def _align_file(
    transcriber: Transcriber,
    job: AlignJob,
    info: AudioInfo,
    result: FileAlignment,
    lang: str | None,
    options: DecodingOptions,
    reporter: Progress,
    stop: Callable[[], bool],
) -> bool:
    """Align a job's utterances into ``result``; True when stopped on the way."""
    whole = len(job.utterances) == 1 and job.utterances[0].end is None
    if not job.utterances:
        result.messages.append(f"{job.path}: no interval of the tier has text: nothing to align")
    failed = 0
    aligned_seconds = 0.0
    for utterance in job.utterances:
        if stop():
            return True
        start = utterance.start
        end = info.duration if utterance.end is None else utterance.end
        where = str(job.path) if whole else f"{job.path} [{start:.3f}-{end:.3f} s]"
        try:
            if end > info.duration + END_TOLERANCE or start >= info.duration:
                raise ValueError(
                    f"{where}: the interval is not inside the audio (0-{info.duration:.3f} s); "
                    "is this the TextGrid of this file?"
                )
            end = min(end, info.duration)
            transcript = prepare_transcript(utterance.text, transcriber.tokenizer, lang, options.remove_diacritics)
            if transcript.dropped:
                result.messages.append(f"{where}: {transcript.dropped_message()}")
            if not transcript.tokens:
                raise ValueError(f"{where}: nothing left to align in the transcript {utterance.text!r}")
            frames, times = _encode_stretch(transcriber, job.path, info, start, end, options, where)
            spans = align_frames(transcriber, frames, transcript, where)
            shift = transcriber.time_grid.shift
            tokens = [_timed(span, times, shift, start, end) for span in spans]
            result.tokens += tokens
            aligned_seconds += end - start
            fit = alignment_fit(transcriber.alignment(tokens).phones, end - start, shift)
            result.warnings += [f"{where}: the transcript does not fit the audio: {why}" for why in fit.problems()]
        except (ValueError, OSError, RuntimeError) as e:
            message = str(e)
            if whole:
                result.error = message
            else:
                result.problems.append(message)
            failed += 1
        reporter.advance(end - start)
    if failed and failed == len(job.utterances) and not whole:
        result.error = f"{job.path}: none of its {failed} utterances could be aligned"
    if result.tokens:
        result.fit = alignment_fit(
            transcriber.alignment(result.tokens).phones, aligned_seconds, transcriber.time_grid.shift
        )
    return False


def _encode_stretch(
    transcriber: Transcriber,
    path: Path,
    info: AudioInfo,
    start: float,
    end: float,
    options: DecodingOptions,
    where: str,
) -> tuple[Tensor, list[float]]:
    """The Viterbi pass's frames (`head_frames`) of audio [start, end) s of a file, windowed as
    transcription does: those of the encoder frames each window owns, in time order (CPU), and
    each one's start time (s, global; `Transcriber.time_grid`)."""
    rate = info.sample_rate
    first = int(round(start * rate))
    last = min(int(round(end * rate)), info.frames)
    offset = first / rate
    whole_file = first == 0 and last == info.frames
    segments = [
        dataclasses.replace(
            s,
            start=s.start + first,
            own_from=s.own_from + offset,
            own_to=s.own_to + offset,
            whole_file=s.whole_file and whole_file,
        )
        for s in plan_segments(0, AudioInfo(max(last - first, 0), rate), options.window, options.overlap)
    ]
    shift, grid = transcriber.frame_shift, transcriber.time_grid
    per = grid.per_encoder_frame
    kept: list[Tensor] = []
    times: list[float] = []
    for b in range(0, len(segments), options.batch_size):
        batch = segments[b : b + options.batch_size]
        with torch.inference_mode():
            positions, encoder_out, encoder_out_lens, errors = transcriber.encode_segments([(path, s) for s in batch])
            if errors:
                raise ValueError(f"{where}: " + next(iter(errors.values())).replace(f"{path}: ", "", 1))
            if encoder_out is None or encoder_out_lens is None:
                raise ValueError(f"{where}: no segment was encoded")
            frames = head_frames(transcriber, encoder_out, encoder_out_lens).float().cpu()
        for segment, row, n in zip(batch, frames, encoder_out_lens.tolist()):
            t0 = segment.start_time
            mine = [j for j in range(n) if owns(segment, t0 + frame_time(j + 0.5, shift))]
            if mine:
                kept.append(row[mine[0] * per : (mine[-1] + 1) * per])
                times += [t0 + grid.time(j * per + q) for j in mine for q in range(per)]
    if not kept:
        raise ValueError(f"{where}: no encoder frames")
    return torch.cat(kept), times
