"""The `zipa` command end to end on generated audio with tiny random models: every format
parses, TextGrids open in a TextGrid reader and agree with the transcript, bad files are
reported and skipped, outputs are written atomically."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO
from tiny_models import speechlike, tiny_model_path, write_wav

from zipa.cli import main
from zipa.decoding.timestamps import FRAME_OFFSET
from zipa.inference.transcriber import Transcriber

praatio_textgrid = pytest.importorskip("praatio.textgrid")


@pytest.fixture(scope="module")
def transducer_model(tmp_path_factory):
    return tiny_model_path(tmp_path_factory, "transducer")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    """Four files: wav at 16 kHz, a stereo 22.05 kHz wav and a flac in a subfolder, an ogg."""
    root = tmp_path_factory.mktemp("audio")
    write_wav(root / "a.wav", speechlike(1.5, 1))
    stereo = np.stack([speechlike(2.3, 2, 22050), speechlike(2.3, 3, 22050)], axis=1)
    write_wav(root / "b.wav", stereo, 22050)
    (root / "sub").mkdir()
    sf.write(str(root / "sub" / "c.flac"), speechlike(3.1, 4), 16000, subtype="PCM_16")
    sf.write(str(root / "d.ogg"), speechlike(2.0, 5), 16000)
    (root / "notes.txt").write_text("not audio, not picked up from a folder")
    return root


def _files(audio_dir):
    return sorted(p for p in audio_dir.rglob("*") if p.suffix in {".wav", ".flac", ".ogg"})


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_transcribe_txt_matches_the_python_api(capsys, ctc_model, audio_dir):
    code, out, err = run(capsys, "transcribe", audio_dir, "--model", ctc_model, "--batch-size", 1, "-q")
    assert code == 0, err
    lines = dict(line.split("\t") for line in out.splitlines())
    files = _files(audio_dir)
    assert sorted(lines) == sorted(str(p) for p in files)  # recursive, audio suffixes only
    transcriber = Transcriber.from_checkpoint(ctc_model, device="cpu")
    for path in files:
        assert lines[str(path)] == " ".join(transcriber.transcribe([path])[0])
    assert any(lines.values()), "the tiny model should say something"


def test_batching_keeps_every_file(capsys, ctc_model, audio_dir):
    code, out, _ = run(capsys, "transcribe", audio_dir, "--model", ctc_model, "--batch-size", 3, "-q")
    assert code == 0
    assert len(out.splitlines()) == len(_files(audio_dir))


def _check_timed(obj, words=True):
    duration = obj["duration"]
    phones = obj["phones"]
    starts = [p["start"] for p in phones]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for p in phones:
        assert 0 <= p["start"] < p["end"] <= duration + 1e-9
        assert 0 <= p["confidence"] <= 1
    for a, b in zip(phones, phones[1:]):
        assert a["end"] <= b["start"] + 1e-9
    if words:
        assert " ".join(w["word"] for w in obj["words"]) == obj["text"]
        assert "".join(w["word"] for w in obj["words"]) == "".join(p["phone"] for p in phones)
    else:
        assert "words" not in obj and " " not in obj["text"]
        assert obj["text"] == "".join(p["phone"] for p in phones)


def test_jsonl_with_timestamps(capsys, ctc_model, audio_dir):
    code, out, err = run(capsys, "align", audio_dir, "--model", ctc_model, "--format", "jsonl", "-q")
    assert code == 0, err
    objs = [json.loads(line) for line in out.splitlines()]
    assert len(objs) == len(_files(audio_dir))
    for obj in objs:
        assert obj["duration"] == pytest.approx(sf.info(obj["path"]).duration)
        _check_timed(obj)
        for p in obj["phones"]:  # CTC frames are 20 ms, starting FRAME_OFFSET in
            assert (p["start"] - FRAME_OFFSET) / 0.02 == pytest.approx(round((p["start"] - FRAME_OFFSET) / 0.02), abs=1e-6)


def _api_transcript(model, path) -> str:
    """What the Python API says for one file (the CLI's transcript, word boundaries as spaces)."""
    return " ".join(Transcriber.from_checkpoint(model, device="cpu").transcribe([path])[0])


def test_transcribe_jsonl_without_timestamps(capsys, ctc_model, audio_dir):
    code, out, _ = run(capsys, "transcribe", audio_dir / "a.wav", "--model", ctc_model, "-f", "jsonl", "-q")
    assert code == 0
    (obj,) = [json.loads(line) for line in out.splitlines()]
    assert set(obj) == {"path", "duration", "text"}
    expected = _api_transcript(ctc_model, audio_dir / "a.wav")
    assert expected, "the tiny model should say something for a.wav"
    assert obj["text"] == expected


def test_tsv_and_ctm(capsys, ctc_model, audio_dir):
    _, out, _ = run(capsys, "align", audio_dir, "--model", ctc_model, "-f", "jsonl", "-q")
    objs = {o["path"]: o for o in map(json.loads, out.splitlines())}

    code, out, _ = run(capsys, "align", audio_dir, "--model", ctc_model, "-f", "tsv", "-q")
    assert code == 0
    header, *rows = [line.split("\t") for line in out.splitlines()]
    assert header == ["path", "start", "end", "phone", "confidence"]
    assert len(rows) == sum(len(o["phones"]) for o in objs.values())
    for path, obj in objs.items():
        mine = [r for r in rows if r[0] == path]
        assert [r[3] for r in mine] == [p["phone"] for p in obj["phones"]]
        assert [float(r[1]) for r in mine] == pytest.approx([p["start"] for p in obj["phones"]], abs=1e-3)

    code, out, _ = run(capsys, "transcribe", audio_dir, "--model", ctc_model, "-f", "tsv", "-q")
    header, *rows = [line.split("\t") for line in out.splitlines()]
    assert header == ["path", "transcript"] and {r[0]: r[1] for r in rows} == {p: o["text"] for p, o in objs.items()}

    code, out, _ = run(capsys, "transcribe", audio_dir, "--model", ctc_model, "-f", "ctm", "-q")
    assert code == 0
    lines = [line.split() for line in out.splitlines()]
    assert all(len(fields) == 6 and fields[1] == "1" for fields in lines)
    assert [f[4] for f in lines] == [p["phone"] for o in objs.values() for p in o["phones"]]
    for f in lines:
        assert float(f[2]) >= 0 and float(f[3]) > 0 and 0 <= float(f[5]) <= 1


def _read_textgrid(path):
    return praatio_textgrid.openTextgrid(str(path), includeEmptyIntervals=True)


def _check_tier_covers(tier, duration):
    entries = tier.entries
    assert entries[0].start == 0
    assert entries[-1].end == pytest.approx(duration, abs=1e-9)
    for a, b in zip(entries, entries[1:]):
        assert a.end == b.start  # contiguous
    assert all(e.end > e.start for e in entries)


def test_textgrids_open_in_praatio_and_match_the_transcript(capsys, tmp_path, ctc_model, audio_dir):
    out_dir = tmp_path / "grids"
    code, _, err = run(capsys, "align", audio_dir, "--model", ctc_model, "--output", out_dir, "-q")
    assert code == 0, err
    _, out, _ = run(capsys, "align", audio_dir, "--model", ctc_model, "-f", "jsonl", "-q")
    objs = {o["path"]: o for o in map(json.loads, out.splitlines())}
    for audio in _files(audio_dir):
        grid_path = out_dir / audio.relative_to(audio_dir).with_suffix(".TextGrid")
        grid = _read_textgrid(grid_path)
        obj = objs[str(audio)]
        assert grid.tierNames == ("phones", "words")
        assert grid.maxTimestamp == pytest.approx(obj["duration"])
        for name in grid.tierNames:
            _check_tier_covers(grid.getTier(name), obj["duration"])
        phones = [e.label for e in grid.getTier("phones").entries if e.label]
        words = [e.label for e in grid.getTier("words").entries if e.label]
        assert phones == [p["phone"] for p in obj["phones"]]
        assert " ".join(words) == obj["text"]
        assert "".join(phones) == obj["text"].replace(" ", "")
    assert not list(out_dir.rglob("*.tmp"))


def test_one_textgrid_to_stdout_or_a_named_file(capsys, tmp_path, ctc_model, audio_dir):
    code, out, _ = run(capsys, "align", audio_dir / "a.wav", "--model", ctc_model, "-q")
    assert code == 0 and out.startswith('File type = "ooTextFile"')
    target = tmp_path / "a_custom.TextGrid"
    code, _, _ = run(capsys, "align", audio_dir / "a.wav", "--model", ctc_model, "-o", target, "-q")
    assert code == 0 and target.read_text() == out


def test_several_textgrids_to_stdout_is_a_usage_error(capsys, ctc_model, audio_dir):
    code, _, err = run(capsys, "align", audio_dir, "--model", ctc_model, "-q")
    assert code == 2 and "--output DIR" in err


def test_no_word_boundaries(capsys, tmp_path, ctc_model, audio_dir):
    _, out, _ = run(capsys, "transcribe", audio_dir, "--model", ctc_model, "-q")
    with_spaces = dict(line.split("\t") for line in out.splitlines())
    _, out, _ = run(capsys, "transcribe", audio_dir, "--model", ctc_model, "--no-word-boundaries", "-q")
    joined = dict(line.split("\t") for line in out.splitlines())
    assert joined == {k: v.replace(" ", "") for k, v in with_spaces.items()}

    _, out, _ = run(capsys, "align", audio_dir, "--model", ctc_model, "-f", "jsonl", "--no-word-boundaries", "-q")
    for obj in map(json.loads, out.splitlines()):
        _check_timed(obj, words=False)
    grid = tmp_path / "a.TextGrid"
    run(capsys, "align", audio_dir / "a.wav", "--model", ctc_model, "--no-word-boundaries", "-o", grid, "-q")
    assert _read_textgrid(grid).tierNames == ("phones",)


def test_remove_diacritics(capsys, ctc_model, audio_dir):
    ipa = pytest.importorskip("zipa.text.ipa")
    _, out, _ = run(capsys, "align", audio_dir, "--model", ctc_model, "-f", "jsonl", "-q")
    plain = {o["path"]: o for o in map(json.loads, out.splitlines())}
    code, out, _ = run(capsys, "align", audio_dir, "--model", ctc_model, "-f", "jsonl", "--remove-diacritics", "-q")
    assert code == 0
    for obj in map(json.loads, out.splitlines()):
        _check_timed(obj)
        expected = ipa.normalize_ipa(plain[obj["path"]]["text"], remove_diacritics=True)
        assert obj["text"].split() == expected.split()


def test_transducer_model_times_on_its_40ms_frames(capsys, transducer_model, audio_dir):
    code, out, err = run(capsys, "align", audio_dir, "--model", transducer_model, "-f", "jsonl", "-q")
    assert code == 0, err
    transcriber = Transcriber.from_checkpoint(transducer_model, device="cpu")
    for obj in map(json.loads, out.splitlines()):
        _check_timed(obj)
        assert obj["phones"]
        for p in obj["phones"]:
            frames = (p["start"] - FRAME_OFFSET) / 0.04
            assert frames == pytest.approx(round(frames), abs=1e-6)
    _, out, _ = run(capsys, "transcribe", audio_dir / "a.wav", "--model", transducer_model, "-q")
    assert out.split("\t")[1].strip() == " ".join(transcriber.transcribe([audio_dir / "a.wav"])[0])


def test_bad_files_are_reported_and_skipped(capsys, tmp_path, ctc_model, audio_dir):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = [write_wav(folder / f"good{i}.wav", speechlike(1.2 + i, 10 + i)) for i in range(2)]
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 3)
    write_wav(folder / "nan.wav", np.full(16000, np.nan, dtype=np.float32))
    write_wav(folder / "tiny.wav", np.zeros(400, dtype=np.float32))
    out_file = tmp_path / "out.txt"
    code, _, err = run(capsys, "transcribe", folder, tmp_path / "missing.wav", "--model", ctc_model,
                       "-o", out_file, "-q")
    assert code == 1
    for name in ("broken.wav", "nan.wav", "tiny.wav", "missing.wav"):
        assert name in err
    assert "4 of 6 inputs failed" in err
    lines = out_file.read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == [str(p) for p in good]  # in order of completion


