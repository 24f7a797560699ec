"""Long audio: windows, stitching with global times, bounded reads and bounded peak memory."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO
from tiny_models import speechlike, tiny_model_path, write_wav

from zipa.audio.load import load_audio
from zipa.cli import main
from zipa.inference.long_audio import AudioInfo, plan_segments, plan_windows
from zipa.decoding.timestamps import FRAME_OFFSET
from zipa.inference.transcriber import Transcriber

praatio_textgrid = pytest.importorskip("praatio.textgrid")
MEMORY_GROWTH_LIMIT_MB = 150


@pytest.fixture(scope="module")
def ctc_path(tmp_path_factory):
    return tiny_model_path(tmp_path_factory, "ctc")


@pytest.fixture(scope="module")
def ctc(ctc_path):
    return Transcriber.from_checkpoint(ctc_path, device="cpu")


@pytest.fixture(scope="module")
def transducer(tmp_path_factory):
    return Transcriber.from_checkpoint(tiny_model_path(tmp_path_factory, "transducer"), device="cpu")


@pytest.fixture(scope="module")
def long_flac(tmp_path_factory):
    """150 s of 16 kHz audio (6 windows of 30 s), as FLAC so reads seek in a compressed file."""
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(str(path), speechlike(150, 7), 16000, subtype="PCM_16")
    return path


@pytest.mark.parametrize("seconds", [5.0, 30.0, 30.01, 31.0, 59.0, 150.0, 3600.0])
@pytest.mark.parametrize("window, overlap", [(30.0, 2.0), (10.0, 0.0), (20.0, 5.0)])
def test_windows_cover_the_file_and_ownership_tiles_it(seconds, window, overlap):
    rate = 16000
    n = int(seconds * rate)
    windows = plan_windows(n, rate, window, overlap)
    if n <= window * rate:
        assert windows == [(0, n)]
        return
    size = int(window * rate)
    assert all(length == size for _, length in windows)  # equal lengths: no padding in a batch
    assert windows[0][0] == 0 and windows[-1][0] + size == n
    for (a, _), (b, _) in zip(windows, windows[1:]):
        assert a < b and a + size - b >= overlap * rate  # overlap at least `overlap`
    segments = plan_segments(0, AudioInfo(n, rate), window, overlap)
    assert segments[0].own_from == -math.inf and segments[-1].own_to == math.inf
    for s, t in zip(segments, segments[1:]):
        assert s.own_to == t.own_from
        # Each window keeps at least overlap/2 away from the edges it shares with a neighbour.
        assert s.own_to <= (s.start + s.length) / rate - overlap / 2 + 1e-9
        assert t.own_from >= t.start / rate + overlap / 2 - 1e-9


def _one_by_one(transcriber, samples, rate, window, overlap, decoding="greedy"):
    """Decode each window alone from the full signal; keep what each window owns (tokens
    whose first frame's centre lies between the midpoints of the overlaps)."""
    shift = transcriber.frame_shift
    windows = plan_windows(len(samples), rate, window, overlap)
    bounds = [-math.inf] + [(b + a + n) / 2 / rate for (a, n), (b, _) in zip(windows, windows[1:])] + [math.inf]
    kept = []
    for k, (start, length) in enumerate(windows):
        (spans,) = transcriber.token_spans(*transcriber.features([samples[start : start + length]]), decoding=decoding)
        for span in spans:
            centre = start / rate + FRAME_OFFSET + (span.start + 0.5) * shift
            if bounds[k] <= centre < bounds[k + 1]:
                kept.append((span.token, round(start / rate + FRAME_OFFSET + span.start * shift, 6)))
    return kept


@pytest.fixture(scope="module")
def long_result(ctc, long_flac):
    (result,) = ctc.transcribe_files([long_flac], window=30, overlap=2, batch_size=4)
    return result


def test_long_file_gives_the_tokens_of_its_windows_decoded_one_by_one(ctc, long_flac, long_result):
    result = long_result
    assert result.ok and result.duration == pytest.approx(150)
    expected = _one_by_one(ctc, load_audio(long_flac), 16000, 30, 2)
    assert [(t.token, t.start) for t in result.tokens] == expected
    starts = [t.start for t in result.tokens]
    assert starts == sorted(starts) and len(expected) > 300
    assert max(t.end for t in result.tokens) <= 150


def test_transducer_long_file(transducer, tmp_path):
    samples = speechlike(50, 8)
    path = write_wav(tmp_path / "t.wav", samples)
    (result,) = transducer.transcribe_files([path], window=20, overlap=3, batch_size=2)
    assert [(t.token, t.start) for t in result.tokens] == _one_by_one(transducer, samples, 16000, 20, 3)


def test_beam_decoding_of_a_long_file(ctc, tmp_path):
    samples = speechlike(70, 12)
    path = write_wav(tmp_path / "b.wav", samples)
    (result,) = ctc.transcribe_files([path], batch_size=3, decoding="beam")
    expected = _one_by_one(ctc, samples, 16000, 30, 2, decoding="beam")
    assert [(t.token, t.start) for t in result.tokens] == expected and expected


def test_long_and_short_files_batched_together(ctc, long_flac, long_result, tmp_path):
    other = write_wav(tmp_path / "other.wav", speechlike(70, 9))
    short = [write_wav(tmp_path / f"s{i}.wav", speechlike(2 + 3 * i, 20 + i)) for i in range(3)]
    mixed = ctc.transcribe_files([short[0], long_flac, short[1], other, short[2]], batch_size=3)
    assert [r.path for r in mixed] == [short[0], long_flac, short[1], other, short[2]]
    (other_alone,) = ctc.transcribe_files([other], batch_size=1)
    # Full windows are never padded: the same as decoding the file alone.
    for r, alone in ((mixed[1], long_result), (mixed[3], other_alone)):
        assert [(t.token, t.start, t.end) for t in r.tokens] == [(t.token, t.start, t.end) for t in alone.tokens]
        # Batched matrix products round differently in the last bits.
        assert [t.confidence for t in r.tokens] == pytest.approx([t.confidence for t in alone.tokens], abs=1e-5)


def test_reads_are_bounded_by_the_window(ctc, long_flac, monkeypatch):
    calls = []
    real_read = sf.read

    def spy(*args, **kwargs):
        calls.append(kwargs.get("frames", -1))
        return real_read(*args, **kwargs)

    monkeypatch.setattr(sf, "read", spy)
    ctc.transcribe_files([long_flac], window=30, overlap=2, batch_size=2)
    assert len(calls) == 6 and all(0 < frames <= 30 * 16000 for frames in calls)


def test_cli_align_long_file(capsys, tmp_path, ctc, ctc_path, long_flac, long_result):
    grid = tmp_path / "long.TextGrid"
    code = main(["align", str(long_flac), "--model", str(ctc_path), "-o", str(grid), "--batch-size", "3", "-q"])
    assert code == 0, capsys.readouterr().err
    tg = praatio_textgrid.openTextgrid(str(grid), includeEmptyIntervals=True)
    phones = tg.getTier("phones").entries
    assert phones[0].start == 0 and phones[-1].end == pytest.approx(150)
    assert all(a.end == b.start for a, b in zip(phones, phones[1:]))
    assert "".join(e.label for e in phones) == "".join(ctc.alignment(long_result.tokens).text.split())


MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from zipa.inference.transcriber import Transcriber

    model, short, long = sys.argv[1:4]
    transcriber = Transcriber.from_checkpoint(model, device="cpu")
    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The allocator settles over the first batches: decode the short file twice first.
    for _ in range(2):
        (r,) = transcriber.transcribe_files([short], batch_size=2)
        assert r.ok, r.error
    before = peak_mb()
    (r,) = transcriber.transcribe_files([long], batch_size=2)
    assert r.ok, r.error
    print(before, peak_mb(), len(r.tokens))
    """
)


def _write_48k_stereo(path, seconds):
    """A 48 kHz stereo file written in pieces (reading it whole as float32 costs 384 kB/s)."""
    with sf.SoundFile(str(path), "w", 48000, 2, subtype="PCM_16") as f:
        for k in range(int(seconds // 10)):
            x = speechlike(10, 100 + k, 48000)
            f.write(np.stack([x, x[::-1]], axis=1))
    return path


def _memory_growth(tmp_path, model, long_seconds):
    short = _write_48k_stereo(tmp_path / "short.wav", 90)
    long = _write_48k_stereo(tmp_path / "long.wav", long_seconds)
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(model), str(short), str(long)],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert done.returncode == 0, done.stderr
    before, after, tokens = done.stdout.split()
    assert int(tokens) > long_seconds  # it did decode the whole file
    return float(after) - float(before)


def test_peak_memory_does_not_grow_with_file_length(tmp_path, ctc_path):
    # Reading this 3-minute file whole would take ~115 MB (float32 stereo, mono, resampled),
    # and one encoder pass over it far more.
    growth = _memory_growth(tmp_path, ctc_path, 180)
    assert growth < MEMORY_GROWTH_LIMIT_MB


@pytest.mark.slow
def test_ten_minute_file(tmp_path, ctc_path, ctc):
    # Reading this file whole would take ~380 MB.
    growth = _memory_growth(tmp_path, ctc_path, 600)
    assert growth < MEMORY_GROWTH_LIMIT_MB
    samples = speechlike(600, 11)
    path = tmp_path / "ten.flac"
    sf.write(str(path), samples, 16000, subtype="PCM_16")
    (result,) = ctc.transcribe_files([path], batch_size=4)
    assert [(t.token, t.start) for t in result.tokens] == _one_by_one(ctc, load_audio(path), 16000, 30, 2)
