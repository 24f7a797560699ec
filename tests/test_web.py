"""`zipa serve` (zipa.web): the API through starlette's TestClient on a tiny model (results equal
the Transcriber's, downloads equal `zipa align`'s bytes, bad and oversized uploads answered with
a message naming the file, one decoding at a time, progress, no temporary files left), who may
use it (other hosts 400, other origins 403, a full queue 503, the disk cap 507), the page
(offline, shipped in the wheel), the command, the page in a headless chromium end to end, and
30 clients for 60 s on loopback."""

import collections
import fnmatch
import os
import queue
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO
from tiny_models import speechlike, write_wav

pytest.importorskip("starlette", reason="zipa.web needs the web extra: pip install 'zipa-phones[web]'")
pytest.importorskip("multipart", reason="zipa.web needs the web extra: pip install 'zipa-phones[web]'")
pytest.importorskip("httpx", reason="starlette's TestClient needs httpx (the dev extra)")

from starlette.testclient import TestClient  # noqa: E402

from zipa.cli import main  # noqa: E402
from zipa.decoding.options import DecodingOptions  # noqa: E402
from zipa.inference.forced import AlignJob  # noqa: E402
from zipa.inference.long_audio import plan_windows  # noqa: E402
from zipa.inference.transcriber import Transcriber  # noqa: E402
from zipa.web import create_app  # noqa: E402
from zipa.web.server import allowed_hosts  # noqa: E402
from zipa.web.spectrogram import TILE_SECONDS, spectrogram_tiles  # noqa: E402

STATIC = REPO / "zipa" / "web" / "static"
TIMEOUT = 60.0
BASE = "http://127.0.0.1:8000"  # the TestClient's address: a name the application answers


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """speech.wav (2.5 s), long.flac (3.5 s), short.wav (20 ms), silent.wav (0 samples)."""
    root = tmp_path_factory.mktemp("web_audio")
    write_wav(root / "speech.wav", speechlike(2.5, 31))
    sf.write(str(root / "long.flac"), speechlike(3.5, 32), 16000, subtype="PCM_16")
    write_wav(root / "short.wav", speechlike(0.02, 33))
    sf.write(str(root / "silent.wav"), np.zeros(0, np.float32), 16000)
    return root


