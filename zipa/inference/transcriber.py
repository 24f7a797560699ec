"""The one path from audio to IPA phones that every front end shares.

audio (files or arrays) -> `zipa.audio.load` (16 kHz mono) -> `zipa.audio.features` (fbank, zero-padded
batch) -> `AsrModel.forward_encoder` -> CTC or transducer head -> greedy search -> tokenizer.

Files (`Transcriber.transcribe_files`) go through `zipa.inference.long_audio`: each file becomes one
segment, or overlapping windows when it is longer than the window; segments are sorted by
length and decoded in batches, and each file's tokens are stitched with global timestamps
(`zipa.inference.timestamps`).

Batching: a batch is zero-padded to its longest item, and padding reaches a shorter item's last
frames through the feature extractor and the conv front end, so a file decoded in a batch may
come out slightly differently from the same file decoded alone, exactly as in the original
ZIPA. Sorting by length keeps padding small; ``batch_size=1`` gives each file's own result.
Windows of a long file all have the same length, so they are never padded.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from zipa.audio.features import MIN_SAMPLES, compute_fbank
from zipa.audio.load import AudioItem, load_batch
from zipa.decoding import ctc_greedy_search, ctc_prefix_beam_search, modified_beam_search, transducer_greedy_search
from zipa.decoding.alignment import (
    TokenSpan,
    ctc_forced_align,
    ctc_greedy_spans,
    transducer_forced_align,
    transducer_spans,
)
from zipa.inference.long_audio import (
    DEFAULT_OVERLAP,
    DEFAULT_WINDOW,
    Segment,
    audio_info,
    check_window,
    owns,
    plan_segments,
    read_segment,
)
from zipa.inference.pretrained import resolve_model
from zipa.inference.timestamps import WORD_BOUNDARY, Alignment, TimedToken, build_alignment, frame_shift, frame_time
from zipa.model.io import default_device, load_model
from zipa.model.subsampling import MIN_FEATURE_FRAMES
from zipa.text.tokenizer import Tokenizer, default_bpe_model_path

PathLike = Union[str, Path]
DECODING_METHODS = ("greedy", "beam")


class Transcriber:
    """A loaded ZIPA model with its tokenizer.

    `model` is the AsrModel; a CTC head is used when the model has one, else the transducer.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, device: Optional[Union[str, torch.device]] = None):
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer

    @classmethod
    def from_checkpoint(
        cls,
        model_path: PathLike,
        bpe_model: Optional[PathLike] = None,
        device: Optional[Union[str, torch.device]] = None,
        **config_overrides,
    ) -> "Transcriber":
        """Load a released `.pth` (or an icefall checkpoint, or a model name that
        `zipa.inference.pretrained.resolve_model` knows); the architecture is read from the
        weights, settings they cannot show from `config_overrides` or a config.json beside it."""
        model, _ = load_model(resolve_model(model_path), **config_overrides)
        tokenizer = Tokenizer.from_file(bpe_model if bpe_model is not None else default_bpe_model_path())
        return cls(model, tokenizer, device)

    @classmethod
    def from_onnx(
        cls,
        path: PathLike,
        bpe_model: Optional[PathLike] = None,
        num_threads: Optional[int] = None,
        providers: Optional[Sequence[str]] = None,
        precision: str = "fp32",
    ) -> "Transcriber":
        """The ONNX backend: an export folder from `zipa export-onnx` (its fp32, int8 or fp16
        graphs) or a CTC `.onnx` file, run by onnxruntime behind the same features, search and
        tokenizer (see `zipa.onnx.runtime`). The tokenizer defaults to the export's bpe.model,
        else the packaged one."""
        from zipa.onnx.runtime import bpe_model_for, load_onnx_model

        model = load_onnx_model(path, num_threads=num_threads, providers=providers, precision=precision)
        if bpe_model is None:
            bpe_model = bpe_model_for(path) or default_bpe_model_path()
        return cls(model, Tokenizer.from_file(bpe_model), device="cpu")

    @property
    def uses_ctc(self) -> bool:
        return bool(self.model.use_ctc)

    def features(self, audio: Sequence[AudioItem]) -> Tuple[Tensor, Tensor]:
        """(feats (N, T, 80), feat_lens (N,)) of a batch of files or 16 kHz arrays."""
        if isinstance(audio, (str, Path)) or (hasattr(audio, "ndim") and audio.ndim == 1):
            raise TypeError("expected a list of audio items (files or 1-D arrays), got a single item")
        feats, feat_lens = compute_fbank(load_batch(audio))
        for i, n in enumerate(feat_lens.tolist()):
            if n < MIN_FEATURE_FRAMES:
                label = f"item {i} ({audio[i]})" if isinstance(audio[i], (str, Path)) else f"item {i}"
                raise ValueError(
                    f"{label}: audio too short ({n} feature frames; the encoder needs at least "
                    f"{MIN_FEATURE_FRAMES}, about 0.1 s)"
                )
        return feats, feat_lens

    @torch.inference_mode()
    def token_ids(self, feats: Tensor, feat_lens: Tensor) -> List[List[int]]:
        """Greedy token ids of a feature batch."""
        encoder_out, encoder_out_lens = self.model.forward_encoder(feats.to(self.device), feat_lens.to(self.device))
        if self.uses_ctc:
            return ctc_greedy_search(self.model.ctc_output(encoder_out), encoder_out_lens)
        return transducer_greedy_search(self.model, encoder_out, encoder_out_lens)

    def predict(self, feats: Tensor, feat_lens: Tensor) -> List[List[str]]:
        """Phones of a feature batch: for each utterance, the decoded IPA string split at word
        boundaries (what the original ZIPA returns)."""
        return [text.split() for text in self.tokenizer.decode_batch(self.token_ids(feats, feat_lens))]

    def transcribe(self, audio: Sequence[AudioItem]) -> List[List[str]]:
        """Phones of a batch of audio items, decoded together (zero-padded as one batch)."""
        return self.predict(*self.features(audio))

    # ------------------------------------------------------------------------------------------
    # Token times, files and long audio
    # ------------------------------------------------------------------------------------------

    @property
    def frame_shift(self) -> float:
        """Seconds per encoder output frame (0.02 for CTC models, 0.04 for transducer models)."""
        return frame_shift(int(self.model.encoder.output_downsampling_factor))

    def token_label(self, token: int) -> str:
        """What a token stands for in a transcript: its IPA character, ``▁`` for a word
        boundary, or what sentencepiece decodes a special token to (``<unk>`` -> ``⁇``)."""
        piece = self.tokenizer.id_to_piece(token)
        if piece == WORD_BOUNDARY:
            return piece
        return self.tokenizer.decode([token]).strip() or piece

    @torch.inference_mode()
    def token_spans(
        self, feats: Tensor, feat_lens: Tensor, decoding: str = "greedy", beam: int = 4
    ) -> List[List[TokenSpan]]:
        """Hypotheses of a feature batch with each token's encoder frames and confidence (see
        `zipa.decoding.alignment`).

        decoding: "greedy" (the ids of `token_ids`, with the frames of the greedy path) or
        "beam" (CTC prefix beam search / transducer modified beam search of width `beam`; the
        frames are the best alignment of the hypothesis found).
        """
        if decoding not in DECODING_METHODS:
            raise ValueError(f"decoding must be one of {', '.join(DECODING_METHODS)}, got {decoding!r}")
        encoder_out, encoder_out_lens = self.model.forward_encoder(feats.to(self.device), feat_lens.to(self.device))
        lengths = encoder_out_lens.tolist()
        if self.uses_ctc:
            log_probs = self.model.ctc_output(encoder_out)
            if decoding == "greedy":
                return ctc_greedy_spans(log_probs, encoder_out_lens)
            hyps = ctc_prefix_beam_search(log_probs, encoder_out_lens, beam=beam)
            return [ctc_forced_align(log_probs[i, :n], hyp) for i, (hyp, n) in enumerate(zip(hyps, lengths))]
        if decoding == "greedy":
            return transducer_spans(*transducer_greedy_search(self.model, encoder_out, encoder_out_lens, return_frames=True))
        hyps = modified_beam_search(self.model, encoder_out, encoder_out_lens, beam=beam)
        return [
            transducer_forced_align(self.model, encoder_out[i, :n], hyp) for i, (hyp, n) in enumerate(zip(hyps, lengths))
        ]

    def timed_tokens(self, audio: Sequence[AudioItem], decoding: str = "greedy", beam: int = 4) -> List[List[TimedToken]]:
        """Tokens with times in seconds of a batch of audio items (decoded as one batch)."""
        shift = self.frame_shift
        spans = self.token_spans(*self.features(audio), decoding=decoding, beam=beam)
        return [[_timed(span, 0.0, shift) for span in row] for row in spans]

    def alignment(
        self,
        tokens: Sequence[TimedToken],
        duration: Optional[float] = None,
        normalize: Optional[Callable[[str], str]] = None,
    ) -> Alignment:
        """Transcript, phones and words of timed tokens (see `zipa.inference.timestamps.build_alignment`)."""
        return build_alignment(tokens, self.token_label, duration, normalize)

    def transcribe_files(
        self,
        paths: Iterable[Union[str, Path]],
        window: float = DEFAULT_WINDOW,
        overlap: float = DEFAULT_OVERLAP,
        batch_size: int = 8,
        progress: Optional[bool] = False,
        decoding: str = "greedy",
        beam: int = 4,
    ) -> List["FileTranscript"]:
        """Decode audio files of any length; one `FileTranscript` per path, in order.

        A file that cannot be read or decoded gets its `error` set and no tokens; the others go
        on. Files longer than `window` seconds are cut into windows overlapping by `overlap`
        seconds (`zipa.inference.long_audio`), read piece by piece, so memory does not grow with file
        length. `progress`: a tqdm bar on stderr (None: only when stderr is a terminal).
        `decoding`, `beam`: as in `token_spans`.
        """
        from tqdm import tqdm

        check_window(window, overlap)
        if decoding not in DECODING_METHODS:
            raise ValueError(f"decoding must be one of {', '.join(DECODING_METHODS)}, got {decoding!r}")
        if beam < 1:
            raise ValueError(f"beam must be at least 1, got {beam}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        results = [FileTranscript(Path(p)) for p in paths]
        segments: List[Segment] = []
        for i, result in enumerate(results):
            try:
                info = audio_info(result.path)
            except (ValueError, OSError) as e:
                result.error = str(e)
                continue
            result.duration = info.duration
            segments += plan_segments(i, info, window, overlap)
        # Longest first: equal-length windows batch together, and memory peaks at the start.
        segments.sort(key=lambda s: (-s.length / s.sample_rate, s.file_index, s.index))

        pieces: Dict[int, Dict[int, List[TimedToken]]] = defaultdict(dict)
        total = sum(r.duration for r in results if r.error is None)
        disable = None if progress is None else not progress  # tqdm: None = off unless a terminal
        with tqdm(total=round(total, 2), unit="s", desc="transcribing", file=sys.stderr, disable=disable, leave=False) as bar:
            for start in range(0, len(segments), batch_size):
                batch = [s for s in segments[start : start + batch_size] if results[s.file_index].error is None]
                for segment, tokens in self._decode_segments(batch, results, decoding, beam):
                    pieces[segment.file_index][segment.index] = tokens
                for segment in batch:
                    duration = results[segment.file_index].duration
                    bar.update(max(0.0, min(segment.own_to, duration) - max(segment.own_from, 0.0)))
                for segment in batch:
                    if results[segment.file_index].error is not None:
                        pieces.pop(segment.file_index, None)
        for i, result in enumerate(results):
            if result.error is None:
                result.tokens = [t for k in sorted(pieces[i]) for t in pieces[i][k]]
        return results

    def _decode_segments(
        self, batch: List[Segment], results: List["FileTranscript"], decoding: str, beam: int
    ) -> List[Tuple[Segment, List[TimedToken]]]:
        """Read, featurize and decode one batch of segments; a segment that fails marks its
        file's error and is left out. Returns each decoded segment's kept tokens."""
        segments, audio = [], []
        for segment in batch:
            result = results[segment.file_index]
            if result.error is not None:
                continue
            try:
                samples = read_segment(result.path, segment)
                if samples.size < MIN_SAMPLES:
                    raise ValueError(f"{result.path}: audio too short ({samples.size} samples at 16 kHz)")
            except (ValueError, OSError, RuntimeError) as e:
                result.error = str(e)
                continue
            segments.append(segment)
            audio.append(samples)
        while segments:
            feats, feat_lens = compute_fbank(audio)
            short = [i for i, n in enumerate(feat_lens.tolist()) if n < MIN_FEATURE_FRAMES]
            if not short:
                break
            for i in short:
                results[segments[i].file_index].error = (
                    f"{results[segments[i].file_index].path}: audio too short ({feat_lens[i].item()} feature "
                    f"frames; the encoder needs at least {MIN_FEATURE_FRAMES}, about 0.1 s)"
                )
            # Features depend on the batch's padding: recompute them without the short items.
            segments = [s for i, s in enumerate(segments) if i not in short]
            audio = [a for i, a in enumerate(audio) if i not in short]
        if not segments:
            return []
        shift = self.frame_shift
        out = []
        for segment, spans in zip(segments, self.token_spans(feats, feat_lens, decoding, beam)):
            offset = segment.start_time
            kept = [
                _timed(span, offset, shift)
                for span in spans
                if owns(segment, offset + frame_time(span.start + 0.5, shift))
            ]
            out.append((segment, kept))
        return out


@dataclass
class FileTranscript:
    """The decoding of one file: its tokens with global times, or the error that stopped it."""

    path: Path
    duration: float = 0.0
    tokens: List[TimedToken] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _timed(span: TokenSpan, offset: float, shift: float) -> TimedToken:
    return TimedToken(
        span.token,
        round(offset + frame_time(span.start, shift), 6),
        round(offset + frame_time(span.end, shift), 6),
        span.confidence,
    )