def _run_with_file_size_limit(limit, *argv):
    """`python -m zipa.cli ARGV` where the OS refuses file bytes past the first ``limit``
    (RLIMIT_FSIZE: write(2) fails with EFBIG, "File too large", as on a full disk)."""
    import resource
    import signal

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "zipa.cli", *map(str, argv)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, preexec_fn=limit_file_size)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE / EFBIG as on Linux")
def test_a_failing_write_leaves_whole_files(capsys, tmp_path, ctc_model, audio_dir):
    """A write that fails midway fails the command without a traceback. Streamed output
    (jsonl) then holds exactly the lines of the files written before, none cut; a TextGrid
    (written whole, atomically) leaves the previous file untouched and no temporary file."""
    target = tmp_path / "out" / "result.jsonl"
    target.parent.mkdir()
    target.write_text('{"path": "earlier.wav", "duration": 1.0, "text": "a b"}\n')  # replaced: no --resume
    code, _, _ = run(capsys, "transcribe", audio_dir, "--model", ctc_model, "-f", "jsonl", "-o", target, "-q")
    assert code == 0
    lines = target.read_text().splitlines(keepends=True)
    assert len(lines) == len(_files(audio_dir))
    first, second = (len(line.encode()) for line in lines[:2])

    target.unlink()
    done = _run_with_file_size_limit(first + second // 2, "transcribe", audio_dir, "--model", ctc_model,
                                     "-f", "jsonl", "-o", target, "-q")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "File too large" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert target.read_text() == lines[0]  # the second file's line, cut by the limit, is taken back
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.jsonl"]

    grids = tmp_path / "grids"
    previous = {}
    for audio in _files(audio_dir):
        grid = grids / audio.relative_to(audio_dir).with_suffix(".TextGrid")
        grid.parent.mkdir(parents=True, exist_ok=True)
        previous[grid] = f"earlier {audio.name}\n"
        grid.write_text(previous[grid])
    done = _run_with_file_size_limit(64, "align", audio_dir, "--model", ctc_model, "-o", grids, "-q")
    assert done.returncode == 1 and "File too large" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert {p: p.read_text() for p in grids.rglob("*") if p.is_file()} == previous  # no temporary file either


