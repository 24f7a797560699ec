"""Augmentation for the frame aligner (`zipa.audio.augment`): each transform keeps sound where it
was (or, for speed, moves it exactly by the factor), and does what it says to the signal."""

import random

import numpy as np
import pytest

from zipa.audio import augment

SR = augment.SAMPLE_RATE


def _burst(at=0.5, seconds=1.5):
    """Silence with a 200 ms harmonic burst (200 Hz + overtones) starting at ``at`` s."""
    x = np.zeros(int(seconds * SR), dtype=np.float32)
    t = np.arange(int(0.2 * SR)) / SR
    x[int(at * SR):int(at * SR) + t.size] = 0.5 * sum(np.sin(2 * np.pi * 200 * k * t) / k for k in range(1, 8))
    return x


def _onset(x, fraction=0.1):
    """First sample whose 2 ms energy is over ``fraction`` of the loudest 2 ms."""
    hop = SR // 500
    env = np.array([np.sqrt(np.mean(np.square(x[k:k + hop], dtype=np.float64))) for k in range(0, len(x) - hop, hop)])
    return np.flatnonzero(env > fraction * env.max())[0] * hop


TRANSFORMS = {
    "noise 20 dB": lambda x, r: augment.add_noise(x, 20, r),
    "pink noise 20 dB": lambda x, r: augment.add_noise(x, 20, r, "pink"),
    "reverb": lambda x, r: augment.reverberate(x, 0.5, r),
    "gain": lambda x, r: augment.change_gain(x, -12),
    "telephone": lambda x, r: augment.telephone(x),
    **{f"codec {s}": (lambda f, s: lambda x, r: augment.codec(x, f, s))(f, s) for f, s in augment.available_codecs()},
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transform_keeps_the_sound_where_it_was(name):
    x = _burst()
    y = TRANSFORMS[name](x, np.random.default_rng(0))
    assert y.dtype == np.float32 and y.shape == x.shape and np.isfinite(y).all()
    assert abs(_onset(y) - _onset(x)) <= 0.004 * SR, (name, _onset(y) - _onset(x))


def test_transforms_change_the_signal_as_named():
    x, rng = _burst(), np.random.default_rng(1)
    noisy = augment.add_noise(x, 10, rng)
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((noisy - x).astype(np.float64) ** 2))
    assert snr == pytest.approx(10, abs=0.1)
    assert np.max(np.abs(augment.change_gain(x, -20))) == pytest.approx(0.1 * np.max(np.abs(x)), rel=1e-5)
    # Telephone: nothing left at 100 Hz or 5 kHz, a 1 kHz tone passes.
    t = np.arange(SR) / SR
    for f, kept in ((100, False), (1000, True), (5000, False)):
        y = augment.telephone(np.sin(2 * np.pi * f * t).astype(np.float32))
        ratio = np.sqrt(np.mean(y[2000:-2000] ** 2) / 0.5)
        assert (ratio > 0.9) if kept else (ratio < 0.1), (f, ratio)
    # Reverberation leaves a tail after the burst ends.
    tail = slice(int(0.72 * SR), int(0.8 * SR))
    assert np.abs(x[tail]).max() == 0 and np.abs(augment.reverberate(x, 0.5, rng)[tail]).max() > 0.01


def test_speed_moves_every_time_by_the_factor():
    x = _burst(at=0.6)
    for factor in (0.9, 1.1):
        y = augment.change_speed(x, factor)
        assert len(y) == round(len(x) / factor)
        assert abs(_onset(y) - _onset(x) / factor) <= 0.003 * SR


def test_random_augmentation_is_a_function_of_the_seed():
    x = _burst()
    a = augment.random_augmentation(random.Random(5))
    b = augment.random_augmentation(random.Random(5))
    assert a[0] == b[0] and a[2] == b[2] and np.array_equal(a[1](x), b[1](x))
    descriptions = {augment.random_augmentation(random.Random(s))[2] for s in range(40)}
    assert len(descriptions) == 40 and any("noise" in d for d in descriptions) and any("reverb" in d for d in descriptions)
