"""Tiny random-weight models and synthetic audio for the CLI, pretrained and long-audio tests.

The models (the `tiny` and `tiny-transducer` presets of `zipa.model.config`) are built here (no
reference data needed). Their output layers are calibrated on synthetic speech-like audio so
that greedy hypotheses are varied, depend on the input, contain blank stretches and word
boundaries, and never emit <sos/eos> or <unk>: random outputs then exercise the timing and
stitching code like a real model would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from zipa.audio.features import compute_fbank
from zipa.model.asr_model import build_model
from zipa.model.config import preset
from zipa.model.io import save_model

SPECIAL_IDS = (1, 2)  # <sos/eos>, <unk>


def speechlike(seconds: float, seed: int, rate: int = 16000) -> np.ndarray:
    """Harmonic bursts of random pitch and loudness with pauses: varied, deterministic audio."""
    rng = np.random.default_rng(seed)
    total = int(round(seconds * rate))
    out, n = [], 0
    while n < total:
        length = int(rng.integers(rate // 20, rate // 4))
        if rng.random() < 0.2:
            seg = np.zeros(length)
        else:
            t = np.arange(length) / rate
            f0 = rng.uniform(80, 300)
            seg = sum(rng.uniform(0.02, 0.12) * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) for k in range(1, 6))
            seg = (seg + rng.uniform(0, 0.05) * rng.standard_normal(length)) * np.hanning(length)
        out.append(seg)
        n += length
    return np.concatenate(out)[:total].astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    sf.write(str(path), samples, rate, subtype="FLOAT")
    return path


def _calibrate(linear: torch.nn.Linear, features: torch.Tensor, blank_bias: float, boundary_bias: float, seed: int) -> None:
    """Set a random output layer on whitened `features` (N, D) with chosen blank/▁ rates."""
    mean, std = features.mean(0), features.std(0) + 1e-4
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(linear.out_features, features.shape[1], generator=g) * 2.0 / features.shape[1] ** 0.5 / std
    bias = -weight @ mean
    bias[0] += blank_bias
    bias[3] += boundary_bias
    bias[list(SPECIAL_IDS)] = -30.0
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)


def make_tiny_model(path: Path, kind: str = "ctc", seed: int = 0) -> Path:
    """Build, calibrate and save a tiny CTC or transducer model; returns the .pth path."""
    torch.manual_seed(seed)
    config = preset("tiny" if kind == "ctc" else "tiny-transducer")
    model = build_model(config).eval()
    feats, lens = compute_fbank([speechlike(8, s) for s in range(3)])
    with torch.inference_mode():
        encoder_out, _ = model.forward_encoder(feats, lens)
    if kind == "ctc":
        hidden = encoder_out.reshape(-1, encoder_out.shape[-1]).clone()
        _calibrate(model.ctc_output[1], hidden, blank_bias=5.5, boundary_bias=5.0, seed=seed + 1)
    else:
        with torch.inference_mode():
            joined = model.joiner.encoder_proj(encoder_out).tanh()  # decoder part added at run time
        hidden = joined.reshape(-1, joined.shape[-1]).clone()
        _calibrate(model.joiner.output_linear, hidden, blank_bias=4.5, boundary_bias=3.5, seed=seed + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, config, path)
    return path


_built: dict = {}


def tiny_model_path(tmp_path_factory, kind: str = "ctc") -> Path:
    """A tiny model built once per test session (shared by the test modules)."""
    if kind not in _built:
        _built[kind] = make_tiny_model(tmp_path_factory.mktemp(f"tiny_{kind}") / "model.pth", kind)
    return _built[kind]