@pytest.fixture
def uploads(tmp_path):
    """The server's temporary folder; every test ends with it empty."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    yield folder
    assert list(folder.iterdir()) == [], "an upload was left behind"


def client_for(transcriber, uploads, **options) -> TestClient:
    return TestClient(create_app(transcriber, model_name="tiny.pth", tmp_dir=uploads, **options), base_url=BASE)


@pytest.fixture
def client(transcriber, uploads):
    with client_for(transcriber, uploads) as c:  # `with`: the app's lifespan, which stops the worker
        yield c


def upload(client, name, data, headers=None, **fields):
    if isinstance(data, Path):
        data = data.read_bytes()
    return client.post("/api/jobs", files={"file": (name, data, "application/octet-stream")}, data=fields,
                       headers=headers)


def wait(client, job_id):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "error"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {TIMEOUT} s: {job}")


def submitted(client, name, data, **fields):
    response = upload(client, name, data, **fields)
    assert response.status_code == 202, response.text
    return wait(client, response.json()["id"])


def rounded(intervals):
    return [(iv.label, round(iv.start, 3), round(iv.end, 3)) for iv in intervals]


def shown(items, key):
    return [(item[key], item["start"], item["end"]) for item in items]


# ----------------------------------------------------------------------------- results


def test_a_file_gives_the_transcribers_phones_and_words(client, transcriber, audio):
    job = submitted(client, "speech.wav", audio / "speech.wav")
    assert job["state"] == "done" and job["error"] is None and job["mode"] == "transcribe"
    (expected,) = transcriber.transcribe_files([audio / "speech.wav"])
    alignment = transcriber.alignment(expected.tokens, expected.duration)
    result = job["result"]
    assert len(alignment.phones) >= 3, "the tiny model should emit phones on speech-like audio"
    assert shown(result["phones"], "phone") == rounded(alignment.phones)
    assert shown(result["words"], "word") == rounded(alignment.words)
    assert result["text"] == alignment.text and result["path"] == "speech.wav"
    assert job["duration"] == pytest.approx(2.5) and job["seconds_done"] == pytest.approx(2.5)


def test_downloads_are_the_bytes_zipa_align_writes(client, ctc_model, audio, tmp_path, monkeypatch, capsys):
    job = submitted(client, "speech.wav", audio / "speech.wav")
    monkeypatch.chdir(audio)  # so that the command names the file as the page does: speech.wav
    suffixes = {"textgrid": ".TextGrid", "ctm": ".ctm", "jsonl": ".jsonl", "tsv": ".tsv"}
    for fmt, suffix in suffixes.items():
        out = tmp_path / f"cli{suffix}"
        assert main(["align", "speech.wav", "-m", str(ctc_model), "--device", "cpu", "-f", fmt, "-o", str(out),
                     "-q"]) == 0, capsys.readouterr().err
        response = client.get(f"/api/jobs/{job['id']}/download/{fmt}")
        assert response.status_code == 200
        assert response.content == out.read_bytes(), fmt
        assert response.headers["content-disposition"] == f"attachment; filename*=UTF-8''speech{suffix}"
    assert client.get(f"/api/jobs/{job['id']}/download/pdf").status_code == 404


def test_a_transcript_is_force_aligned(client, transcriber, audio):
    job = submitted(client, "speech.wav", audio / "speech.wav", transcript="həloʊ wɜːld X")
    assert job["state"] == "done" and job["mode"] == "align"
    (expected,) = transcriber.align_files([AlignJob.whole(audio / "speech.wav", "həloʊ wɜːld X")])
    alignment = transcriber.alignment(expected.tokens, expected.duration)
    assert shown(job["result"]["phones"], "phone") == rounded(alignment.phones)
    assert job["result"]["text"] == "həloʊ wɜːld"
    message, *fit = job["messages"]  # the dropped symbol, named with the file's name; then the fit warnings
    assert message.startswith("speech.wav: ") and "X (U+0058)" in message
    assert fit == [w.replace(str(audio / "speech.wav"), "speech.wav") for w in expected.warnings]
    assert fit and all(w.startswith("speech.wav: the transcript does not fit the audio") for w in fit)  # tiny model
    # Orthography with a language: through the G2P, as zipa align --text --lang.
    job = submitted(client, "speech.wav", audio / "speech.wav", transcript="hello world", lang="en-us")
    (expected,) = transcriber.align_files([AlignJob.whole(audio / "speech.wav", "hello world")], lang="en-us")
    alignment = transcriber.alignment(expected.tokens, expected.duration)
    assert job["state"] == "done" and job["result"]["text"] == alignment.text and len(alignment.words) == 2
    assert shown(job["result"]["phones"], "phone") == rounded(alignment.phones)


def test_a_transcript_too_long_for_the_audio_is_the_jobs_error(client, audio):
    job = submitted(client, "speech.wav", audio / "speech.wav", transcript="a " * 200)
    assert job["state"] == "error"
    assert job["error"].startswith("speech.wav: the transcript is too long for the audio")


# ----------------------------------------------------------------------------- bad input


def test_bad_files_are_answered_with_a_message_naming_them(client, audio, uploads):
    cases = [
        ("empty.wav", b"", "empty.wav: the file is empty (0 bytes)"),
        ("notes.wav", b"this is not audio at all", "notes.wav: cannot read audio file"),
        ("silent.wav", audio / "silent.wav", "silent.wav: empty audio (0 samples)"),
    ]
    for name, data, message in cases:
        response = upload(client, name, data)
        assert response.status_code == 400
        assert response.json()["error"].startswith(message)
        assert str(uploads) not in response.json()["error"]
    assert client.post("/api/jobs", data={"transcript": "a"}).status_code == 400  # no file at all
    short = submitted(client, "short.wav", audio / "short.wav")  # readable, but too short to decode
    assert short["state"] == "error" and short["error"].startswith("short.wav: audio too short")
    assert str(uploads) not in short["error"]
    assert submitted(client, "speech.wav", audio / "speech.wav")["state"] == "done"  # still serving
    assert client.get("/api/jobs/nonesuch").status_code == 404


def test_uploads_over_the_limit_get_413(transcriber, audio, uploads):
    data = (audio / "speech.wav").read_bytes()  # 160 kB (float32)
    with client_for(transcriber, uploads, max_upload_mb=0.1) as client:
        response = upload(client, "speech.wav", data)  # with a Content-Length
        assert response.status_code == 413
        assert response.json()["error"] == (
            f"the upload ({int(response.request.headers['content-length']) / 2**20:.1f} MB) is larger than this server's limit "
            "of 0.1 MB (zipa serve --max-upload-mb)")
        # Streamed without a Content-Length: counted as it arrives.
        body = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="speech.wav"\r\n'
                b"Content-Type: audio/wav\r\n\r\n" + data + b"\r\n--XyZ--\r\n")
        response = client.post("/api/jobs", content=iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
                               headers={"content-type": "multipart/form-data; boundary=XyZ"})
        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert response.json()["error"].startswith("the upload is larger than this server's limit of 0.1 MB")
        path = uploads.parent / "small.flac"  # a file under the limit still goes through
        sf.write(str(path), speechlike(1.0, 34), 16000, subtype="PCM_16")
        assert submitted(client, "small.flac", path)["state"] == "done"


# ----------------------------------------------------------------------------- the queue


def _instrumented(transcriber, gate=None):
    """Count the calls inside the model's encoder at once (each one lingers a little), or hold
    each call until ``gate`` lets it through."""
    encoder = transcriber.model.forward_encoder
    seen = {"active": 0, "most": 0, "calls": 0}
    lock = threading.Lock()

    def forward_encoder(*args, **kwargs):
        with lock:
            seen["active"] += 1
            seen["calls"] += 1
            seen["most"] = max(seen["most"], seen["active"])
        try:
            if gate is not None:
                assert gate.acquire(timeout=TIMEOUT)
            else:
                time.sleep(0.05)
            return encoder(*args, **kwargs)
        finally:
            with lock:
                seen["active"] -= 1

    transcriber.model.forward_encoder = forward_encoder
    return seen


def test_concurrent_requests_are_decoded_one_at_a_time(ctc_model, audio, uploads):
    transcriber = Transcriber.from_checkpoint(ctc_model, device="cpu")
    names = ["speech.wav", "long.flac", "speech.wav", "long.flac", "speech.wav", "long.flac"]
    expected = {name: transcriber.transcribe_files([audio / name])[0] for name in set(names)}
    seen = _instrumented(transcriber)
    results, errors = [None] * len(names), []
    with client_for(transcriber, uploads) as client:
        def one(i):
            try:
                results[i] = submitted(client, names[i], audio / names[i])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(names))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert seen["calls"] >= len(names) and seen["most"] == 1
    for name, job in zip(names, results):
        ft = expected[name]
        assert job["state"] == "done"
        assert shown(job["result"]["phones"], "phone") == rounded(transcriber.alignment(ft.tokens, ft.duration).phones)


def test_progress_counts_the_windows_of_a_long_file(ctc_model, audio, uploads):
    transcriber = Transcriber.from_checkpoint(ctc_model, device="cpu")
    gate = threading.Semaphore(0)
    seen = _instrumented(transcriber, gate)
    with client_for(transcriber, uploads, options=DecodingOptions(window=1.0, overlap=0.2, batch_size=1)) as client:
        job = upload(client, "long.flac", audio / "long.flac").json()
        windows = len(plan_windows(int(3.5 * 16000), 16000, 1.0, 0.2))
        assert job["windows"] == windows == 5 and job["duration"] == pytest.approx(3.5)
        queued = upload(client, "speech.wav", audio / "speech.wav").json()
        assert client.get(f"/api/jobs/{queued['id']}").json()["position"] == 1  # behind the long file
        done = [0.0]
        for _ in range(windows):
            gate.release()
            deadline = time.monotonic() + TIMEOUT
            while (now := client.get(f"/api/jobs/{job['id']}").json())["seconds_done"] <= done[-1]:
                assert time.monotonic() < deadline, now
                time.sleep(0.01)
            assert now["state"] in ("running", "done")
            done.append(now["seconds_done"])
        assert done[-1] == pytest.approx(3.5) and len(set(done)) == windows + 1
        gate.release(queued["windows"])  # the queued file's windows
        assert wait(client, job["id"])["state"] == "done" and wait(client, queued["id"])["state"] == "done"
        assert seen["calls"] == windows + queued["windows"] and seen["most"] == 1


def test_stopping_the_server_leaves_no_upload_behind(ctc_model, audio, uploads, monkeypatch):
    transcriber = Transcriber.from_checkpoint(ctc_model, device="cpu")
    gate = threading.Semaphore(0)
    _instrumented(transcriber, gate)  # the first file's decoding hangs until the server has stopped
    monkeypatch.setattr("zipa.web.app.STOP_WAIT", 0.2)
    with client_for(transcriber, uploads) as client:
        running = upload(client, "speech.wav", audio / "speech.wav").json()
        queued = upload(client, "long.flac", audio / "long.flac").json()
        jobs = client.app.state.jobs
        assert len(list(uploads.iterdir())) == 2
    assert list(uploads.iterdir()) == []
    assert jobs.get(queued["id"]).error == "long.flac: the server stopped before decoding it"
    gate.release(10)  # let the abandoned worker end: its file is gone, so its job fails
    deadline = time.monotonic() + TIMEOUT
    while jobs.get(running["id"]).state == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert jobs.get(running["id"]).state == "error"


def _running(client, job_id):
    """Wait until the worker has taken ``job_id`` (it then holds no place in the queue)."""
    deadline = time.monotonic() + TIMEOUT
    while client.get(f"/api/jobs/{job_id}").json()["state"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_full_queue_answers_503_with_retry_after(ctc_model, audio, uploads):
    transcriber = Transcriber.from_checkpoint(ctc_model, device="cpu")
    gate = threading.Semaphore(0)
    _instrumented(transcriber, gate)  # the first file's decoding waits, the others queue behind it
    with client_for(transcriber, uploads, max_queue=2) as client:
        first = upload(client, "speech.wav", audio / "speech.wav").json()
        _running(client, first["id"])
        queued = [upload(client, "long.flac", audio / "long.flac") for _ in range(2)]
        assert [r.status_code for r in queued] == [202, 202]
        refused = upload(client, "speech.wav", audio / "speech.wav")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
        assert refused.json()["error"] == ("the server is busy: 2 files are waiting to be decoded, its limit "
                                           "(zipa serve --max-queue); try again when some are done")
        assert len(list(uploads.iterdir())) == 3  # the refused upload was not stored
        assert client.get("/api/info").json()["waiting"] == 2
        gate.release(1000)
        for job in [first, *(r.json() for r in queued)]:
            assert wait(client, job["id"])["state"] == "done"
        assert submitted(client, "speech.wav", audio / "speech.wav")["state"] == "done"  # room again
        info = client.get("/api/info").json()
        assert (info["waiting"], info["held_mb"]) == (0, 0)


def test_the_disk_cap_answers_507_with_retry_after(ctc_model, audio, uploads):
    transcriber = Transcriber.from_checkpoint(ctc_model, device="cpu")
    gate = threading.Semaphore(0)
    _instrumented(transcriber, gate)
    data = (audio / "speech.wav").read_bytes()  # 160 kB: two fit in 0.4 MB, three do not
    with client_for(transcriber, uploads, max_upload_mb=0.2, max_disk_mb=0.4) as client:
        first = upload(client, "speech.wav", data)
        _running(client, first.json()["id"])  # the file being decoded still holds its bytes
        second = upload(client, "speech.wav", data)
        assert (first.status_code, second.status_code) == (202, 202)
        held = sum(int(r.request.headers["content-length"]) for r in (first, second))
        refused = upload(client, "speech.wav", data)
        assert refused.status_code == 507 and refused.headers["retry-after"] == "3"
        assert refused.json()["error"] == (
            f"the server is full: the uploads it holds take {held / 2**20:.1f} MB, and "
            f"{int(refused.request.headers['content-length']) / 2**20:.1f} MB more would pass its limit of 0.4 MB "
            "(zipa serve --max-disk-mb); try again when some are done")
        assert len(list(uploads.iterdir())) == 2
        assert client.get("/api/info").json()["held_mb"] == pytest.approx(held / 2**20)
        gate.release(1000)
        for response in (first, second):
            assert wait(client, response.json()["id"])["state"] == "done"
        assert client.get("/api/info").json()["held_mb"] == 0  # every byte given back
        assert submitted(client, "speech.wav", data)["state"] == "done"
    with pytest.raises(ValueError, match=r"disk cap \(--max-disk-mb 5\) is below the upload limit"):
        create_app(transcriber, max_upload_mb=10, max_disk_mb=5)


# ----------------------------------------------------------------------------- only its own page


def test_requests_naming_another_host_get_400(client, audio):
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example:8000",
                 "localhost.attacker.example", "[::2]:8000", "0.0.0.0:8000"):
        for path in ("/", "/api/info", "/static/app.js", "/api/jobs/1-abcd"):
            assert client.get(path, headers={"host": host}).status_code == 400, (host, path)
        assert upload(client, "speech.wav", audio / "speech.wav", headers={"host": host}).status_code == 400
    for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "127.0.0.1"):
        assert client.get("/api/info", headers={"host": host}).status_code == 200, host
    job = upload(client, "speech.wav", audio / "speech.wav", headers={"host": "localhost:8000"}).json()
    assert job["id"].startswith("1-")  # the first upload stored: the refused ones made no job
    assert wait(client, job["id"])["state"] == "done"


def test_the_host_names_follow_the_address_and_allow_host(transcriber, uploads, ctc_model, capsys):
    assert allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_hosts("::1") == ["[::1]", "localhost", "127.0.0.1"]
    assert allowed_hosts("192.168.1.5") == ["192.168.1.5"]  # another machine's address: its own name only
    assert allowed_hosts("192.168.1.5", ["Lab.Example.org", "fe80::1", "*.lan"]) == [
        "192.168.1.5", "lab.example.org", "[fe80::1]", "*.lan"]
    import socket

    assert allowed_hosts("0.0.0.0") == ["0.0.0.0", "localhost", "127.0.0.1", "[::1]", socket.gethostname().lower()]
    for bad in ("lab.example.org:8000", "http://lab.example.org", "a*b", "*lan", ""):
        with pytest.raises(ValueError, match="not a host name"):
            allowed_hosts("127.0.0.1", [bad])
    with client_for(transcriber, uploads, allowed_hosts=allowed_hosts("192.168.1.5", ["lab.example.org", "*.lan"])) \
            as client:
        for host, status in [("lab.example.org", 200), ("pc.lan:8000", 200), ("192.168.1.5:8000", 200),
                             ("localhost:8000", 400), ("127.0.0.1:8000", 400), ("attacker.example", 400)]:
            assert client.get("/api/info", headers={"host": host}).status_code == status, host
    assert main(["serve", "--model", str(ctc_model), "--device", "cpu", "--allow-host", "lab.example:80"]) == 2
    assert "zipa serve: error: --allow-host lab.example:80: not a host name" in capsys.readouterr().err


def test_uploads_from_another_origin_get_403(client, audio):
    hostile = [
        {"origin": "https://attacker.example"},
        {"origin": "null"},  # a sandboxed frame, a file:// page
        {"origin": "http://127.0.0.1:8001"},  # another local server (another port)
        {"origin": "http://localhost:8000"},  # another name of this one is another origin
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": BASE, "sec-fetch-site": "cross-site"},
    ]
    for headers in hostile:
        response = upload(client, "speech.wav", audio / "speech.wav", headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["error"].startswith("refused: a request from ")
        assert response.json()["error"].endswith("only this server's own page may upload")
    info = client.get("/api/info", headers={"origin": "https://attacker.example"})  # reading: the browser's
    assert info.status_code == 200 and (info.json()["waiting"], info.json()["held_mb"]) == (0, 0)  # nothing held
    friendly = [{"origin": BASE, "sec-fetch-site": "same-origin"}, {"sec-fetch-site": "none"}, {}]  # {}: curl
    for n, headers in enumerate(friendly, 1):
        job = upload(client, "speech.wav", audio / "speech.wav", headers=headers).json()
        assert job["id"].startswith(f"{n}-"), headers  # the refused ones made no job
        assert wait(client, job["id"])["state"] == "done"


# ----------------------------------------------------------------------------- the spectrogram


def _png_pixels(png: bytes) -> np.ndarray:
    """Decode the 8-bit grey PNGs zipa.web.spectrogram writes (one IDAT, filter 0 on each row)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", png[16:26])
    assert (depth, colour) == (8, 0)
    start = png.index(b"IDAT") + 4
    (length,) = struct.unpack(">I", png[start - 8:start - 4])
    rows = np.frombuffer(zlib.decompress(png[start:start + length]), np.uint8).reshape(height, width + 1)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:]


