"""The one path from audio to IPA phones that every front end shares.

audio (files or arrays) -> `zipa.audio` (16 kHz mono) -> `zipa.features` (fbank, zero-padded
batch) -> `AsrModel.forward_encoder` -> CTC or transducer head -> greedy search -> tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from zipa.audio import AudioItem, load_batch
from zipa.checkpoint import load_model
from zipa.decoding import ctc_greedy_search, transducer_greedy_search
from zipa.features import compute_fbank
from zipa.model.subsampling import MIN_FEATURE_FRAMES
from zipa.tokenizer import Tokenizer, default_bpe_model_path

PathLike = Union[str, Path]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        """Load a released `.pth` (or an icefall checkpoint); the architecture is read from the
        weights, settings they cannot show from `config_overrides` or a config.json beside it."""
        model, _ = load_model(model_path, **config_overrides)
        tokenizer = Tokenizer.from_file(bpe_model if bpe_model is not None else default_bpe_model_path())
        return cls(model, tokenizer, device)

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
