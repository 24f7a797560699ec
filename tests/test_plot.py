"""Pictures: `zipa.plot.alignment` (spectrogram + phone and word tiers), `zipa.plot.segment`,
`zipa align --plot`, and the quickstart notebook run end to end on a tiny model."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from tiny_models import speechlike, write_wav

pytest.importorskip("matplotlib")

import zipa.plot  # noqa: E402
from zipa.cli import main  # noqa: E402
from zipa.decoding.timestamps import Alignment, Interval  # noqa: E402

NOTEBOOK = REPO / "examples" / "quickstart.ipynb"
RATE = 16000


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("plot_audio") / "speech.wav", speechlike(2.0, 7))


def _made_up_alignment() -> Alignment:
    """Phones with a gap between words (boundaries at both sides of it) and mixed confidences."""
    phones = [
        Interval("h", 0.10, 0.18, 0.9),
        Interval("ɛ", 0.18, 0.30, 0.5),
        Interval("l", 0.30, 0.41, 0.8),
        Interval("oʊ", 0.41, 0.55, 0.2),
        Interval("w", 0.80, 0.90, 1.0),
        Interval("ɜː", 0.90, 1.12, 0.6),
        Interval("d", 1.12, 1.30, 0.7),
    ]
    words = [Interval("hɛloʊ", 0.10, 0.55, 0.6), Interval("wɜːd", 0.80, 1.30, 0.77)]
    return Alignment("hɛloʊ wɜːd", phones, words)


def _boundaries(ax) -> list:
    (line,) = [line for line in ax.lines if line.get_label() == "boundaries"]
    x = np.asarray(line.get_xdata(), dtype=float)
    return sorted(set(x[np.isfinite(x)].round(9)))


def _expected_boundaries(intervals, duration) -> list:
    return sorted({round(t, 9) for iv in intervals for t in (iv.start, iv.end) if 0 < t < duration})


# --------------------------------------------------------------------------------- the figure


def test_spectrogram_and_two_tiers_share_the_time_axis(wav):
    alignment = _made_up_alignment()
    fig = zipa.plot.alignment(wav, alignment, title="speech")
    duration = 2.0
    assert len(fig.axes) == 3
    spec, phones, words = fig.axes
    assert len(spec.images) == 1 and spec.get_ylabel() == "frequency (Hz)"
    assert spec.get_title() == "speech"
    assert [phones.get_ylabel(), words.get_ylabel()] == ["phones", "words"]
    for ax in fig.axes:
        assert ax.get_xlim() == pytest.approx((0.0, duration))
    assert phones.get_shared_x_axes().joined(spec, phones) and spec.get_shared_x_axes().joined(spec, words)
    # The image spans the whole file.
    left, right, _, top = spec.images[0].get_extent()
    assert left <= 0.0 + 0.003 and right >= duration - 0.003 and top == pytest.approx(5000, rel=0.02)


def test_tier_labels_and_boundaries_are_the_alignments(wav):
    alignment = _made_up_alignment()
    fig = zipa.plot.alignment(wav, alignment)
    _, phones, words = fig.axes
    assert [t.get_text() for t in phones.texts] == [p.label for p in alignment.phones]
    assert [t.get_text() for t in words.texts] == [w.label for w in alignment.words]
    # Labels sit in the middle of their intervals.
    centres = [(p.start + p.end) / 2 for p in alignment.phones]
    assert [t.get_position()[0] for t in phones.texts] == pytest.approx(centres)
    assert _boundaries(phones) == _expected_boundaries(alignment.phones, 2.0)
    assert _boundaries(words) == _expected_boundaries(alignment.words, 2.0)
    # Phones are shaded by confidence (the words are not).
    (shades,) = phones.collections
    shades.update_scalarmappable()  # colours are mapped at draw time
    assert list(shades.get_array()) == pytest.approx([p.confidence for p in alignment.phones])
    assert len(set(map(tuple, shades.get_facecolors()))) == len({p.confidence for p in alignment.phones})
    assert len(words.collections) == 0


def test_a_models_alignment_is_drawn_as_given(ctc_model, wav):
    model = zipa.load_model(ctc_model, device="cpu")
    alignment = model.timestamps([wav])[0]
    assert alignment.phones and alignment.words
    samples = speechlike(2.0, 7)
    fig = zipa.plot.alignment(samples, alignment, sampling_rate=RATE)  # an array works as a path does
    _, phones, words = fig.axes
    assert [t.get_text() for t in phones.texts] == [p.label for p in alignment.phones]
    assert [t.get_text() for t in words.texts] == [w.label for w in alignment.words]
    assert _boundaries(phones) == _expected_boundaries(alignment.phones, 2.0)
    assert _boundaries(words) == _expected_boundaries(alignment.words, 2.0)


def test_mel_spectrogram_part_of_the_file_and_no_word_tier(wav):
    alignment = _made_up_alignment()
    fig = zipa.plot.alignment(wav, alignment, spectrogram="mel", words=False, start=0.25, end=1.0)
    assert len(fig.axes) == 2
    spec, phones = fig.axes
    assert spec.get_ylabel() == "mel bin" and spec.images[0].get_array().shape[0] == 80
    assert phones.get_xlim() == pytest.approx((0.25, 1.0))
    # Intervals are clipped to the view; those outside it are not drawn.
    assert [t.get_text() for t in phones.texts] == ["ɛ", "l", "oʊ", "w", "ɜː"]
    assert _boundaries(phones) == [0.30, 0.41, 0.55, 0.80, 0.90]
    with pytest.raises(ValueError, match="spectrogram"):
        zipa.plot.alignment(wav, alignment, spectrogram="cqt")


def test_missing_matplotlib_says_what_to_install(monkeypatch, wav):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'zipa-phones\[plot\]'"):
        zipa.plot.alignment(wav, _made_up_alignment())


def test_segment_cuts_an_interval_at_16k(wav):
    samples = speechlike(2.0, 7)
    phone = Interval("ɛ", 0.18, 0.30, 0.5)
    cut = zipa.plot.segment(wav, phone)
    assert cut.dtype == np.float32 and len(cut) == round(0.12 * RATE)
    np.testing.assert_allclose(cut, samples[round(0.18 * RATE):round(0.30 * RATE)], atol=1e-6)
    padded = zipa.plot.segment(samples, (0.0, 0.1), padding=0.05)  # clipped at the start
    assert len(padded) == round(0.15 * RATE)
    at_8k = zipa.plot.segment(samples[::2], phone, sampling_rate=8000)  # resampled to 16 kHz
    assert len(at_8k) == round(0.12 * RATE)
    assert len(zipa.plot.segment(wav, (1.9, 2.5))) == round(0.1 * RATE)


# --------------------------------------------------------------------------- zipa align --plot


def _png_size(path: Path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_align_plot_writes_a_png(capsys, tmp_path, ctc_model, wav):
    import matplotlib.image

    target = tmp_path / "pictures" / "speech.png"
    code = main(["align", str(wav), "--model", str(ctc_model), "-o", str(tmp_path / "speech.TextGrid"),
                 "--plot", str(target), "-q"])
    assert code == 0, capsys.readouterr().err
    width, height = _png_size(target)
    image = matplotlib.image.imread(str(target))
    assert image.shape[:2] == (height, width)
    model = zipa.load_model(ctc_model, device="cpu")
    expected = zipa.plot.alignment(wav, model.timestamps([wav])[0]).get_size_inches() * 100
    assert (width, height) == tuple(np.round(expected).astype(int))
    assert image.std() > 0.05  # not a blank picture
    assert [p.name for p in target.parent.iterdir()] == ["speech.png"]  # no temporary file left


def test_align_plot_of_several_files_fills_a_folder(capsys, tmp_path, ctc_model):
    root = tmp_path / "audio"
    (root / "sub").mkdir(parents=True)
    write_wav(root / "a.wav", speechlike(1.2, 1))
    write_wav(root / "sub" / "b.wav", speechlike(1.0, 2))
    out = tmp_path / "pictures"
    code = main(["align", str(root), "--model", str(ctc_model), "-f", "jsonl", "-o", str(tmp_path / "a.jsonl"),
                 "--plot", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["a.png", "sub/b.png"]
    for picture in out.rglob("*.png"):
        _png_size(picture)
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(lines) == 2


def test_align_plot_to_one_file_with_several_inputs_is_a_usage_error(capsys, tmp_path, ctc_model):
    for name, seed in (("a.wav", 1), ("b.wav", 2)):
        write_wav(tmp_path / name, speechlike(0.5, seed))
    code = main(["align", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), "--model", str(tmp_path / "missing.pth"),
                 "-o", str(tmp_path / "grids"), "--plot", str(tmp_path / "one.png"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--plot" in err and "2 audio files" in err  # refused before the model is loaded


# ------------------------------------------------------------------------------- the notebook


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.slow
def test_quickstart_notebook_runs_on_a_tiny_model(tmp_path, monkeypatch, ctc_model, wav):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    praatio_textgrid = pytest.importorskip("praatio.textgrid")

    # A kernel spec of our own that runs this very interpreter (whatever "python3" means here).
    spec_dir = tmp_path / "jupyter" / "kernels" / "zipa-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "zipa test", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("ZIPA_MODEL", str(ctc_model))
    monkeypatch.setenv("ZIPA_AUDIO", str(wav))
    grid_path = tmp_path / "out" / "speech.TextGrid"
    monkeypatch.setenv("ZIPA_OUTPUT", str(grid_path))
    work = tmp_path / "work"
    work.mkdir()

    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="zipa-test", timeout=120,
                                     resources={"metadata": {"path": str(work)}})
    client.execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the figure was not shown"
    assert sum("data:audio/" in o.get("data", {}).get("text/html", "") for o in outputs) == 2  # file + phone
    grid = praatio_textgrid.openTextgrid(str(grid_path), includeEmptyIntervals=True)
    assert grid.tierNames == ("phones", "words")
    assert grid.maxTimestamp == pytest.approx(2.0)
    model = zipa.load_model(ctc_model, device="cpu")
    alignment = model.timestamps([wav])[0]
    assert [e.label for e in grid.getTier("phones").entries if e.label] == [p.label for p in alignment.phones]
    assert [e.label for e in grid.getTier("words").entries if e.label] == [w.label for w in alignment.words]
    assert list(work.iterdir()) == []  # everything went where the parameters said