def test_spectrogram_tiles_cover_the_file_on_one_grey_scale():
    rate = 16000
    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(20 * rate) / rate).astype(np.float32)
    tone[8 * rate:16 * rate] *= 0.01  # a quiet middle tile: 40 dB down, so lighter, not rescaled
    tiles = spectrogram_tiles(tone)
    assert [t.start for t in tiles] == [0.0, TILE_SECONDS, 2 * TILE_SECONDS]
    for tile in tiles:
        assert tile.columns * tile.hop == pytest.approx(min(TILE_SECONDS, 20 - tile.start), abs=2 * tile.hop)
    pixels = [_png_pixels(t.png) for t in tiles]
    assert pixels[0].shape == (161, tiles[0].columns)  # 0-5 kHz in 31.25 Hz bins
    row = 160 - 32  # 1 kHz, counted from the top (high frequencies first)
    loud, quiet = pixels[0][row].mean(), pixels[1][row].mean()
    assert loud < 10 and 150 < quiet < 220 and pixels[0][0].mean() > 245  # dark tone, white at 5 kHz
    assert (_png_pixels(spectrogram_tiles(np.zeros(rate, np.float32))[0].png) == 255).all()  # silence: white


def test_the_page_gets_its_tiles(client, audio):
    job = submitted(client, "speech.wav", audio / "speech.wav")
    (tile,) = job["spectrogram"]
    response = client.get(f"/api/jobs/{job['id']}/spectrogram/0")
    assert response.headers["content-type"] == "image/png"
    assert _png_pixels(response.content).shape[1] == tile["columns"]
    assert client.get(f"/api/jobs/{job['id']}/spectrogram/1").status_code == 404


