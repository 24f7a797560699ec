"""The one path from audio to IPA phones that every front end shares.

audio (files or arrays) -> `zipa.audio.load` (16 kHz mono) -> `zipa.audio.features` (fbank, zero-padded
batch) -> `model.forward_encoder` -> CTC or transducer head -> optional inventory mask
(`zipa.decoding.inventory`) -> greedy or beam search -> tokenizer (-> top-k alternatives, `zipa.decoding.topk`).

Files (`Transcriber.iter_transcribe_files`, and `transcribe_files` on top of it) go through
`zipa.inference.long_audio`: each file becomes one segment, or overlapping windows when it is
longer than the window; files are taken in bounded groups, a group's segments are sorted by
length and decoded in batches, and each file's tokens are stitched with global timestamps
(`zipa.decoding.timestamps`) and handed out as soon as its last segment is decoded.

Batching: a batch is zero-padded to its longest item, and padding reaches a shorter item's last
frames through the feature extractor and the conv front end, so a file decoded in a batch may
come out slightly differently from the same file decoded alone, exactly as in the original
ZIPA. Sorting by length keeps padding small; ``batch_size=1`` gives each file's own result.
Windows of a long file all have the same length, so they are never padded.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, cast

import torch
from torch import Tensor

from zipa.audio.features import MIN_SAMPLES, compute_fbank
from zipa.audio.load import AudioItem, load_batch
from zipa.decoding import ctc_greedy_search, ctc_prefix_beam_search, modified_beam_search, transducer_greedy_search
from zipa.decoding.alignment import (
    TokenSpan,
    aligner_spans,
    ctc_forced_align,
    ctc_greedy_spans,
    transducer_forced_align,
    transducer_spans,
)
from zipa.decoding.inventory import Inventory, TokenMask, mask_log_probs, token_mask
from zipa.decoding.options import DECODING_METHODS, DecodingOptions
from zipa.decoding.timestamps import (
    FRAME_OFFSET,
    WORD_BOUNDARY,
    Alignment,
    TimedToken,
    TimeGrid,
    build_alignment,
    frame_shift,
    frame_time,
    is_modifier,
)
from zipa.decoding.topk import ctc_alternatives, transducer_alternatives
from zipa.hub.pretrained import resolve_model
from zipa.inference.long_audio import (
    AudioInfo,
    Segment,
    audio_info,
    owns,
    plan_segments,
    read_segment,
)
from zipa.model.io import default_device, load_model
from zipa.model.protocols import EncoderModel
from zipa.model.subsampling import MIN_FEATURE_FRAMES
from zipa.text.tokenizer import Tokenizer, default_bpe_model_path
from zipa.utils.progress import Progress

if TYPE_CHECKING:
    from zipa.inference.forced import AlignJob, FileAlignment
    from zipa.model.aligner import FrameAligner

PathLike = Union[str, Path]
# What `aligner=` takes: "auto" (the model's <stem>.aligner.pt when there is one), None (none:
# CTC / transducer times), an aligner file, or a `zipa.model.aligner.FrameAligner`.
AlignerLike = Union[None, str, Path, "FrameAligner"]
# What `inventory=` takes: None (no restriction), a built-in language code (str), an inventory
# file (Path), an `Inventory`, a list of phones, or a `TokenMask` already built.
InventoryLike = Union[None, str, Path, Inventory, TokenMask, Iterable[str]]
PRECISIONS = ("fp32", "bf16", "bf16-full", "fp16")
# Files are decoded in groups of consecutive paths (see `Transcriber.iter_transcribe_files`).
GROUP_FILES = 512
GROUP_SECONDS = 3600.0
# Free transcription with an aligner: a decoded phone starts at most this long (s) before the
# frame its first token was decoded at (measured: benchmarks/timestamps.py, README).
REFINE_SLACK = 0.02


class Transcriber:
    """A loaded ZIPA model with its tokenizer.

    `model`: an `AsrModel` or an ONNX runtime model (`zipa.model.protocols.EncoderModel`); its
    CTC head is used when it has one, else the transducer.

    `aligner`: a `zipa.model.aligner.FrameAligner` trained on this model's encoder, or None.
    With one, phone times come from it (`time_grid`): forced alignment (`align`) places the
    transcript's phones on its frame posteriors, and free transcription (`timestamps`,
    `transcribe_files`...) decodes as without it, then places the decoded phones the same way
    (tokens and confidences unchanged, only times). Set or clear it at any time
    (``transcriber.aligner = None`` times tokens by CTC spikes again).
    """

    def __init__(
        self,
        model: EncoderModel,
        tokenizer: Tokenizer,
        device: str | torch.device | None = None,
        aligner: FrameAligner | None = None,
    ):
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.aligner = aligner

    @property
    def aligner(self) -> FrameAligner | None:
        return self._aligner

    @aligner.setter
    def aligner(self, aligner: FrameAligner | None) -> None:
        """AlignerMismatchError when ``aligner`` was not trained on this model."""
        if aligner is not None:
            from zipa.model.aligner import check_aligner

            check_aligner(aligner, self.model, self.tokenizer.vocab_size, self.frame_shift)
            aligner = aligner.to(self.device).eval()
        self._aligner = aligner

    def load_aligner(self, aligner: AlignerLike, model_path: PathLike | None = None) -> FrameAligner | None:
        """Attach (and return) the aligner that ``aligner`` names: a file or a `FrameAligner`
        (AlignerMismatchError when it was trained on another encoder); None: none; "auto": the
        file `zipa.model.aligner.aligner_path_for(model_path)` (``<model stem>.aligner.pt``
        beside the model) when it exists, else none; one there that does not fit the model is
        skipped with a warning."""
        from zipa.model.aligner import AlignerMismatchError, FrameAligner, aligner_path_for, load_aligner

        if isinstance(aligner, str) and aligner == "auto":
            path = aligner_path_for(model_path) if model_path is not None else None
            if path is None or not path.is_file():
                self.aligner = None
                return None
            try:
                self.aligner = load_aligner(path, self.model, self.tokenizer.vocab_size, self.frame_shift)
            except (AlignerMismatchError, ValueError) as e:
                warnings.warn(f"not using the aligner beside the model: {e}", stacklevel=2)
                self.aligner = None
        elif aligner is None or isinstance(aligner, FrameAligner):
            self.aligner = aligner
        else:
            self.aligner = load_aligner(aligner, self.model, self.tokenizer.vocab_size, self.frame_shift)
        return self.aligner

    @classmethod
    def from_checkpoint(
        cls,
        model_path: PathLike,
        bpe_model: PathLike | None = None,
        device: str | torch.device | None = None,
        aligner: AlignerLike = "auto",
        precision: str = "fp32",
        **config_overrides,
    ) -> Transcriber:
        """Load a released `.pth` (or an icefall checkpoint, or a model name that
        `zipa.hub.pretrained.resolve_model` knows); the architecture is read from the
        weights, settings they cannot show from `config_overrides` or a config.json beside it.
        `aligner`: see `load_aligner` (default "auto": ``<model stem>.aligner.pt`` beside the
        model file is used when it is there). `precision`: "fp32" (exact), "bf16" (CPUs with
        bfloat16 units: the products in bfloat16, the rest float32; CUDA: the whole model),
        "bf16-full" (the whole model in bfloat16) or "fp16" (CUDA only): faster and not exact
        (`zipa.model.precision.reduced_precision`)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        path = resolve_model(model_path)
        model, _ = load_model(path, **config_overrides)
        tokenizer = Tokenizer.from_file(bpe_model if bpe_model is not None else default_bpe_model_path())
        # AsrModel is an EncoderModel (tests/test_protocols.py); mypy sees its submodules as Tensor | Module.
        transcriber = cls(cast(EncoderModel, model), tokenizer, device)
        transcriber.load_aligner(aligner, path)
        if precision != "fp32":
            from zipa.model.precision import reduced_precision

            if precision == "fp16" and transcriber.device.type != "cuda":
                raise ValueError("precision fp16 needs a CUDA device (on a CPU use bf16)")
            dtype = torch.float16 if precision == "fp16" else torch.bfloat16
            low = reduced_precision(
                cast(torch.nn.Module, transcriber.model),
                dtype,
                transcriber.device,
                whole_model=precision == "bf16-full",
            )
            transcriber.model = cast(EncoderModel, low)
        return transcriber

    @classmethod
    def from_onnx(
        cls,
        path: PathLike,
        bpe_model: PathLike | None = None,
        num_threads: int | None = None,
        providers: Sequence[str] | None = None,
        precision: str = "fp32",
        cache_dir: PathLike | None = None,
    ) -> Transcriber:
        """The ONNX backend: an export folder from `zipa export-onnx` (its fp32, int8 or fp16
        graphs), a `.onnx` file, upstream ZIPA's published graphs (a folder, a file, or a model
        name / Hub repo id fetched into the cache at `cache_dir`), run by onnxruntime behind the
        same features, search and tokenizer (see `zipa.onnx.runtime`). The tokenizer defaults
        to the export's bpe.model, else the packaged one (checked against tokens.txt)."""
        from zipa.onnx.runtime import load_onnx_model, onnx_tokenizer, resolve_onnx

        path = resolve_onnx(path, precision, cache_dir)
        model = load_onnx_model(path, num_threads=num_threads, providers=providers, precision=precision)
        return cls(cast(EncoderModel, model), onnx_tokenizer(path, model, bpe_model), device="cpu")

    @property
    def uses_ctc(self) -> bool:
        return bool(self.model.use_ctc)

    def features(self, audio: Sequence[AudioItem], sampling_rate: int | None = None) -> tuple[Tensor, Tensor]:
        """(feats (N, T, 80), feat_lens (N,)) of a batch of files or arrays.

        `sampling_rate`: the rate of the arrays and tensors in `audio` (default 16 kHz, as the
        original); they are resampled to 16 kHz. Files carry their own rate.
        """
        if isinstance(audio, (str, Path)) or (hasattr(audio, "ndim") and audio.ndim == 1):
            raise TypeError("expected a list of audio items (files or 1-D arrays), got a single item")
        feats, feat_lens = compute_fbank(load_batch(audio, source_rate=sampling_rate))
        for i, n in enumerate(feat_lens.tolist()):
            if n < MIN_FEATURE_FRAMES:
                label = f"item {i} ({audio[i]})" if isinstance(audio[i], (str, Path)) else f"item {i}"
                raise ValueError(
                    f"{label}: audio too short ({n} feature frames; the encoder needs at least "
                    f"{MIN_FEATURE_FRAMES}, about 0.1 s)"
                )
        return feats, feat_lens

    def inventory_mask(self, inventory: InventoryLike) -> TokenMask | None:
        """The token mask of an `inventory=` argument (see `zipa.decoding.inventory`), or None.

        `inventory`: None (no restriction); a language code (str) with a built-in inventory
        (`Inventory.for_language`: ISO 639-3 such as ``"eng"``, or an espeak-ng code such as
        ``"en-us"``); a file of phones (a `Path`, `Inventory.from_file`); an `Inventory`; a
        list of phones (``["a", "e", "tʰ"]``); or a `TokenMask` from an earlier call. Phones
        with symbols the tokenizer lacks are named in a `UserWarning` (what they were mapped to).
        """
        if inventory is None:
            return None
        if isinstance(inventory, TokenMask):
            return inventory
        if isinstance(inventory, str):
            inventory = Inventory.for_language(inventory)
        elif isinstance(inventory, Path):
            inventory = Inventory.from_file(inventory)
        mask = token_mask(inventory, self.tokenizer)
        message = mask.warning()
        if message is not None:
            warnings.warn(message, stacklevel=3)
        return dataclasses.replace(mask, allowed=mask.allowed.to(self.device))

    @torch.inference_mode()
    def token_ids(self, feats: Tensor, feat_lens: Tensor, inventory: InventoryLike = None) -> list[list[int]]:
        """Greedy token ids of a feature batch; `inventory` restricts the tokens searched
        (`inventory_mask`)."""
        mask = self.inventory_mask(inventory)
        encoder_out, encoder_out_lens = self.model.forward_encoder(feats.to(self.device), feat_lens.to(self.device))
        if self.uses_ctc:
            return ctc_greedy_search(mask_log_probs(self.model.ctc_output(encoder_out), mask), encoder_out_lens)
        return transducer_greedy_search(self.model, encoder_out, encoder_out_lens, token_mask=mask)

    def predict(self, feats: Tensor, feat_lens: Tensor, inventory: InventoryLike = None) -> list[list[str]]:
        """Phones of a feature batch: for each utterance, the decoded IPA string split at word
        boundaries (what the original ZIPA returns); `inventory` as in `token_ids`."""
        return [text.split() for text in self.tokenizer.decode_batch(self.token_ids(feats, feat_lens, inventory))]

    def transcribe(
        self, audio: Sequence[AudioItem], sampling_rate: int | None = None, inventory: InventoryLike = None
    ) -> list[list[str]]:
        """Phones of a batch of audio items, decoded together (zero-padded as one batch);
        `sampling_rate` as in `features`; `inventory` (phones the output may use) as in
        `inventory_mask`."""
        return self.predict(*self.features(audio, sampling_rate), inventory=inventory)

    # ------------------------------------------------------------------------------------------
    # Token times, files and long audio
    # ------------------------------------------------------------------------------------------

    @property
    def frame_shift(self) -> float:
        """Seconds per encoder output frame (0.02 for CTC models, 0.04 for transducer models)."""
        return frame_shift(int(self.model.encoder.output_downsampling_factor))

    @property
    def time_grid(self) -> TimeGrid:
        """The frames token times are read on: the aligner's sub-frames when there is one, else
        the encoder frames (CTC spike or transducer emission times, `frame_time`)."""
        if self.aligner is None:
            return TimeGrid(FRAME_OFFSET, self.frame_shift)
        config = self.aligner.config
        return TimeGrid(config.time_offset, config.step, config.subframes)

    def token_label(self, token: int) -> str:
        """What a token stands for in a transcript: its IPA character, ``▁`` for a word
        boundary, or what sentencepiece decodes a special token to (``<unk>`` -> ``⁇``)."""
        piece = self.tokenizer.id_to_piece(token)
        if piece == WORD_BOUNDARY:
            return piece
        return self.tokenizer.decode([token]).strip() or piece

    @torch.inference_mode()
    def token_spans(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        decoding: str = "greedy",
        beam: int = 4,
        inventory: InventoryLike = None,
        topk: int = 0,
    ) -> list[list[TokenSpan]]:
        """Hypotheses of a feature batch with each token's encoder frames and confidence (see
        `zipa.decoding.alignment`).

        decoding: "greedy" (the ids of `token_ids`, with the frames of the greedy path) or
        "beam" (CTC prefix beam search / transducer modified beam search of width `beam`; the
        frames are the best alignment of the hypothesis found).
        `inventory`: restricts the tokens searched (`inventory_mask`); confidences are then
        renormalised over the allowed tokens. `topk` > 0: the first token of each phone gets
        `alternatives`, the phone's `topk` most probable tokens (`zipa.decoding.topk`: for CTC
        the posteriors averaged over the phone's frames, for transducers the joiner's
        distribution at its first token's emission; renormalised over non-blank tokens).
        """
        _check_search_args(decoding, topk)
        mask = self.inventory_mask(inventory)
        encoder_out, encoder_out_lens = self.model.forward_encoder(feats.to(self.device), feat_lens.to(self.device))
        return self._search(encoder_out, encoder_out_lens, decoding, beam, mask, topk)

    def _search(
        self,
        encoder_out: Tensor,
        encoder_out_lens: Tensor,
        decoding: str,
        beam: int,
        mask: TokenMask | None,
        topk: int,
    ) -> list[list[TokenSpan]]:
        """`token_spans` of an encoded batch (arguments checked)."""
        lengths = encoder_out_lens.tolist()
        if self.uses_ctc:
            log_probs = mask_log_probs(self.model.ctc_output(encoder_out), mask)
            if decoding == "greedy":
                spans = ctc_greedy_spans(log_probs, encoder_out_lens)
            else:
                hyps = ctc_prefix_beam_search(log_probs, encoder_out_lens, beam=beam)
                spans = [ctc_forced_align(log_probs[i, :n], hyp) for i, (hyp, n) in enumerate(zip(hyps, lengths))]
            if topk:
                spans = [self._ctc_topk(log_probs[i, :n], row, topk) for i, (row, n) in enumerate(zip(spans, lengths))]
            return spans
        if decoding == "greedy":
            hyps, frames, probs = transducer_greedy_search(
                self.model, encoder_out, encoder_out_lens, return_frames=True, token_mask=mask
            )
            spans = transducer_spans(hyps, frames, probs)
        else:
            hyps = modified_beam_search(self.model, encoder_out, encoder_out_lens, beam=beam, token_mask=mask)
            spans = [
                transducer_forced_align(self.model, encoder_out[i, :n], hyp, token_mask=mask)
                for i, (hyp, n) in enumerate(zip(hyps, lengths))
            ]
        if topk:
            spans = [
                self._transducer_topk(encoder_out[i, :n], row, topk, mask)
                for i, (row, n) in enumerate(zip(spans, lengths))
            ]
        return spans

    def phone_groups(self, tokens: Sequence[int]) -> list[list[int]]:
        """Indices of the tokens of each phone, grouped as `build_alignment` groups tokens: a
        base token and the modifiers after it, ``▁`` closing a phone and belonging to none."""
        groups: list[list[int]] = []
        open_phone = False
        for k, token in enumerate(tokens):
            label = self.token_label(token)
            if label == WORD_BOUNDARY:
                open_phone = False
            elif is_modifier(label) and open_phone:
                groups[-1].append(k)
            else:
                groups.append([k])
                open_phone = True
        return groups

    def _ctc_topk(self, log_probs: Tensor, spans: list[TokenSpan], k: int) -> list[TokenSpan]:
        """`spans` with the alternatives of each phone on its first token: the posteriors
        averaged over frames [first token's start, last token's end)."""
        groups = self.phone_groups([s.token for s in spans])
        ranges = [(spans[g[0]].start, spans[g[-1]].end) for g in groups]
        out = list(spans)
        for g, alternatives in zip(groups, ctc_alternatives(log_probs, ranges, k, self.tokenizer.blank_id)):
            out[g[0]] = dataclasses.replace(out[g[0]], alternatives=alternatives)
        return out

    def _transducer_topk(
        self, encoder_out: Tensor, spans: list[TokenSpan], k: int, mask: TokenMask | None
    ) -> list[TokenSpan]:
        """`spans` with the alternatives of each phone on its first token: the joiner's
        distribution where that token was emitted."""
        groups = self.phone_groups([s.token for s in spans])
        firsts = [g[0] for g in groups]
        alternatives = transducer_alternatives(
            self.model, encoder_out, [s.token for s in spans], [s.start for s in spans], firsts, k, mask
        )
        out = list(spans)
        for i, alts in zip(firsts, alternatives):
            out[i] = dataclasses.replace(out[i], alternatives=alts)
        return out

    def timed_tokens(
        self,
        audio: Sequence[AudioItem],
        decoding: str = "greedy",
        beam: int = 4,
        sampling_rate: int | None = None,
        inventory: InventoryLike = None,
        topk: int = 0,
    ) -> list[list[TimedToken]]:
        """Tokens with times in seconds of a batch of audio items (decoded as one batch);
        `sampling_rate` as in `features`, `inventory` and `topk` as in `token_spans`. The times
        are those of the aligner when there is one (see the class docstring)."""
        grid = self.time_grid
        feats, feat_lens = self.features(audio, sampling_rate)
        with torch.inference_mode():
            encoded = self.model.forward_encoder(feats.to(self.device), feat_lens.to(self.device))
        rows = self._timed_spans(*encoded, decoding, beam, self.inventory_mask(inventory), topk)
        return [[_timed(span, 0.0, grid) for span in timing] for _, timing in rows]

    @torch.inference_mode()
    def _timed_spans(
        self, encoder_out: Tensor, encoder_out_lens: Tensor, decoding: str, beam: int, mask: TokenMask | None, topk: int
    ) -> list[tuple[list[TokenSpan], list[TokenSpan]]]:
        """For each item of an encoded batch: its `token_spans` (encoder frames), and the spans
        its times come from (frames of `time_grid`): the same spans, or, with an aligner, the
        decoded phones placed on its sub-frames (`zipa.decoding.alignment.aligner_spans`), each
        token keeping its confidence and alternatives. A decoded phone may not start more than
        `REFINE_SLACK` before its token's frame: where the hypothesis lacks a phone, the aligner
        would otherwise stretch the next phone back over it."""
        _check_search_args(decoding, topk)
        rows = self._search(encoder_out, encoder_out_lens, decoding, beam, mask, topk)
        if self.aligner is None:
            return [(row, row) for row in rows]
        per = self.aligner.config.subframes
        slack = int(round(REFINE_SLACK / self.aligner.config.step))
        log_probs = self.aligner(encoder_out, encoder_out_lens).float().cpu()
        out = []
        for row, lp, n in zip(rows, log_probs, encoder_out_lens.tolist()):
            tokens, earliest = [s.token for s in row], [max(0, s.start * per - slack) for s in row]
            groups = self.phone_groups(tokens)
            try:
                placed = aligner_spans(lp[: n * per], tokens, groups, earliest)
            except ValueError:  # the bound leaves no way through (many tokens at the last frames)
                placed = aligner_spans(lp[: n * per], tokens, groups)
            out.append((row, [dataclasses.replace(s, start=p.start, end=p.end) for s, p in zip(row, placed)]))
        return out

    def timestamps(
        self,
        audio: Sequence[AudioItem],
        decoding: str = "greedy",
        beam: int = 4,
        sampling_rate: int | None = None,
        inventory: InventoryLike = None,
        topk: int = 0,
    ) -> list[Alignment]:
        """Transcripts with times of a batch of audio items (decoded as one batch): for each,
        an `Alignment` whose `text` is the transcript and whose `phones` and `words` are
        intervals in seconds with confidences (what the TextGrid and CTM writers write).
        `inventory`: the phones the output may use (`inventory_mask`); `topk` > 0: each phone
        also gets `alternatives`, its `topk` most probable tokens as (label, probability) pairs
        (see `token_spans`)."""
        timed = self.timed_tokens(audio, decoding, beam, sampling_rate, inventory, topk)
        return [self.alignment(tokens) for tokens in timed]

    def alignment(
        self,
        tokens: Sequence[TimedToken],
        duration: float | None = None,
        normalize: Callable[[str], str] | None = None,
    ) -> Alignment:
        """Transcript, phones and words of timed tokens (see `zipa.decoding.timestamps.build_alignment`)."""
        return build_alignment(tokens, self.token_label, duration, normalize)

    # ------------------------------------------------------------------------------------------
    # Forced alignment of given transcripts (zipa.inference.forced)
    # ------------------------------------------------------------------------------------------

    def align(
        self,
        audio: Sequence[AudioItem],
        transcript: str | Sequence[str] | None = None,
        *,
        text: str | Sequence[str] | None = None,
        lang: str | None = None,
        sampling_rate: int | None = None,
        remove_diacritics: bool = False,
        strict: bool = False,
    ) -> list[Alignment]:
        """Where the phones of given transcripts are in a batch of audio items (aligned as one
        batch, as `timestamps` decodes): for each item, an `Alignment` as `timestamps` returns,
        whose phones are exactly those of the transcript, normalised as training labels are.

        `transcript`: IPA, a string for one item or a list with one per item; or `text`:
        orthography, converted to IPA by `zipa.text.g2p` in language `lang` (``"en-us"``,
        ``"fra"``...). Symbols outside ZIPA's inventory are dropped and named in a
        `zipa.inference.forced.TranscriptWarning`. `remove_diacritics`: drop diacritics from
        the transcripts too (for models trained without them). A phone's confidence is its
        posterior probability averaged over its frames (see `zipa.inference.forced`).
        ValueError naming the item when a transcript is too long for its audio. Each alignment's
        `fit` says how well its transcript fits the audio (`zipa.decoding.fit`); one that cannot
        be the audio's is named in a `zipa.inference.forced.FitWarning` and in the alignment's
        `warnings`, or, with `strict`, is a ValueError.
        """
        from zipa.inference.forced import align_batch

        if (transcript is None) == (text is None):
            raise ValueError("give either transcript= (IPA) or text= (orthography, with lang=)")
        if text is not None and lang is None:
            raise ValueError("text= is orthography: give its language (lang=, e.g. 'en-us') for G2P")
        transcripts = transcript if text is None else text
        if transcripts is None:  # excluded above
            raise ValueError("give either transcript= (IPA) or text= (orthography, with lang=)")
        return align_batch(
            self,
            audio,
            transcripts,
            lang if text is not None else None,
            sampling_rate,
            remove_diacritics,
            strict,
        )

    def align_files(
        self,
        jobs: Iterable[AlignJob],
        options: DecodingOptions | None = None,
        *,
        lang: str | None = None,
        progress: None | bool | str | Progress = False,
        stop: Callable[[], bool] | None = None,
        **settings: Any,
    ) -> Iterator[FileAlignment]:
        """Forced alignment of files of any length, one `zipa.inference.forced.FileAlignment`
        per `AlignJob` (a file and its transcript, or the utterance intervals of a TextGrid
        tier), yielded in order as each is done. Each file, or utterance, is aligned on its own;
        a stretch longer than the options' `window` seconds is encoded in windows overlapping by
        `overlap` (`batch_size` windows at a time) and aligned in one pass. `options`: a
        `DecodingOptions` (window, overlap, batch_size, remove_diacritics), or its fields one
        by one in `settings`. `lang`: the transcripts are orthography in this language (G2P).
        `progress`, `stop`: as in `iter_transcribe_files`.
        """
        from zipa.inference.forced import align_files

        return align_files(self, jobs, DecodingOptions.of(options, **settings), lang, progress, stop)

    def transcribe_files(
        self,
        paths: Iterable[str | Path],
        options: DecodingOptions | None = None,
        *,
        progress: None | bool | str | Progress = False,
        group_files: int = GROUP_FILES,
        group_seconds: float = GROUP_SECONDS,
        **settings: Any,
    ) -> list[FileTranscript]:
        """Decode audio files of any length; one `FileTranscript` per path, in order.

        `iter_transcribe_files` collected into a list in the order of `paths`; the arguments
        are the same.
        """
        files = [Path(p) for p in paths]
        results: list[FileTranscript | None] = [None] * len(files)
        for i, result in self._iter_indexed(
            files, DecodingOptions.of(options, **settings), progress, group_files, group_seconds, None
        ):
            results[i] = result
        return results  # type: ignore[return-value]

    def evaluate(
        self,
        pairs: Iterable,
        options: DecodingOptions | None = None,
        *,
        sampling_rate: int | None = None,
        output_dir: PathLike | None = None,
        test_set: str = "test",
        settings: str = "evaluate",
        progress: None | bool | str | Progress = False,
        **option_values: Any,
    ) -> dict:
        """PER and PFER against reference IPA, as `zipa evaluate` computes them.

        `pairs`: ``(audio, ipa)``, ``(audio, ipa, language)`` or ``(audio, ipa, language,
        speaker)`` items (audio: a file, or an array at `sampling_rate`, default 16 kHz).
        References are normalised to the inventory as training labels are; the audio is decoded
        through `transcribe_files` with `options` (a `DecodingOptions`, or its fields one by one
        in `option_values`: batch_size, decoding, beam, window, remove_diacritics...). Returns
        the metrics dict: ``overall``, ``per_language``, ``per_speaker`` (when speakers are
        given), ``normalization`` (what normalising the references changed or dropped, per
        symbol) and ``failed``. With `output_dir`, also writes the icefall files there
        (``recogs-{test_set}-{settings}.txt``, ``errs-...``, ``metrics-....json``). See
        `zipa.evaluation.evaluate`.
        """
        from zipa.evaluation.evaluate import as_references, run_evaluation, score

        run = run_evaluation(
            self,
            list(as_references(pairs, sampling_rate)),
            DecodingOptions.of(options, **option_values),
            progress=progress,
        )
        return score(run, output_dir, test_set, settings)

    def iter_transcribe_files(
        self,
        paths: Iterable[str | Path],
        options: DecodingOptions | None = None,
        *,
        progress: None | bool | str | Progress = False,
        stop: Callable[[], bool] | None = None,
        group_files: int = GROUP_FILES,
        group_seconds: float = GROUP_SECONDS,
        **settings: Any,
    ) -> Iterator[FileTranscript]:
        """Decode audio files of any length, yielding each file's `FileTranscript` as soon as
        all its segments are decoded: NOT in the order of `paths` (see below).

        `options`: a `zipa.decoding.options.DecodingOptions`, or its fields one by one in
        `settings` (``window=20, batch_size=4, decoding="beam"...``, over the defaults or over
        `options`). A file that cannot be read or decoded gets its `error` set and no tokens;
        the others go on. Files longer than `window` seconds are cut into windows overlapping by
        `overlap` seconds (`zipa.inference.long_audio`), read piece by piece, so memory does not
        grow with file length. `decoding`, `beam`: as in `token_spans`; `inventory`, `topk`: as
        in `timestamps` (the mask is built, and warns, once per call; the tokens'
        `alternatives` carry the top-k).

        Files are taken in groups of consecutive paths, closed at `group_files` files or
        `group_seconds` seconds of audio, whichever comes first; the segments of a group are
        sorted longest first and decoded `batch_size` at a time, so files complete (and are
        yielded) in that order within their group, and a job's memory and the time to its first
        result stay bounded however many files it has. Batches, hence results, are those of
        decoding each group on its own.

        `progress`: a `zipa.utils.progress.Progress` (counting files, whoever made it
        closes it), a mode ("auto", "bar", "log", "none"), True (a tqdm bar on stderr), False
        (nothing) or None (a bar only when stderr is a terminal).
        `stop`: asked before each batch; when it returns True, the generator ends there (the
        files finished so far have been yielded). For a clean stop on a signal.
        """
        results = self._iter_indexed(
            [Path(p) for p in paths],
            DecodingOptions.of(options, **settings),
            progress,
            group_files,
            group_seconds,
            stop,
        )
        return (result for _, result in results)

    def _iter_indexed(
        self,
        paths: list[Path],
        options: DecodingOptions,
        progress: None | bool | str | Progress,
        group_files: int,
        group_seconds: float,
        stop: Callable[[], bool] | None,
    ) -> Iterator[tuple[int, FileTranscript]]:
        """`iter_transcribe_files` with each result's position in `paths`."""
        if group_files < 1 or not group_seconds > 0:
            raise ValueError(
                f"group_files must be at least 1 and group_seconds positive, got {group_files}, {group_seconds}"
            )
        mask = self.inventory_mask(options.inventory)
        reporter = Progress.make(progress, len(paths))
        owned = reporter is not progress
        stop = stop or (lambda: False)
        try:
            group: list[tuple[int, FileTranscript, AudioInfo]] = []
            seconds = 0.0
            for i, path in enumerate(paths):
                if stop():
                    return
                result = FileTranscript(path)
                try:
                    info = audio_info(path)
                except (ValueError, OSError) as e:
                    result.error = str(e)
                    reporter.file_done()
                    yield i, result
                    continue
                result.duration = info.duration
                group.append((i, result, info))
                seconds += info.duration
                if len(group) >= group_files or seconds >= group_seconds:
                    yield from self._decode_group(group, options, reporter, stop, mask)
                    group, seconds = [], 0.0
            if group:
                yield from self._decode_group(group, options, reporter, stop, mask)
        finally:
            if owned:
                reporter.close()

    def _decode_group(
        self,
        group: list[tuple[int, FileTranscript, AudioInfo]],
        options: DecodingOptions,
        reporter: Progress,
        stop: Callable[[], bool],
        mask: TokenMask | None,
    ) -> Iterator[tuple[int, FileTranscript]]:
        """Decode one group's segments longest first; yield each file once all its segments
        are decoded (or as soon as one fails)."""
        results = [result for _, result, _ in group]
        segments: list[Segment] = []
        for k, (_, _, info) in enumerate(group):
            segments += plan_segments(k, info, options.window, options.overlap)
        left = Counter(s.file_index for s in segments)
        # Longest first: equal-length windows batch together, and memory peaks at the start.
        segments.sort(key=lambda s: (-s.length / s.sample_rate, s.file_index, s.index))

        pieces: dict[int, dict[int, list[TimedToken]]] = defaultdict(dict)
        for start in range(0, len(segments), options.batch_size):
            if stop():
                return
            batch = [s for s in segments[start : start + options.batch_size] if results[s.file_index].error is None]
            for segment, tokens in self._decode_segments(batch, results, options, mask):
                pieces[segment.file_index][segment.index] = tokens
            finished = []
            for segment in batch:
                result = results[segment.file_index]
                reporter.advance(max(0.0, min(segment.own_to, result.duration) - max(segment.own_from, 0.0)))
                left[segment.file_index] -= 1
                if segment.file_index not in finished and (result.error is not None or left[segment.file_index] == 0):
                    finished.append(segment.file_index)
            for k in finished:
                result, got = results[k], pieces.pop(k, {})
                if result.error is None:
                    result.tokens = [t for index in sorted(got) for t in got[index]]
                reporter.file_done()
                yield group[k][0], result

    def encode_segments(
        self, segments: Sequence[tuple[Path, Segment]]
    ) -> tuple[list[int], Tensor | None, Tensor | None, dict[int, str]]:
        """The one windowed encoder: read segments of files (windows, `zipa.inference.long_audio`),
        make their features as one batch and encode them. Returns (the positions encoded, in
        order; encoder_out; encoder_out_lens; {position: why it was left out}). A segment that
        cannot be read, or is too short for the encoder, is left out with its reason, and the
        others' features are made without it (padding changes a batch's features)."""
        positions, audio, errors = [], [], {}
        for k, (path, segment) in enumerate(segments):
            try:
                samples = read_segment(path, segment)
                if samples.size < MIN_SAMPLES:
                    raise ValueError(
                        f"{path}: audio too short ({samples.size} samples at 16 kHz; the encoder needs about 0.1 s)"
                    )
            except (ValueError, OSError, RuntimeError) as e:
                errors[k] = str(e)
                continue
            positions.append(k)
            audio.append(samples)
        while positions:
            feats, feat_lens = compute_fbank(audio)
            short = [i for i, n in enumerate(feat_lens.tolist()) if n < MIN_FEATURE_FRAMES]
            if not short:
                encoder_out, encoder_out_lens = self.model.forward_encoder(
                    feats.to(self.device), feat_lens.to(self.device)
                )
                return positions, encoder_out, encoder_out_lens, errors
            for i in short:
                errors[positions[i]] = (
                    f"{segments[positions[i]][0]}: audio too short ({feat_lens[i].item()} feature "
                    f"frames; the encoder needs at least {MIN_FEATURE_FRAMES}, about 0.1 s)"
                )
            positions = [k for i, k in enumerate(positions) if i not in short]
            audio = [x for i, x in enumerate(audio) if i not in short]
        return [], None, None, errors

    @torch.inference_mode()
    def _decode_segments(
        self, batch: list[Segment], results: list[FileTranscript], options: DecodingOptions, mask: TokenMask | None
    ) -> list[tuple[Segment, list[TimedToken]]]:
        """Encode and decode one batch of segments; a segment that fails marks its file's error
        and is left out. Returns each decoded segment's kept tokens."""
        batch = [s for s in batch if results[s.file_index].error is None]
        positions, encoder_out, encoder_out_lens, errors = self.encode_segments(
            [(results[s.file_index].path, s) for s in batch]
        )
        for k, error in errors.items():
            results[batch[k].file_index].error = error
        if not positions or encoder_out is None or encoder_out_lens is None:  # None exactly when none is encoded
            return []
        shift, grid = self.frame_shift, self.time_grid
        out = []
        rows = self._timed_spans(encoder_out, encoder_out_lens, options.decoding, options.beam, mask, options.topk)
        for segment, (spans, timing) in zip((batch[k] for k in positions), rows):
            offset = segment.start_time
            kept = [
                _timed(timed, offset, grid)
                for span, timed in zip(spans, timing)
                if owns(segment, offset + frame_time(span.start + 0.5, shift))
            ]
            if self.aligner is not None:  # keep aligner times in the window's part, so windows stay in order
                kept = [_clamped(token, segment.own_from, segment.own_to) for token in kept]
            out.append((segment, kept))
        return out


@dataclass
class FileTranscript:
    """The decoding of one file: its tokens with global times, or the error that stopped it."""

    path: Path
    duration: float = 0.0
    tokens: list[TimedToken] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _check_search_args(decoding: str, topk: int) -> None:
    if decoding not in DECODING_METHODS:
        raise ValueError(f"decoding must be one of {', '.join(DECODING_METHODS)}, got {decoding!r}")
    if topk < 0:
        raise ValueError(f"topk must be 0 (none) or more, got {topk}")


def _clamped(token: TimedToken, lo: float, hi: float) -> TimedToken:
    """``token`` with its start moved into [lo, hi] (and its end not before its start)."""
    start = min(max(token.start, lo), hi)
    return dataclasses.replace(token, start=start, end=max(token.end, start))


def _timed(span: TokenSpan, offset: float, grid: TimeGrid) -> TimedToken:
    return TimedToken(
        span.token,
        round(offset + grid.time(span.start), 6),
        round(offset + grid.time(span.end), 6),
        span.confidence,
        span.alternatives,
    )
