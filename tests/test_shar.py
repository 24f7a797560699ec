"""Shar writing and reading (zipa.data.shar) and the local/make_shar.py command line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from shar_checks import check_plain_lhotse_reads

from zipa.data.shar import (
    LabelTransform,
    ShardRecord,
    SkipItem,
    count_cuts,
    discover_shards,
    index_path,
    is_complete,
    read_shar_dir,
    read_tsv,
    skipped_path,
    write_shar,
)

REPO = Path(__file__).resolve().parents[1]


def tone(n: int, freq: float = 220.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


def quantised(x: np.ndarray) -> np.ndarray:
    """What 16-bit flac keeps of float samples (soundfile's conversion both ways)."""
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="FLAC", subtype="PCM_16")
    buf.seek(0)
    return sf.read(buf, dtype="float32")[0]


def read_back(out_dir: Path) -> dict:
    return {cut.id: cut for cut in read_shar_dir(out_dir)}


def test_round_trip_keeps_audio_and_supervisions(tmp_path):
    arrays = {f"utt{i}": tone(4000 + 1234 * i, 150.0 + 40 * i, seed=i) for i in range(5)}
    records = []
    for i, (uid, x) in enumerate(arrays.items()):
        if i % 2:  # from a file
            path = tmp_path / f"{uid}.wav"
            sf.write(path, x, 16000, subtype="FLOAT")
            records.append(ShardRecord(uid, str(path), "tʃa ŋo", "eng"))
        else:  # from an array
            records.append(ShardRecord(uid, x, f"pa{i} ʃi", "fra" if i else None))
    summary = write_shar(records, tmp_path / "shar", shard_size=2)
    assert (summary.written, summary.skipped, summary.num_shards) == (5, 0, 3)

    fields = discover_shards(tmp_path / "shar")
    assert [Path(p).name for p in fields["cuts"]] == [f"cuts.00000{i}.jsonl.gz" for i in range(3)]
    assert [Path(p).name for p in fields["recording"]] == [f"recording.00000{i}.tar" for i in range(3)]

    cuts = read_back(tmp_path / "shar")
    assert list(cuts) == list(arrays)  # input order
    for rec in records:
        cut = cuts[rec.id]
        audio = cut.load_audio()
        assert cut.sampling_rate == 16000 and audio.shape == (1, len(arrays[rec.id]))
        np.testing.assert_array_equal(audio[0], quantised(arrays[rec.id]))
        assert cut.duration == pytest.approx(len(arrays[rec.id]) / 16000)
        (sup,) = cut.supervisions
        assert (sup.text, sup.language, sup.start, sup.duration) == (
            rec.text, rec.language, 0.0, cut.duration,
        )
    index = json.loads(index_path(tmp_path / "shar").read_text())
    assert index_path(tmp_path / "shar") == tmp_path / ".shar.shar_index.json"
    assert index["num_cuts"] == 5 and index["num_shards"] == 3
    assert count_cuts(tmp_path / "shar") == 5


def test_resamples_and_mixes_down_to_16k_mono(tmp_path):
    x = tone(22050, rate=22050)
    stereo = np.stack([x, 0.5 * x], axis=1)
    sf.write(tmp_path / "a.wav", stereo, 22050)
    write_shar([ShardRecord("a", str(tmp_path / "a.wav"), "a")], tmp_path / "shar")
    cut = read_back(tmp_path / "shar")["a"]
    from zipa.audio.load import load_audio

    expected = quantised(load_audio(tmp_path / "a.wav"))
    assert cut.sampling_rate == 16000 and cut.duration == pytest.approx(1.0)
    np.testing.assert_array_equal(cut.load_audio()[0], expected)


def test_lhotse_cuts_as_items(tmp_path):
    from lhotse import Recording, SupervisionSegment

    sf.write(tmp_path / "r.flac", tone(32000), 16000)
    rec = Recording.from_file(tmp_path / "r.flac")
    cut = rec.to_cut().truncate(offset=0.5, duration=1.0)
    cut.supervisions = [
        SupervisionSegment("s", rec.id, 0.0, 1.0, text="ab", language="deu"),
    ]
    write_shar([cut], tmp_path / "shar")
    back = read_back(tmp_path / "shar")[cut.id]
    np.testing.assert_array_equal(back.load_audio(), cut.load_audio())
    assert (back.supervisions[0].text, back.supervisions[0].language) == ("ab", "deu")