# ----------------------------------------------------------------------------- the page


def test_the_page_is_served_whole_and_offline(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    files = sorted(p.name for p in STATIC.iterdir())
    assert files == ["app.js", "index.html", "recorder-worklet.js", "style.css"]
    for name in files:
        text = client.get(f"/static/{name}").text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
    referenced = {"index.html": page.text, "app.js": client.get("/static/app.js").text}
    for source, text in referenced.items():
        for url in re.findall(r"""["'](/static/[^"']+)["']""", text):
            assert client.get(url).status_code == 200, f"{source} refers to {url}"
    assert client.get("/api/info").json()["model"] == "tiny.pth"


def test_the_static_files_are_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["zipa.web"]
    for path in STATIC.iterdir():
        relative = path.relative_to(REPO / "zipa" / "web").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
    assert set(config["project"]["optional-dependencies"]["web"]) >= {"uvicorn", "python-multipart"}


# ----------------------------------------------------------------------------- the command


def test_serve_without_the_web_extra_says_what_to_install(ctc_model, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "zipa.web" or m.startswith(("zipa.web.", "starlette"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)
    assert main(["serve", "--model", str(ctc_model), "--device", "cpu"]) == 2
    assert "zipa serve needs the web extra: pip install 'zipa-phones[web]'" in capsys.readouterr().err


def test_serve_refuses_a_port_in_use(ctc_model, capsys):
    from zipa.web.server import listen

    with listen("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        taken.listen()
        assert main(["serve", "--model", str(ctc_model), "--device", "cpu", "--port", str(port)]) == 2
    assert f"zipa serve: error: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_serve_defaults_to_this_machine_only():
    from zipa.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m.pth"])
    assert (args.host, args.port, args.max_upload_mb, args.device) == ("127.0.0.1", 8000, 200.0, None)
    from zipa.web.app import DEFAULT_MAX_DISK_MB, DEFAULT_MAX_QUEUE

    assert (args.max_queue, args.max_disk_mb, args.allow_host) == (64, 2048.0, []) == (
        DEFAULT_MAX_QUEUE, DEFAULT_MAX_DISK_MB, [])  # the command's defaults are create_app's


def test_serve_refuses_a_disk_cap_below_the_upload_limit(ctc_model, capsys):
    assert main(["serve", "--model", str(ctc_model), "--device", "cpu", "--max-upload-mb", "3000"]) == 2
    assert ("zipa serve: error: the disk cap (--max-disk-mb 2048) is below the upload limit (--max-upload-mb 3000)"
            in capsys.readouterr().err)


# ----------------------------------------------------------------------------- in a browser


def _browser():
    """A headless chromium driven by selenium, downloading into a folder; skips without one."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("no headless browser: apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver, options, Service(driver)


@contextmanager
def serving(ctc_model, folder, *options):
    """`zipa serve --port 0 OPTIONS` in a subprocess, with ``folder``/tmp as its TMPDIR (where
    the uploads go): (its address, the process)."""
    (folder / "tmp").mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(folder / "tmp"))
    errors = folder / "serve.err"
    with open(errors, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "zipa", "serve", "--model", str(ctc_model), "--device", "cpu", "--port", "0",
             *options],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=folder,
        )
    try:
        lines: "queue.Queue[str]" = queue.Queue()  # printed once the port is bound and the model loaded
        threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
        line = lines.get(timeout=TIMEOUT)
        assert line.startswith("zipa serve: http://127.0.0.1:"), (line, errors.read_text())
        yield line.split()[2], process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()


@pytest.fixture
def served(ctc_model, tmp_path):
    with serving(ctc_model, tmp_path, "--max-queue", "1") as address_and_process:  # files dropped together: 503s
        yield address_and_process


@pytest.mark.slow
def test_the_page_in_a_browser(served, transcriber, audio, tmp_path):
    webdriver, options, service = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    praatio_textgrid = pytest.importorskip("praatio.textgrid")
    url, process = served
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    browser = webdriver.Chrome(options=options, service=service)
    try:
        browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        until = WebDriverWait(browser, TIMEOUT, poll_frequency=0.1).until
        browser.get(url)
        until(lambda b: b.find_element(By.ID, "model").text == "model: model.pth")

        def finished(name):
            def card(b):
                for job in b.find_elements(By.CSS_SELECTOR, "article.job"):
                    if job.find_element(By.CSS_SELECTOR, ".name").text == name and \
                            job.get_attribute("data-state") in ("done", "error"):
                        return job
                return None
            return until(card)

        browser.find_element(By.ID, "files").send_keys(str(audio / "speech.wav"))
        job = finished("speech.wav")
        assert job.get_attribute("data-state") == "done", job.find_element(By.CSS_SELECTOR, ".error").text
        (expected,) = transcriber.transcribe_files([audio / "speech.wav"])
        alignment = transcriber.alignment(expected.tokens, expected.duration)

        def tier(name):
            return [(s.get_attribute("data-label"), float(s.get_attribute("data-start")),
                     float(s.get_attribute("data-end")))
                    for s in job.find_elements(By.CSS_SELECTOR, f".tier.{name} .segment")]

        assert tier("phones") == rounded(alignment.phones)
        assert tier("words") == rounded(alignment.words)
        assert job.find_element(By.CSS_SELECTOR, ".transcript").text == alignment.text
        shading = job.find_element(By.CSS_SELECTOR, ".tier.phones .segment").value_of_css_property("background-color")
        assert shading not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")  # shaded by confidence
        assert until(lambda b: b.execute_script(
            "return [...arguments[0].querySelectorAll('.spectrogram img')].every(i => i.complete && i.naturalWidth > 0)",
            job))

        track = job.find_element(By.CSS_SELECTOR, ".track")
        width = track.size["width"]
        job.find_element(By.CSS_SELECTOR, ".zoom-in").click()
        assert track.size["width"] > 1.5 * width  # zoomed in: the view scrolls
        job.find_element(By.CSS_SELECTOR, ".zoom-fit").click()
        assert track.size["width"] == width

        phone = job.find_element(By.CSS_SELECTOR, ".tier.phones .segment")
        phone.click()
        until(lambda b: "playing" in phone.get_attribute("class"))

        job.find_element(By.CSS_SELECTOR, "a.download[data-format='textgrid']").click()
        grid_path = downloads / "speech.TextGrid"
        until(lambda b: grid_path.exists() and not list(downloads.glob("*.crdownload")))
        grid = praatio_textgrid.openTextgrid(str(grid_path), includeEmptyIntervals=False)
        assert grid.tierNames == ("phones", "words")
        assert [e.label for e in grid.getTier("phones").entries] == [p.label for p in alignment.phones]
        assert [e.label for e in grid.getTier("words").entries] == [w.label for w in alignment.words]

        empty = tmp_path / "empty.wav"
        empty.write_bytes(b"")
        browser.find_element(By.ID, "files").send_keys(str(empty))
        failed = finished("empty.wav")
        assert failed.get_attribute("data-state") == "error"
        assert failed.find_element(By.CSS_SELECTOR, ".error").text == "empty.wav: the file is empty (0 bytes)"

        many = tmp_path / "many"  # six files at once, one place in the queue: 503s, which the page waits out
        many.mkdir()
        copies = [shutil.copy(audio / "speech.wav", many / f"copy{k}.wav") for k in range(6)]
        browser.find_element(By.ID, "files").send_keys("\n".join(map(str, copies)))
        for k in range(6):
            assert finished(f"copy{k}.wav").get_attribute("data-state") == "done"

        record = browser.find_element(By.ID, "record")  # chromium's fake microphone: beeps
        record.click()
        until(lambda b: record.text == "■ Stop")
        time.sleep(1.0)
        record.click()
        recorded = until(lambda b: [j for j in b.find_elements(By.CSS_SELECTOR, "article.job")
                                    if j.find_element(By.CSS_SELECTOR, ".name").text.startswith("recording-")
                                    and j.get_attribute("data-state") in ("done", "error")])
        assert recorded[0].get_attribute("data-state") == "done", recorded[0].text
        assert float(recorded[0].find_element(By.CSS_SELECTOR, ".status").text.split()[-2]) > 0.5  # seconds

        refused = "/api/jobs - Failed to load resource: the server responded with a status of "
        log = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert any(refused + "503" in line for line in log)  # the queue was full, and the copies went through
        problems = [line for line in log if refused + "400" not in line and refused + "503" not in line]
        assert problems == []  # no script errors, nothing missing (400: empty.wav)
    finally:
        browser.quit()
    process.send_signal(signal.SIGINT)  # Ctrl-C: requests finish, the worker stops, exit status 130 as elsewhere
    assert process.wait(timeout=20) == 128 + signal.SIGINT
    assert list((tmp_path / "tmp").glob("zipa-web-*")) == []  # the uploads' folders (TMPDIR) are gone


# ----------------------------------------------------------------------------- under load

SOAK_CLIENTS, SOAK_SECONDS, SOAK_UPLOADS = 30, 60.0, 500  # clients, seconds, uploads per client at most
SOAK_QUEUE = 8  # --max-queue: well below the clients, so that the queue fills
SOAK_MEMORY_MB = 40  # growth of the server's resident memory allowed after the soak


def _resident(pid: int) -> int:
    """Process ``pid``'s resident memory in bytes (Linux's /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024


def _clients(url, files, seconds):
    """`SOAK_CLIENTS` clients, each uploading the next of ``files`` ((name, bytes, form fields))
    and polling it to its end, over and over for ``seconds`` (at most `SOAK_UPLOADS` each), a
    503 or 507 making it wait for Retry-After: (Counter of the outcomes, list of the errors)."""
    httpx = pytest.importorskip("httpx")
    outcomes, errors = collections.Counter(), []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(k):
        with httpx.Client(base_url=url, timeout=TIMEOUT, headers={"origin": url.rstrip("/")}) as http:
            for n in range(SOAK_UPLOADS):
                if time.monotonic() >= end:
                    return
                name, data, fields = files[(k + n) % len(files)]
                response = http.post("/api/jobs", files={"file": (name, data)}, data=fields)
                if response.status_code in (503, 507):
                    with lock:
                        outcomes[response.status_code] += 1
                    time.sleep(min(float(response.headers["retry-after"]), max(0.0, end - time.monotonic())))
                    continue
                if response.status_code != 202:
                    raise AssertionError(f"{name}: {response.status_code} {response.text}")
                job = response.json()
                while job["state"] not in ("done", "error"):
                    time.sleep(0.2)
                    job = http.get(f"/api/jobs/{job['id']}").json()
                if job["state"] != "done" or not job["result"]["phones"]:
                    raise AssertionError(f"{name}: {job['error']}")
                with lock:
                    outcomes["done"] += 1

    def guarded(k):
        try:
            client(k)
        except Exception as e:  # noqa: BLE001 - every error is reported by the test
            errors.append(f"client {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=guarded, args=(k,), daemon=True) for k in range(SOAK_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, end - time.monotonic()) + TIMEOUT)
        assert not thread.is_alive(), "a client did not finish"
    return outcomes, errors


def _idle(url, process):
    """The server's /api/info once nothing is waiting or held, and its resident memory then."""
    httpx = pytest.importorskip("httpx")
    deadline = time.monotonic() + TIMEOUT
    while (info := httpx.get(url + "api/info").json())["waiting"] or info["held_mb"]:
        assert time.monotonic() < deadline, info
        time.sleep(0.1)
    return info, _resident(process.pid)


@pytest.mark.slow
def test_30_clients_for_60_s_get_their_results_or_503_and_leave_nothing_behind(ctc_model, audio, tmp_path):
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the server's memory from /proc (Linux)")
    speech = (audio / "speech.wav").read_bytes()
    files = [("speech.wav", speech, {}), ("long.flac", (audio / "long.flac").read_bytes(), {}),
             ("aligned.wav", speech, {"transcript": "həloʊ wɜːld"})]
    with serving(ctc_model, tmp_path, "--max-queue", str(SOAK_QUEUE)) as (url, process):
        folders = sorted((tmp_path / "tmp").iterdir())
        warm, errors = _clients(url, files, 10.0)  # past the 50 results kept, and every code path taken
        assert errors == []
        _, start = _idle(url, process)
        outcomes, errors = _clients(url, files, SOAK_SECONDS)
        info, end = _idle(url, process)
        assert errors == []  # every upload gave its phones, or a 503 to wait for
        assert outcomes[503] > 0 and outcomes[507] == 0  # the queue filled: the bound held it
        assert outcomes["done"] >= SOAK_CLIENTS
        assert sorted((tmp_path / "tmp").iterdir()) == folders  # no upload left on the disk
        assert end - start < SOAK_MEMORY_MB * 2**20, (
            f"the server grew by {(end - start) / 2**20:.0f} MB over {outcomes['done']} files")
        print(f"\nsoak: {dict(warm)} warming up, then {dict(outcomes)} in {SOAK_SECONDS:.0f} s; resident memory "
              f"{start / 2**20:.0f} MB -> {end / 2**20:.0f} MB")
