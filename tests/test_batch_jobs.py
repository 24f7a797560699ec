"""Long `zipa transcribe` / `zipa align` jobs: results streamed file by file, a kill (SIGTERM,
Ctrl-C) keeps what is done and `--resume` finishes the rest with the same results, progress as
log lines in batch jobs, quiet broken pipes, folder search by what soundfile reads."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf
from conftest import REPO
from tiny_models import speechlike, write_wav

from zipa.audio.files import audio_suffixes, find_audio
from zipa.cli import main
from zipa.cli.signals import Interrupted as _Interrupted, StopRequest as _StopRequest
from zipa.utils.progress import Progress
from zipa.inference.resumable import LineOutput
from zipa.decoding.timestamps import Alignment, Interval
from zipa.inference.writers import Record

NUM_FILES = 240


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """NUM_FILES files of 0.4 s, in two folders. All of one length, so that batches are never
    padded and a file's result does not depend on which files share its batch."""
    root = tmp_path_factory.mktemp("many")
    for i in range(NUM_FILES):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        write_wav(folder / f"f{i:03d}.wav", speechlike(0.4, 1000 + i))
    return root


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Seven files of different lengths, one of them long enough for several windows."""
    root = tmp_path_factory.mktemp("mixed")
    lengths = [1.2, 3.5, 0.6, 2.4, 7.0, 1.9, 0.9]
    return [write_wav(root / f"m{i}.wav", speechlike(s, 50 + i)) for i, s in enumerate(lengths)]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _read_jsonl(path):
    """{path: text} of a jsonl output, checking every line is whole and no file is there twice."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "a line was cut"
    objs = [json.loads(line) for line in data.decode().splitlines()]
    texts = {o["path"]: o["text"] for o in objs}
    assert len(texts) == len(objs), "a file is there twice"
    return texts


def _wait_for_lines(path, count, proc, timeout=240):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"finished before {count} lines: {proc.stderr.read()[-2000:]}")
        time.sleep(0.01)
    raise AssertionError(f"no {count} lines in {path} after {timeout} s")


