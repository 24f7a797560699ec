"""Audio loading and fbank features, checked against the original ZIPA's stored inputs."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from zipa.audio.features import compute_fbank
from zipa.audio.load import load_audio, load_batch, resample

REPO = Path(__file__).resolve().parents[1]
PARITY = REPO.parent / "shared" / "reference" / "parity"
FIXTURES = ["ctc_tiny", "ctc_tiny_causal", "transducer_tiny"]


def _expected(name):
    folder = PARITY / name
    if not folder.is_dir():
        pytest.skip("reference data (../shared) absent")
    return folder, torch.load(folder / "expected.pt", weights_only=True)


def _sine(freq, rate, seconds=1.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x, rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * rate / len(x)


# --- against the original's fixtures ---------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_wav_files_load_to_the_original_samples(name):
    folder, expected = _expected(name)
    for i, ref in enumerate(expected["audio"]):
        ours = load_audio(folder / "audio" / f"clip{i}.wav")
        assert ours.dtype == np.float32 and ours.ndim == 1
        np.testing.assert_array_equal(ours, ref.numpy())


@pytest.mark.parametrize("name", FIXTURES)
def test_fbank_matches_the_original(name):
    folder, expected = _expected(name)
    ref, ref_lens = expected["feats"], expected["feat_lens"]
    for audio in (expected["audio"], [a.numpy() for a in expected["audio"]]):
        feats, lens = compute_fbank(audio)
        assert feats.dtype == torch.float32 and lens.dtype == torch.int64
        assert feats.shape == ref.shape
        assert torch.equal(lens, ref_lens)
        # Padding is exactly zero, as pad_sequence leaves it.
        for i, n in enumerate(lens.tolist()):
            assert not feats[i, n:].any()
        # Not bit-identical across torch builds: FFT rounding shows in near-silent mel bins
        # (log domain), so compare overall and in the energy domain.
        rel_l2 = ((feats - ref).norm() / ref.norm()).item()
        assert rel_l2 < 2e-5, rel_l2
        assert (feats - ref).abs().max().item() < 1e-2
        energy_err = (feats.exp() - ref.exp()).abs().amax(dim=-1)
        assert (energy_err / ref.exp().amax(dim=-1).clamp_min(1e-10)).max().item() < 1e-5


def test_fbank_of_loaded_files_matches_the_original():
    folder, expected = _expected("ctc_tiny")
    audio = load_batch([folder / "audio" / f"clip{i}.wav" for i in range(3)])
    feats, lens = compute_fbank(audio)
    torch.testing.assert_close(feats, compute_fbank(expected["audio"])[0], rtol=0, atol=0)
    assert torch.equal(lens, expected["feat_lens"])


# --- resampling and channels -----------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_length_and_frequency(rate, tmp_path):
    x = _sine(440.0, rate)
    for item, kwargs in [(x, {"source_rate": rate}), (torch.from_numpy(x), {"source_rate": rate})]:
        y = load_audio(item, **kwargs)
        assert y.dtype == np.float32
        assert abs(len(y) - 16000) <= 1
        assert abs(_peak_hz(y, 16000) - 440.0) < 2.0
    path = tmp_path / f"sine_{rate}.flac"
    sf.write(path, x, rate)
    y = load_audio(path)
    assert abs(len(y) - 16000) <= 1
    assert abs(_peak_hz(y, 16000) - 440.0) < 2.0


@pytest.mark.parametrize("suffix", ["ogg", "mp3"])
def test_compressed_files(suffix, tmp_path):
    if suffix == "mp3" and "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no mp3 support")
    path = tmp_path / f"sine.{suffix}"
    sf.write(path, _sine(440.0, 44100), 44100)
    y = load_audio(path)
    assert y.dtype == np.float32 and abs(len(y) - 16000) <= 1152  # mp3 may pad a frame
    assert abs(_peak_hz(y, 16000) - 440.0) < 2.0


def test_16k_input_is_returned_unchanged():
    x = _sine(300.0, 16000)
    np.testing.assert_array_equal(load_audio(x), x)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = _sine(440.0, 16000), _sine(1000.0, 16000)
    mono = (left + right) / 2
    np.testing.assert_allclose(load_audio(np.stack([left, right])), mono, atol=1e-7)  # (C, S)
    np.testing.assert_allclose(load_audio(np.stack([left, right], 1)), mono, atol=1e-7)  # (S, C)
    np.testing.assert_allclose(load_audio(torch.from_numpy(np.stack([left, right]))), mono,
                               atol=1e-7)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], 1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), mono, atol=1e-7)


def test_integer_pcm_is_scaled():
    x = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    np.testing.assert_allclose(load_audio(x), [0.0, 0.5, -1.0, 32767 / 32768])


def test_silence_is_valid():
    silence = np.zeros(16000, dtype=np.float32)
    np.testing.assert_array_equal(load_audio(silence), silence)
    feats, lens = compute_fbank([silence])
    assert feats.shape == (1, 100, 80) and torch.isfinite(feats).all()


# --- errors name the item --------------------------------------------------------------------


def test_empty_audio_is_refused(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        load_audio(np.zeros(0, dtype=np.float32))
    with pytest.raises(ValueError, match="empty"):
        load_audio(np.zeros((2, 0), dtype=np.float32))
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match=r"empty\.wav.*empty"):
        load_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(bad):
    x = _sine(440.0, 16000)
    x[100] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_audio(x)
    with pytest.raises(ValueError, match="item 1"):
        load_batch([_sine(440.0, 16000), x])


def test_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"this is not audio" * 100)
    with pytest.raises(ValueError, match="garbage.wav"):
        load_audio(path)
    with pytest.raises(ValueError, match=r"item 2 \(.*garbage\.wav\)"):
        load_batch([_sine(440.0, 16000), _sine(440.0, 16000), path])


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.flac"):
        load_audio(tmp_path / "missing.flac")


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        load_audio(np.zeros((2, 3, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="padded batch"):
        load_audio(np.zeros((16, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="expected a path"):
        load_audio([0.0, 0.1])
    with pytest.raises(ValueError, match="item 0"):
        compute_fbank([np.zeros((2, 16000), dtype=np.float32)])
    with pytest.raises(ValueError, match="item 1 is too short"):
        compute_fbank([np.zeros(16000, dtype=np.float32), np.zeros(10, dtype=np.float32)])