def test_bad_items_are_skipped_counted_and_reported(tmp_path, caplog):
    sf.write(tmp_path / "good.wav", tone(8000), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....not really a wav")
    sf.write(tmp_path / "tiny.wav", tone(50), 16000)
    records = [
        ShardRecord("good", str(tmp_path / "good.wav"), "a"),
        ShardRecord("missing", str(tmp_path / "nope.wav"), "a"),
        ShardRecord("corrupt", str(tmp_path / "corrupt.wav"), "a"),
        ShardRecord("tiny", str(tmp_path / "tiny.wav"), "a"),
        ShardRecord("nolabel", str(tmp_path / "good.wav"), "  "),
        ShardRecord("nan", np.full(4000, np.nan, dtype=np.float32), "a"),
        ShardRecord("good", str(tmp_path / "good.wav"), "b"),  # duplicate id
    ]
    with caplog.at_level("WARNING"):
        summary = write_shar(records, tmp_path / "shar", shard_size=3)
    assert (summary.written, summary.skipped) == (1, 6)
    assert summary.skipped_report == skipped_path(tmp_path / "shar") == tmp_path / ".shar.skipped.tsv"
    lines = summary.skipped_report.read_text().splitlines()
    assert lines[0] == "id\tsource\treason"
    reasons = {line.split("\t")[0]: line.split("\t")[2] for line in lines[1:]}
    assert set(reasons) == {"missing", "corrupt", "tiny", "nolabel", "nan", "good"}
    assert "unreadable audio" in reasons["missing"] and "unreadable audio" in reasons["corrupt"]
    assert "too short" in reasons["tiny"] and "empty transcription" in reasons["nolabel"]
    assert reasons["good"] == "duplicate id"
    assert "skipped corrupt" in caplog.text
    assert list(read_back(tmp_path / "shar")) == ["good"]


def test_rerun_is_a_noop_and_overwrite_rewrites(tmp_path):
    records = [ShardRecord(f"u{i}", tone(3000, seed=i), "a") for i in range(3)]
    out = tmp_path / "shar"
    write_shar(records, out, shard_size=2)
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = write_shar(records, out, shard_size=2)
    assert again.already_complete and again.written == 3
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
    fewer = write_shar(records[:1], out, shard_size=2, overwrite=True)
    assert not fewer.already_complete and fewer.written == 1
    assert list(read_back(out)) == ["u0"]
    # No partial or old folders left; only the side files beside the folder.
    assert sorted(p.name for p in tmp_path.glob(".*")) == [".shar.shar_index.json", ".shar.skipped.tsv"]


def test_interrupted_run_leaves_nothing_and_resumes(tmp_path):
    records = [ShardRecord(f"u{i}", tone(2000, seed=i), "a") for i in range(7)]
    out = tmp_path / "shar"

    class Crash:
        def __call__(self, rec):
            if rec.id == "u5":
                raise KeyboardInterrupt
            return rec

    with pytest.raises(KeyboardInterrupt):
        write_shar(records, out, shard_size=2, transform=Crash())
    assert not out.exists() and not is_complete(out)
    partial = tmp_path / ".shar.partial"
    assert partial.is_dir()
    with pytest.raises(FileNotFoundError):  # a run in progress is no shar folder to read
        discover_shards(tmp_path)

    seen = []

    def count(rec):
        seen.append(rec.id)
        return rec

    summary = write_shar(records, out, shard_size=2, transform=count)
    assert seen == ["u4", "u5", "u6"]  # shards 0 and 1 were finished before the crash
    assert summary.written == 7 and summary.num_shards == 4
    assert list(read_back(out)) == [r.id for r in records]
    assert not partial.exists()


def test_parallel_writers_give_the_same_shards(tmp_path):
    records = [ShardRecord(f"u{i}", tone(2000 + 100 * i, seed=i), f"pa{i}") for i in range(7)]
    records.insert(3, ShardRecord("bad", str(tmp_path / "absent.wav"), "a"))
    one = write_shar(records, tmp_path / "one", shard_size=3)
    two = write_shar(records, tmp_path / "two", shard_size=3, num_jobs=2)
    assert (one.written, one.skipped, one.num_shards) == (two.written, two.skipped, two.num_shards) == (7, 1, 3)
    a, b = read_back(tmp_path / "one"), read_back(tmp_path / "two")
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k].load_audio(), b[k].load_audio())
    assert skipped_path(tmp_path / "one").read_text() == skipped_path(tmp_path / "two").read_text()


