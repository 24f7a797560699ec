"""A frame classifier on the frozen encoder output, for phone times you can trust.

CTC posteriors are peaky: a phone's spike sits anywhere from a frame before to two frames after
where the phone starts, so CTC times are good to ±20 ms at best about half the time. A
`FrameAligner` is a small head trained (`zipa.train.aligner`) on speech whose phone times are
known, to say at 100 Hz *which phone is sounding*: class = the token id of the phone's first
IPA character, 0 (the blank id) = silence. Forced alignment then runs a Viterbi pass over its
log-probabilities (`zipa.decoding.alignment.phone_forced_align`) and a phone starts where the
pass enters it.

Shape: ``Conv1d(encoder_dim, channels, kernel) -> ReLU -> Linear(channels, subframes * vocab)``,
the output of each encoder frame cut into ``subframes`` consecutive sub-frames (2 for the 50 Hz
encoder of CTC models: 10 ms each). Sub-frame ``k`` of an utterance covers
``[time_offset + k * step, time_offset + (k + 1) * step)`` seconds with ``step = frame_shift /
subframes``; the training code (`zipa.train.aligner`) sets ``time_offset`` so that an encoder
frame's sub-frames cover the time CTC tokens at that frame are given (`zipa.inference.
timestamps.frame_time`).

The aligner belongs to one encoder: it is saved (`save_aligner`) as its own small file with its
configuration and a fingerprint of that encoder's weights (`encoder_fingerprint`), and
`load_aligner` with another model's encoder is an error (`AlignerMismatchError`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

from zipa.utils.atomic import open_atomic

PathLike = Union[str, Path]
FORMAT = "zipa-frame-aligner"
VERSION = 1
ALIGNER_SUFFIX = ".aligner.pt"  # <model stem>.aligner.pt beside the model file
SILENCE = 0  # the class of silence: the blank id


class AlignerMismatchError(ValueError):
    """An aligner used with a model it was not trained on (another encoder, vocabulary or rate)."""


@dataclass(frozen=True)
class AlignerConfig:
    encoder_dim: int
    vocab_size: int
    frame_shift: float  # seconds per encoder frame (0.02 CTC, 0.04 transducer)
    time_offset: float  # seconds from the start of the audio to where sub-frame 0 begins
    subframes: int = 2  # sub-frames per encoder frame
    channels: int = 256
    kernel_size: int = 5

    def __post_init__(self):
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if self.subframes < 1 or self.channels < 1 or self.encoder_dim < 1 or self.vocab_size < 2:
            raise ValueError(f"invalid aligner config: {self}")

    @property
    def step(self) -> float:
        """Seconds per sub-frame."""
        return self.frame_shift / self.subframes


class FrameAligner(nn.Module):
    """Encoder output (N, T, encoder_dim) -> log-probabilities (N, T * subframes, vocab) of the
    phone class sounding in each sub-frame (see the module docstring)."""

    def __init__(self, config: AlignerConfig, encoder_fingerprint: str = ""):
        super().__init__()
        self.config = config
        self.encoder_fingerprint = encoder_fingerprint
        self.conv = nn.Conv1d(config.encoder_dim, config.channels, config.kernel_size, padding=config.kernel_size // 2)
        self.out = nn.Linear(config.channels, config.subframes * config.vocab_size)

    def forward(self, encoder_out: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``lengths`` (N,): valid encoder frames of each item; the frames after them (batch
        padding) are zeroed first, so that an item's output does not depend on what pads it."""
        if lengths is not None:
            frames = torch.arange(encoder_out.shape[1], device=encoder_out.device)
            valid = frames < lengths.to(encoder_out.device)[:, None]
            encoder_out = encoder_out * valid.unsqueeze(-1).to(encoder_out.dtype)
        hidden = torch.relu(self.conv(encoder_out.transpose(1, 2))).transpose(1, 2)
        logits = self.out(hidden)
        n, t = encoder_out.shape[:2]
        return logits.reshape(n, t * self.config.subframes, self.config.vocab_size).float().log_softmax(dim=-1)


