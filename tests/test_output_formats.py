"""The output format registry (`zipa.inference.writers.FORMATS`): a format is one entry, and a
new one shows up in `zipa transcribe/align --format`, in `--resume`, in the web page's downloads
and in `zipa.write`; the public writers write what the CLI writes."""

import pytest

import zipa
from tiny_models import speechlike, write_wav

from zipa.cli import main
from zipa.inference.writers import FORMATS, OutputFormat, Record, register_format, write


def _shout(records, timestamps=False, words=True, alternatives=False):
    """The fake format: ``<path> | <TRANSCRIPT IN CAPITALS> | <number of phones>`` per file."""
    return "".join(f"{r.path} | {r.alignment.text.upper()} | {len(r.alignment.phones)}\n" for r in records)


@pytest.fixture
def shout():
    fmt = register_format(OutputFormat("shout", ".shout", "text/plain", _shout, "the transcript in capitals",
                                       line_key=lambda line: line.split(" | ")[0]))
    yield fmt
    del FORMATS["shout"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for name, seed in (("a", 1), ("b", 2)):
        write_wav(folder / f"{name}.wav", speechlike(1.5, seed))
    return folder


def test_a_registered_format_is_written_by_the_cli_and_resumed(shout, ctc_model, transcriber, clips, tmp_path, capsys):
    out = tmp_path / "all.shout"
    assert main(["transcribe", str(clips / "a.wav"), "-m", str(ctc_model), "--device", "cpu", "-f", "shout",
                 "-o", str(out), "-q"]) == 0, capsys.readouterr().err
    (result,) = transcriber.transcribe_files([clips / "a.wav"])
    expected_a = _shout([Record(str(clips / "a.wav"), result.duration, transcriber.alignment(result.tokens))])
    assert out.read_text() == expected_a
    out.write_text(expected_a + "half a line without its newline")
    assert main(["transcribe", str(clips), "-m", str(ctc_model), "--device", "cpu", "-f", "shout", "-o", str(out),
                 "--resume"]) == 0
    assert "resuming: 1 of 2 files" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert lines[0] == expected_a.strip() and len(lines) == 2 and lines[1].startswith(f"{clips / 'b.wav'} | ")


def test_a_registered_format_is_a_download_of_the_web_page(shout, transcriber, clips, tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from zipa.web import create_app

    app = create_app(transcriber, model_name="tiny.pth", tmp_dir=tmp_path)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        response = client.post("/api/jobs", files={"file": ("a.wav", (clips / "a.wav").read_bytes())})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        for _ in range(1000):
            job = client.get(f"/api/jobs/{job_id}").json()
            if job["state"] in ("done", "error"):
                break
        assert job["state"] == "done" and "shout" in job["downloads"]
        download = client.get(f"/api/jobs/{job_id}/download/shout")
    assert download.status_code == 200
    assert download.text == f"a.wav | {job['result']['text'].upper()} | {len(job['result']['phones'])}\n"
    assert download.headers["content-disposition"].endswith("a.shout")


def test_zipa_write_gives_the_bytes_of_zipa_align(ctc_model, transcriber, clips, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(clips)
    (alignment,) = transcriber.timestamps([clips / "a.wav"])
    for suffix in (".TextGrid", ".ctm", ".jsonl", ".tsv"):
        cli = tmp_path / f"cli{suffix}"
        assert main(["align", "a.wav", "-m", str(ctc_model), "--device", "cpu", "--aligner", "none",
                     "-f", FORMATS_BY_SUFFIX[suffix], "-o", str(cli), "-q"]) == 0, capsys.readouterr().err
        ours = tmp_path / f"a{suffix}"
        write(Record("a.wav", 1.5, alignment), ours)
        assert ours.read_bytes() == cli.read_bytes(), suffix
    zipa.write(alignment, tmp_path / "front_door.TextGrid", duration=1.5)
    assert (tmp_path / "front_door.TextGrid").read_bytes() == (tmp_path / "cli.TextGrid").read_bytes()
    with pytest.raises(ValueError, match="no output format has the suffix"):
        zipa.write(alignment, tmp_path / "a.pdf")


FORMATS_BY_SUFFIX = {".TextGrid": "textgrid", ".ctm": "ctm", ".jsonl": "jsonl", ".tsv": "tsv"}