def test_outputs_with_skips_are_plain_lhotse_shar(tmp_path):
    # Every shard count and a skip report with content: the folder itself holds shards only.
    records = [ShardRecord(f"u{i}", tone(2000 + 50 * i, seed=i), "pa") for i in range(5)]
    records.insert(2, ShardRecord("bad", str(tmp_path / "absent.wav"), "a"))
    records.append(ShardRecord("u0", tone(2000), "pa"))  # duplicate id
    for shard_size, num_jobs in ((1, 1), (2, 2), (100, 1)):
        out = tmp_path / f"out{shard_size}"
        summary = write_shar(records, out, shard_size=shard_size, num_jobs=num_jobs)
        assert (summary.written, summary.skipped) == (5, 2)
        assert len(summary.skipped_report.read_text().splitlines()) == 3
        check_plain_lhotse_reads(out, 5)
        again = write_shar(records, out, shard_size=shard_size)  # a no-op leaves it clean
        assert again.already_complete and again.skipped_report == summary.skipped_report
        check_plain_lhotse_reads(out, 5)


def test_older_layout_is_still_read_and_moved_out(tmp_path):
    records = [ShardRecord(f"u{i}", tone(2000, seed=i), "a") for i in range(3)]
    records.append(ShardRecord("bad", str(tmp_path / "absent.wav"), "a"))
    out = tmp_path / "shar"
    write_shar(records, out, shard_size=2)
    # As written before the side files moved out: both inside the folder.
    os.replace(index_path(out), out / "shar_index.json")
    os.replace(skipped_path(out), out / "skipped.tsv")
    assert is_complete(out) and count_cuts(out) == 3 and len(read_back(out)) == 3
    seen = []

    def count(rec):
        seen.append(rec.id)
        return rec

    again = write_shar(records, out, shard_size=2, transform=count)
    assert again.already_complete and (again.written, again.skipped) == (3, 1) and not seen
    assert again.skipped_report == skipped_path(out) and "absent.wav" in again.skipped_report.read_text()
    assert is_complete(out) and count_cuts(out) == 3
    check_plain_lhotse_reads(out, 3)


def test_interruption_while_finishing_resumes_without_redoing(tmp_path, monkeypatch):
    from zipa.data import shar

    records = [ShardRecord(f"u{i}", tone(2000, seed=i), "a") for i in range(3)]
    out = tmp_path / "shar"
    real_replace = os.replace

    def crash_on_rename(src, dst):
        if Path(src).name == shar.SHARDS_SUBDIR:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(shar.os, "replace", crash_on_rename)
    with pytest.raises(KeyboardInterrupt):
        write_shar(records, out, shard_size=2)
    monkeypatch.setattr(shar.os, "replace", real_replace)
    assert index_path(out).is_file() and not out.exists() and not is_complete(out)

    seen = []

    def count(rec):
        seen.append(rec.id)
        return rec

    summary = write_shar(records, out, shard_size=2, transform=count)
    assert not seen and summary.written == 3 and is_complete(out)
    assert not (tmp_path / ".shar.partial").exists()
    check_plain_lhotse_reads(out, 3)