def encoder_fingerprint(model: object, samples: int = 64) -> str:
    """A short hash of the weights that make the encoder output (``encoder_embed`` and
    ``encoder``): name, shape and ``samples`` evenly spaced values of every parameter. Two
    encoders differ in it as soon as training has changed them; it costs milliseconds even for
    the large models."""
    parts: list[Any] = [getattr(model, "encoder_embed", None), getattr(model, "encoder", None)]
    if not all(isinstance(p, nn.Module) for p in parts):
        raise AlignerMismatchError(
            "an aligner needs a PyTorch model with encoder_embed and encoder (the ONNX backend has none)"
        )
    digest = hashlib.sha256()
    for prefix, part in zip(("encoder_embed", "encoder"), parts):
        for name, param in part.named_parameters():
            flat = param.detach().reshape(-1)
            index = torch.linspace(0, flat.numel() - 1, min(samples, flat.numel()), device=flat.device).long()
            digest.update(f"{prefix}.{name}:{tuple(param.shape)}".encode())
            digest.update(flat[index].double().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_aligner(
    aligner: FrameAligner, model: object, vocab_size: int, frame_shift: float, where: str = "the aligner"
) -> None:
    """AlignerMismatchError saying what differs when ``aligner`` was not trained on ``model``
    (its encoder weights, its vocabulary size or its frame rate)."""
    config = aligner.config
    if config.vocab_size != vocab_size:
        raise AlignerMismatchError(f"{where} has {config.vocab_size} classes, the model's tokenizer {vocab_size}")
    if abs(config.frame_shift - frame_shift) > 1e-9:
        raise AlignerMismatchError(
            f"{where} reads encoder frames of {config.frame_shift * 1000:g} ms, the model "
            f"makes {frame_shift * 1000:g} ms frames"
        )
    found = encoder_fingerprint(model)
    if aligner.encoder_fingerprint != found:
        raise AlignerMismatchError(
            f"{where} was trained on another encoder (fingerprint {aligner.encoder_fingerprint or 'none'}, this "
            f"model's is {found}): train one for this model (zipformer_crctc/train_aligner.py --model-path MODEL)"
        )


def save_aligner(aligner: FrameAligner, path: PathLike, info: dict[str, Any] | None = None) -> None:
    """Write ``aligner`` (weights, config, encoder fingerprint, and ``info``: how it was trained)
    to ``path`` atomically."""
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": asdict(aligner.config),
        "encoder_fingerprint": aligner.encoder_fingerprint,
        "state_dict": {k: v.detach().cpu() for k, v in aligner.state_dict().items()},
        "info": dict(info or {}),
    }
    with open_atomic(path, "wb") as f:
        torch.save(state, f)


def read_aligner_info(path: PathLike) -> dict[str, Any]:
    """The ``info`` stored with an aligner (training settings and results)."""
    return dict(_read(Path(path)).get("info", {}))


def load_aligner(
    path: PathLike,
    model: object | None = None,
    vocab_size: int | None = None,
    frame_shift: float | None = None,
    device: str | torch.device = "cpu",
) -> FrameAligner:
    """The aligner saved at ``path``, in eval mode on ``device``. With ``model`` (and its
    ``vocab_size`` and ``frame_shift``), AlignerMismatchError unless it was trained on that
    model's encoder (`check_aligner`)."""
    path = Path(path)
    state = _read(path)
    aligner = FrameAligner(AlignerConfig(**state["config"]), state["encoder_fingerprint"])
    aligner.load_state_dict(state["state_dict"])
    if model is not None:
        check_aligner(
            aligner,
            model,
            vocab_size if vocab_size is not None else aligner.config.vocab_size,
            frame_shift if frame_shift is not None else aligner.config.frame_shift,
            str(path),
        )
    return aligner.to(device).eval()


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"aligner not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a zip that is not torch's, a truncated file...
        raise ValueError(f"{path}: not a ZIPA aligner file ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a ZIPA aligner file (zipformer_crctc/train_aligner.py writes them)")
    if state.get("version") != VERSION:
        raise ValueError(f"{path}: aligner file version {state.get('version')}, this code reads {VERSION}")
    return state


def aligner_path_for(model_path: PathLike) -> Path:
    """Where a model's aligner sits by default: ``<model stem>.aligner.pt`` beside it."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ALIGNER_SUFFIX)