def _interrupt(args, out, sig, after_lines):
    """Start `python -m zipa ARGS`, send ``sig`` once ``out`` holds ``after_lines`` lines."""
    proc = subprocess.Popen([sys.executable, "-m", "zipa", *map(str, args)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_lines(out, after_lines, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


# --------------------------------------------------------------------------- kill and resume


def test_killed_jobs_resume_to_the_uninterrupted_result(capsys, tmp_path, ctc_model, many):
    args = ["transcribe", many, "--model", ctc_model, "--format", "jsonl", "--batch-size", 4]
    reference = tmp_path / "reference.jsonl"
    code, _, err = run(capsys, *args, "--output", reference, "-q")
    assert code == 0, err
    expected = _read_jsonl(reference)
    assert len(expected) == NUM_FILES and any(expected.values())

    out = tmp_path / "out.jsonl"
    code, err = _interrupt([*args, "--output", out], out, signal.SIGTERM, after_lines=3)
    assert code == 143, err[-2000:]
    assert "Traceback" not in err and "interrupted by SIGTERM" in err and "--resume" in err
    first = _read_jsonl(out)  # whole lines only
    assert 3 <= len(first) < NUM_FILES
    assert all(expected[path] == text for path, text in first.items())

    code, err = _interrupt([*args, "--output", out, "--resume"], out, signal.SIGINT, after_lines=len(first) + 3)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted by SIGINT" in err
    assert f"{len(first)} of {NUM_FILES} files are already in" in err
    second = _read_jsonl(out)
    assert len(first) < len(second) < NUM_FILES and first.items() <= second.items()

    # A kill in the middle of a write: the last file's line is cut off. --resume drops what is
    # left of it and decodes that file again.
    data = out.read_bytes()
    last_start = data.rindex(b"\n", 0, len(data) - 1) + 1
    cut_path = json.loads(data[last_start:])["path"]
    out.write_bytes(data[: last_start + (len(data) - last_start) // 2])
    code, _, err = run(capsys, *args, "--output", out, "--resume", "-q")
    assert code == 0, err
    assert _read_jsonl(out) == expected  # nothing lost, nothing twice, the same results
    assert out.read_text().count(cut_path) == 1

    code, _, err = run(capsys, *args, "--output", out, "--resume")  # all done: nothing to decode
    assert code == 0 and f"{NUM_FILES} of {NUM_FILES} files are already in" in err
    assert _read_jsonl(out) == expected


@pytest.mark.parametrize("fmt", ["txt", "tsv", "ctm"])
def test_resume_of_the_other_line_formats(capsys, tmp_path, ctc_model, mixed, fmt):
    """txt, tsv (one header) and CTM with timestamps (one line per phone: a file's lines
    may have been cut anywhere, so its block is decoded again) resume to the full output."""
    args = ["align", *mixed[:4], "--model", ctc_model, "--format", fmt, "--batch-size", 1, "-q"]
    full = tmp_path / f"full.{fmt}"
    assert run(capsys, *args, "-o", full)[0] == 0
    whole = full.read_text().splitlines(keepends=True)
    out = tmp_path / f"out.{fmt}"
    keep = len(whole) // 2
    out.write_text("".join(whole[:keep]) + whole[keep][: len(whole[keep]) // 2])
    code, _, err = run(capsys, *args, "-o", out, "--resume")
    assert code == 0, err
    assert sorted(out.read_text().splitlines()) == sorted(full.read_text().splitlines())
    if fmt == "tsv":
        assert out.read_text().startswith("path\tstart\tend\tphone\tconfidence\n")


def test_resume_refuses_an_output_of_other_options(capsys, tmp_path, ctc_model, mixed):
    out = tmp_path / "out.tsv"
    assert run(capsys, "transcribe", *mixed[:2], "--model", ctc_model, "-f", "tsv", "-o", out, "-q")[0] == 0
    code, _, err = run(capsys, "transcribe", *mixed, "--model", ctc_model, "-f", "tsv", "--timestamps",
                       "-o", out, "--resume", "-q")
    assert code == 2 and "header" in err
    jsonl = tmp_path / "out.jsonl"
    jsonl.write_text("path\ttext\n")
    code, _, err = run(capsys, "transcribe", *mixed, "--model", ctc_model, "-f", "jsonl", "-o", jsonl, "--resume")
    assert code == 2 and "not a jsonl record" in err
    code, _, err = run(capsys, "transcribe", *mixed, "--model", ctc_model, "--resume")
    assert code == 2 and "--resume needs --output" in err


def test_resume_of_textgrids_and_plots_skips_the_files_done(capsys, tmp_path, ctc_model, mixed):
    grids = tmp_path / "grids"
    args = ["align", *mixed[:4], "--model", ctc_model, "-o", grids, "-q"]
    assert run(capsys, *args)[0] == 0
    done = sorted(grids.iterdir())
    assert len(done) == 4
    stamps = {p: p.stat().st_mtime_ns for p in done}
    done[0].unlink()
    time.sleep(0.01)
    code, _, err = run(capsys, *args[:1], *mixed, *args[5:], "--resume")
    assert code == 0, err
    assert len(list(grids.iterdir())) == len(mixed)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in done[1:])  # not written again
    assert done[0].exists()


def test_without_resume_an_existing_output_is_replaced(capsys, tmp_path, ctc_model, mixed):
    out = tmp_path / "out.txt"
    out.write_text("old.wav\tə\n" * 3)
    assert run(capsys, "transcribe", *mixed[:2], "--model", ctc_model, "-o", out, "-q")[0] == 0
    assert sorted(line.split("\t")[0] for line in out.read_text().splitlines()) == sorted(map(str, mixed[:2]))


# --------------------------------------------------------------------------- streaming API


def test_streamed_results_are_the_list_api_and_groups_decode_on_their_own(transcriber, mixed):
    listed = transcriber.transcribe_files(mixed, window=3, overlap=1, batch_size=3)
    assert [r.path for r in listed] == mixed and all(r.ok for r in listed)
    streamed = list(transcriber.iter_transcribe_files(mixed, window=3, overlap=1, batch_size=3))
    assert sorted(r.path for r in streamed) == sorted(mixed)
    by_path = {r.path: r.tokens for r in streamed}
    assert all(by_path[r.path] == r.tokens for r in listed)
    # Files complete longest segments first (here: no group closes before the end): the two
    # files cut into 3 s windows, then the others from the longest to the shortest.
    assert {r.path for r in streamed[:2]} == {mixed[1], mixed[4]}
    durations = [sf.info(str(r.path)).duration for r in streamed[2:]]
    assert durations == sorted(durations, reverse=True)

    # Groups of at most 3 files, or 4 s of audio: each decoded as a job of its own.
    grouped = list(transcriber.iter_transcribe_files(mixed, window=3, overlap=1, batch_size=3,
                                                     group_files=3, group_seconds=4))
    groups, group, seconds = [], [], 0.0
    for path in mixed:
        group.append(path)
        seconds += sf.info(str(path)).duration
        if len(group) == 3 or seconds >= 4:
            groups.append(group)
            group, seconds = [], 0.0
    groups.append(group)
    alone = {r.path: r.tokens for g in groups for r in transcriber.transcribe_files(g, window=3, overlap=1, batch_size=3)}
    assert {r.path: r.tokens for r in grouped} == alone
    assert [mixed.index(r.path) for r in grouped][:2] == [1, 0]  # the first group comes first
    # The first group done, no file of a later group is waited for.
    assert sorted(mixed.index(r.path) for r in grouped[: len(groups[0])]) == list(range(len(groups[0])))


def test_stop_ends_the_stream_after_the_current_batch(transcriber, mixed):
    got = []

    def stop():
        return len(got) >= 1

    for result in transcriber.iter_transcribe_files(mixed, batch_size=2, stop=stop):
        got.append(result)
    assert 1 <= len(got) <= 2 < len(mixed)  # the first batch (two files), then nothing


def test_unreadable_files_are_yielded_with_their_error(transcriber, mixed, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    results = transcriber.transcribe_files([mixed[0], bad, mixed[1]], batch_size=2)
    assert [r.ok for r in results] == [True, False, True] and "bad.wav" in results[1].error


# --------------------------------------------------------------------------- output files


def _record(path, phones):
    intervals = [Interval(p, 0.1 * i, 0.1 * i + 0.05, 0.9) for i, p in enumerate(phones)]
    return Record(path, 1.0, Alignment("".join(phones), intervals, []))


def test_line_output_keeps_whole_files_only(tmp_path):
    out = tmp_path / "o.ctm"
    writer = LineOutput(out, "ctm", timestamps=True)
    writer.open()
    writer.write(_record("a.wav", "ab"))
    writer.write(_record("b c.wav", "xyz"))
    writer.close()
    text = out.read_text()
    assert len(text.splitlines()) == 5
    out.write_text(text[: -len(text.splitlines()[-1]) - 1])  # b's last line lost: b is incomplete
    again = LineOutput(out, "ctm", timestamps=True)
    assert again.load() == 1 and again.is_done("a.wav") and not again.is_done("b c.wav")
    again.open()
    assert out.read_text() == text[: text.index("b_c.wav")]  # b's lines are dropped
    again.write(_record("b c.wav", "xyz"))
    again.close()
    assert out.read_text() == text

    jsonl = tmp_path / "o.jsonl"
    jsonl.write_text('{"path": "a.wav", "duration": 1, "text": "ab"}\n{"path": "b.wav", "dur')
    writer = LineOutput(jsonl, "jsonl")
    assert writer.load() == 1 and writer.is_done("a.wav") and not writer.is_done("b.wav")
    writer.open()
    assert jsonl.read_text() == '{"path": "a.wav", "duration": 1, "text": "ab"}\n'
    writer.close()


# --------------------------------------------------------------------------- signals


def test_first_signal_asks_to_stop_a_second_stops_at_once_but_not_mid_write():
    previous = signal.getsignal(signal.SIGTERM)
    with _StopRequest() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() and stop.signum == signal.SIGTERM
        with pytest.raises(_Interrupted):
            with stop.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                finished_write = True  # the write goes on to its end
        assert finished_write
        with pytest.raises(_Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) == previous


# --------------------------------------------------------------------------- progress


def test_progress_log_lines_on_stderr(capsys, tmp_path, ctc_model, mixed):
    code, _, err = run(capsys, "transcribe", *mixed, "--model", ctc_model, "-o", tmp_path / "o.txt",
                       "--batch-size", 1, "--progress", "log", "--progress-interval", "0.001")
    assert code == 0
    lines = err.splitlines()
    assert lines[0] == f"zipa transcribe: {len(mixed)} files to do"
    assert lines[-1].startswith(f"zipa transcribe: {len(mixed)}/{len(mixed)} files (100%), 0.3 min of audio, elapsed")
    assert len(lines) >= len(mixed) and all(" ETA " in line for line in lines[1:])
    # auto on a stream that is not a terminal: log lines too; -q: nothing
    assert run(capsys, "transcribe", *mixed[:2], "--model", ctc_model, "-o", tmp_path / "o.txt")[2]
    assert run(capsys, "transcribe", *mixed[:2], "--model", ctc_model, "-o", tmp_path / "o.txt", "-q")[2] == ""


def test_progress_logs_every_interval(capsys):
    now = [0.0]
    progress = Progress(10, "log", interval=30, desc="job", stream=sys.stderr, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 10
        progress.advance(90)
        progress.file_done()
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "job: 10 files to do"
    assert lines[1] == "job: 3/10 files (30%), 4.5 min of audio, elapsed 0:00:30, ETA 0:01:10"
    assert len(lines) == 1 + 3 + 1  # at 30, 60 and 90 s, and at the end
    assert lines[-1] == "job: 10/10 files (100%), 15.0 min of audio, elapsed 0:01:40, ETA 0:00:00"
    assert Progress.make(None, 3, stream=sys.stderr).mode == "none"  # the API's default: no bar off a terminal
    assert Progress.make(True, 3, stream=sys.stderr).mode == "bar"


# --------------------------------------------------------------------------- pipes


def _shell(command):
    """Run a bash command line, with Python's stdout buffered as usual (the last writes happen
    when it is flushed at the end)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=REPO, timeout=300, env=env)


def test_broken_pipes_are_quiet(tmp_path, ctc_model, many):
    python = sys.executable
    # `true` reads nothing: every write to the pipe fails.
    done = _shell(f"'{python}' -m zipa models | true; echo \"status ${{PIPESTATUS[0]}}\"")
    assert done.stderr == "" and done.stdout == "status 141\n"
    done = _shell(f"'{python}' -m zipa models | head -n 1")
    assert done.returncode == 0 and done.stderr == "" and len(done.stdout.splitlines()) == 1
    folder = many / "a"
    done = _shell(f"'{python}' -m zipa transcribe '{folder}' --model '{ctc_model}' --batch-size 1 -q | head -n 1;"
                  " echo \"status ${PIPESTATUS[0]}\"")
    assert done.stderr == "", done.stderr[-2000:]
    first, status = done.stdout.splitlines()
    assert first.startswith(str(folder)) and status == "status 141"


# --------------------------------------------------------------------------- folder search


def test_folder_search_takes_what_soundfile_reads(capsys, tmp_path, ctc_model):
    formats = sf.available_formats()
    assert (".mp3" in audio_suffixes()) == ("MP3" in formats)
    assert {".wav", ".flac", ".ogg", ".aiff", ".aif"} <= set(audio_suffixes())
    assert ".raw" not in audio_suffixes() and ".mat" not in audio_suffixes()
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    samples = speechlike(1.0, 3)
    written = []
    for name, kwargs in [("a.wav", {}), ("sub/b.opus", {"format": "OGG", "subtype": "OPUS"}), ("c.aiff", {}),
                         ("d.AIF", {"format": "AIFF"}), ("e.oga", {"format": "OGG"}), ("f.caf", {}), ("g.au", {})]:
        try:
            sf.write(str(folder / name), samples, 16000, **kwargs)
        except (sf.LibsndfileError, TypeError, ValueError, RuntimeError):
            continue  # this libsndfile cannot write it
        written.append(folder / name)
    assert {p.suffix.lower() for p in written} >= {".wav", ".aiff", ".aif"}
    for name in ("notes.txt", "labels.json", "weights.mat", "x.raw", "picture.png"):
        (folder / name).write_bytes(b"\x00" * 100)
    files, errors = find_audio([str(folder)])
    assert sorted(p for p, _ in files) == sorted(written) and not errors
    code, out, err = run(capsys, "transcribe", folder, "--model", ctc_model, "-q")
    assert code == 0, err
    assert sorted(line.split("\t")[0] for line in out.splitlines()) == sorted(map(str, written))
    named = folder / "notes.txt"
    named_audio = folder / "speech.data"
    sf.write(str(named_audio), samples, 16000, format="WAV")
    files, _ = find_audio([str(named_audio), str(named)])  # named files: whatever their suffix
    assert [p for p, _ in files] == [named_audio, named]
