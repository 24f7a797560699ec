"""The simple inference API of the original ZIPA scripts (`zipa_ctc_inference.py`,
`zipa_transducer_inference.py`): same function and method names, same return values."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch

from zipa.inference.transcriber import PathLike, Transcriber
from zipa.model.protocols import EncoderModel
from zipa.text.tokenizer import default_bpe_model_path


class ZipaModel(Transcriber):
    """A loaded model, as the original's `ZIPA_CTC` / `ZIPA_TRANSDUCER`."""

    @property
    def encoder(self) -> EncoderModel:
        """The AsrModel (the original's name for it)."""
        return self.model

    def get_fbank(self, audio: Sequence, sampling_rate: int | None = None) -> tuple:
        """(features (N, T, 80), feature_lens (N,)) of a list of arrays or audio files; arrays
        are at `sampling_rate` (default 16 kHz, as the original) and resampled to 16 kHz."""
        return self.features(audio, sampling_rate)

    def inference(self, audio: Sequence, sampling_rate: int | None = None) -> list[list[str]]:
        """For each item, the decoded IPA split on whitespace (word boundaries).

        The batch is zero-padded as one; padding reaches valid frames through the conv front
        end, so an utterance decoded in a batch may differ slightly from decoding it alone,
        exactly as in the original. Arrays are at `sampling_rate` (default 16 kHz, as the
        original assumes); files carry their own rate.
        """
        return self.transcribe(audio, sampling_rate)


def initialize_model(
    model_path: PathLike,
    bpe_model: PathLike | None = None,
    device: str | torch.device | None = None,
    aligner="auto",
    **config_overrides,
) -> ZipaModel:
    """Load a ZIPA checkpoint (architecture read from its weights) and its tokenizer.

    `model_path` may also be a model name or Hub repo id (`zipa models`); `bpe_model` defaults
    to the packaged tokenizer (zipa/assets/ipa_simplified/unigram_127.model); `device` to cuda when
    available, else cpu. `config_overrides` (e.g. chunk_size=(16,), left_context_frames=(64,)
    for a causal model) set what the weights cannot show. `aligner`: the frame aligner that
    times phones ("auto": ``<model stem>.aligner.pt`` beside the model when there is one; a
    path; None), see `Transcriber.load_aligner`.
    """
    model = ZipaModel.from_checkpoint(model_path, bpe_model, device, aligner=aligner, **config_overrides)
    return cast(ZipaModel, model)  # from_checkpoint builds its `cls`


def main(argv: Sequence[str] | None = None, description: str = "Transcribe audio files to IPA.") -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3)")
    parser.add_argument("--model", required=True, help="checkpoint (.pth), or a model name from `zipa models`")
    parser.add_argument("--bpe-model", default=str(default_bpe_model_path()), help="tokenizer model")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    args = parser.parse_args(argv)
    model = initialize_model(args.model, args.bpe_model, args.device)
    failed = 0
    for path in args.audio:
        try:
            phones = model.inference([path])[0]
        except (ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{Path(path).name}\t{' '.join(phones)}")
    return 1 if failed else 0