def test_models_lists_the_table(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    for repo in ("anyspeech/zipa-small-crctc-500k", "anyspeech/zipa-large-crctc-ns-800k",
                 "anyspeech/zipa-small-noncausal-300k", "anyspeech/zipa-large-crctc-ns-no-diacritics-780k"):
        assert repo in out


def test_setup_errors_exit_2(capsys, tmp_path, ctc_model, audio_dir):
    code, _, err = run(capsys, "transcribe", audio_dir, "--model", tmp_path / "nowhere" / "x.pth")
    assert code == 2 and "not a file, a folder" in err
    code, _, err = run(capsys, "transcribe", audio_dir, "--model", ctc_model, "--overlap", "40", "-q")
    assert code == 2 and "overlap" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", str(audio_dir), "--model", str(ctc_model), "--decoding", "nonsense"])
    assert exit_info.value.code == 2


def test_runs_as_a_module(tmp_path, ctc_model, audio_dir):
    done = subprocess.run(
        [sys.executable, "-m", "zipa.cli", "transcribe", str(audio_dir / "a.wav"), "--model", str(ctc_model)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(audio_dir / "a.wav") + "\t")
    expected = _api_transcript(ctc_model, audio_dir / "a.wav")
    assert expected, "the tiny model should say something for a.wav"
    assert done.stdout == f"{audio_dir / 'a.wav'}\t{expected}\n"


@pytest.mark.parametrize("kind", ["ctc", "transducer"])
def test_beam_decoding(capsys, tmp_path, kind, ctc_model, transducer_model, audio_dir):
    import torch

    from zipa.decoding import ctc_prefix_beam_search, modified_beam_search

    model = ctc_model if kind == "ctc" else transducer_model
    code, out, err = run(capsys, "align", audio_dir, "--model", model, "-f", "jsonl", "--decoding", "beam",
                         "--beam-size", 3, "--batch-size", 1, "-q")
    assert code == 0, err
    transcriber = Transcriber.from_checkpoint(model, device="cpu")
    for obj in map(json.loads, out.splitlines()):
        _check_timed(obj)
        feats, lens = transcriber.features([obj["path"]])
        with torch.inference_mode():
            encoder_out, encoder_out_lens = transcriber.model.forward_encoder(feats, lens)
            if kind == "ctc":
                (ids,) = ctc_prefix_beam_search(transcriber.model.ctc_output(encoder_out), encoder_out_lens, beam=3)
            else:
                (ids,) = modified_beam_search(transcriber.model, encoder_out, encoder_out_lens, beam=3)
        assert obj["text"] == " ".join(transcriber.tokenizer.decode(ids).split())
    grid = tmp_path / "a.TextGrid"
    code, _, _ = run(capsys, "align", audio_dir / "a.wav", "--model", model, "--decoding", "beam", "-o", grid, "-q")
    assert code == 0
    _check_tier_covers(_read_textgrid(grid).getTier("phones"), sf.info(str(audio_dir / "a.wav")).duration)