def test_refuses_a_foreign_nonempty_folder(tmp_path):
    (tmp_path / "shar").mkdir()
    (tmp_path / "shar" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_shar([ShardRecord("a", tone(2000), "a")], tmp_path / "shar")


def test_discover_shards_errors_and_subfolders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such|not found"):
        discover_shards(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="place all tar and json files in the same folder"):
        discover_shards(tmp_path / "empty")

    records = [ShardRecord(f"u{i}", tone(2000, seed=i), "a") for i in range(4)]
    write_shar(records[:2], tmp_path / "corpus" / "lang1", shard_size=1)
    write_shar(records[2:], tmp_path / "corpus" / "lang2", shard_size=1)
    fields = discover_shards(tmp_path / "corpus")  # no shards at the top: subfolders
    assert len(fields["cuts"]) == len(fields["recording"]) == 4
    for c, r in zip(fields["cuts"], fields["recording"]):
        assert Path(c).parent == Path(r).parent
        assert Path(c).name.split(".")[1] == Path(r).name.split(".")[1]
    assert [c.id for c in read_shar_dir(tmp_path / "corpus")] == ["u0", "u1", "u2", "u3"]

    (tmp_path / "corpus" / "lang2" / "recording.000001.tar").unlink()
    with pytest.raises(ValueError, match="4 cut shards but 3 'recording' shards"):
        discover_shards(tmp_path / "corpus")


def test_read_tsv_and_label_transform(tmp_path):
    (tmp_path / "audio").mkdir()
    tsv = tmp_path / "list.tsv"
    tsv.write_text(
        "id\tpath\tipa\tlang\n"
        "# a comment\n"
        "a\taudio/a.wav\tˈtʃa.ɡo\tspa\n"
        f"b\t{tmp_path / 'b.wav'}\tpa\n"
        "\n"
        "c\tonly-two-fields\n",
        encoding="utf-8",
    )
    recs = list(read_tsv(tsv))
    assert [r.id for r in recs] == ["a", "b", "c"]
    assert recs[0].audio == str(tmp_path / "audio" / "a.wav") and recs[0].language == "spa"
    assert recs[1].audio == str(tmp_path / "b.wav") and recs[1].language is None
    out = LabelTransform(default_language="und")(recs[0])
    assert out.text == "tʃago" and out.language == "spa"  # stress, syllable mark; ɡ -> g
    assert LabelTransform(default_language="und")(recs[1]).language == "und"
    assert LabelTransform(remove_diacritics=True)(ShardRecord("x", None, "pʰaː")).text == "pa"
    from zipa.data.shar import record_to_cut

    with pytest.raises(SkipItem, match="malformed"):
        record_to_cut(recs[2])


def _run_make_shar(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "local" / "make_shar.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_make_shar_cli_help():
    r = _run_make_shar("--help", cwd=REPO)
    assert r.returncode == 0 and "--tsv" in r.stdout and "--g2p" in r.stdout


def test_make_shar_cli_end_to_end(tmp_path):
    (tmp_path / "wavs").mkdir()
    for i in range(5):
        rate = 16000 if i != 2 else 8000
        sf.write(tmp_path / "wavs" / f"s{i}.wav", tone(rate // 2, rate=rate, seed=i), rate)
    (tmp_path / "wavs" / "broken.wav").write_bytes(b"\x00" * 100)
    lines = [f"s{i}\twavs/s{i}.wav\tˈpa{i}\tdeu" for i in range(5)]
    lines.insert(3, "broken\twavs/broken.wav\tpa\tdeu")
    (tmp_path / "data.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    args = ("--tsv", "data.tsv", "--out-dir", "out", "--shard-size", "2", "--no-progress")
    r = _run_make_shar(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "written 5 cuts in 3 shards" in r.stdout and "skipped 1" in r.stdout
    report = (tmp_path / ".out.skipped.tsv").read_text().splitlines()
    assert len(report) == 2 and report[1].startswith("broken\t") and "unreadable audio" in report[1]
    check_plain_lhotse_reads(tmp_path / "out", 5)
    cuts = read_back(tmp_path / "out")
    assert sorted(cuts) == [f"s{i}" for i in range(5)]
    assert cuts["s3"].supervisions[0].text == "pa"  # normalised: stress mark gone, digit (tone) gone
    assert cuts["s2"].sampling_rate == 16000 and cuts["s2"].duration == pytest.approx(0.5)

    again = _run_make_shar(*args, cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout


def test_make_shar_cli_from_manifest(tmp_path):
    from lhotse import CutSet, Recording, SupervisionSegment

    cuts = []
    for i in range(3):
        path = tmp_path / f"m{i}.flac"
        sf.write(path, tone(8000, seed=i), 16000)
        cut = Recording.from_file(path).to_cut()
        cut.supervisions = [SupervisionSegment(f"m{i}", cut.recording_id, 0, 0.5, text="ʃi", language="fra")]
        cuts.append(cut)
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    r = _run_make_shar("--manifest", "cuts.jsonl.gz", "--out-dir", "out", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    back = read_back(tmp_path / "out")
    assert sorted(back) == sorted(c.id for c in cuts)
    assert {c.supervisions[0].text for c in back.values()} == {"ʃi"}


def test_make_shar_cli_g2p(tmp_path):
    pytest.importorskip("espeakng_loader")
    sf.write(tmp_path / "a.wav", tone(8000), 16000)
    (tmp_path / "t.tsv").write_text("a\ta.wav\thola\n", encoding="utf-8")
    r = _run_make_shar("--tsv", "t.tsv", "--g2p", "spa", "--out-dir", "out", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sup = read_back(tmp_path / "out")["a"].supervisions[0]
    assert sup.language == "spa" and sup.text and "l" in sup.text and "h" not in sup.text
