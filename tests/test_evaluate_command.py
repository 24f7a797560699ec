"""`zipa evaluate` and `model.evaluate(pairs)` end to end with a tiny random model: PER against an
independent edit distance, the icefall result files, per-language and per-speaker numbers, the
chart, TextGrid and shar references, failures and the normalisation report."""

import contextlib
import io
import json

import pytest
import soundfile as sf
from tiny_models import speechlike, tiny_model_path, write_wav

import zipa
from zipa.cli import main
from zipa.text.ipa import normalize_ipa

# file, the end of its reference (stress marks, script g, an out-of-inventory X, a tie bar), language,
# speaker. Each reference starts with the model's own transcript of the file, changed a little, so
# that PER is neither 0 nor 100% and moves with any change to either side.
EXTRAS = [
    ("u0.wav", "ˈhɛ.loʊ ˈwɜːld", "en", "s1"),
    ("u1.wav", "ɡʊd ˈbaɪ", "en", "s2"),
    ("u2.wav", "bɔ̃ʒuʁ X", "fr", "s1"),
    ("u3.wav", "t͡ʃao̯ ˈbɛl.la", "it", "s2"),
]
AUDIO = [(2.5, 1), (1.5, 3), (2.5, 6), (1.5, 7)]  # (seconds, seed): the tiny model says a lot to these
STEM = "refs-model"  # recogs-{test set}-{model file stem}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, ctc_model):
    """audio/u0.wav ... and refs.tsv (with a header)."""
    root = tmp_path_factory.mktemp("eval")
    audio = root / "audio"
    audio.mkdir()
    for (name, *_), (seconds, seed) in zip(EXTRAS, AUDIO):
        write_wav(audio / name, speechlike(seconds, seed))
    code, out, err = call("transcribe", audio, "--model", ctc_model, "--batch-size", 1, "-q")
    assert code == 0, err
    hyps = {line.split("\t")[0]: line.split("\t")[1] for line in out.splitlines()}
    refs = []
    for name, extra, lang, spk in EXTRAS:
        hyp = hyps[str(audio / name)]
        assert len(units(hyp)) >= 5
        refs.append((name, f"{hyp[1:]}{hyp[-1]} {extra}", lang, spk))
    tsv = root / "refs.tsv"
    lines = ["path\tipa\tlanguage\tspeaker"] + ["\t".join(row) for row in refs]
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def refs(corpus):
    """(file name, raw reference, language, speaker) as in refs.tsv."""
    rows = (corpus / "refs.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(row.split("\t")) for row in rows]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def levenshtein(a, b):
    """Plain dynamic programming, unit costs."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def units(text):
    """PER's units (zipa.evaluation.metrics): characters, no whitespace, no word boundary."""
    return [ch for ch in text if not ch.isspace() and ch != "\u2581"]


def naive_per(pairs):
    errors = sum(levenshtein(units(ref), units(hyp)) for ref, hyp in pairs)
    total = sum(len(units(ref)) for ref, _ in pairs)
    return round(100.0 * errors / total, 2), errors


def evaluate(capsys, model, out_dir, *args):
    code, out, err = run(capsys, "evaluate", *args, "--model", model, "--output-dir", out_dir,
                         "--batch-size", 1, "-q")
    metrics = {}
    found = list(out_dir.glob("metrics-*.json"))
    if found:
        metrics = json.loads(found[0].read_text(encoding="utf-8"))
    return code, out, err, metrics


def call(*argv):
    """`zipa ...` with its stdout and stderr (for module fixtures, where capsys is not available)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tsv_run(tmp_path_factory, ctc_model, corpus):
    """One `zipa evaluate` over the TSV, and `zipa transcribe` of the same files."""
    out_dir = tmp_path_factory.mktemp("out")
    code, out, err = call("evaluate", corpus / "audio", "--ref", corpus / "refs.tsv", "--model", ctc_model,
                          "--output-dir", out_dir, "--batch-size", 1, "-q")
    t_code, t_out, t_err = call("transcribe", corpus / "audio", "--model", ctc_model, "--batch-size", 1, "-q")
    assert t_code == 0, t_err
    hyps = {line.split("\t")[0]: line.split("\t")[1] for line in t_out.splitlines()}
    metrics = json.loads((out_dir / f"metrics-{STEM}.json").read_text(encoding="utf-8"))
    return {"code": code, "out": out, "err": err, "dir": out_dir, "metrics": metrics, "hyps": hyps}


def _pairs(corpus, refs, hyps, keep=lambda row: True):
    return [(normalize_ipa(ipa), hyps[str(corpus / "audio" / name)]) for name, ipa, lang, spk in refs
            if keep((name, ipa, lang, spk))]


# ----------------------------------------------------------------------------- scores and files


def test_per_equals_an_independent_edit_distance(tsv_run, corpus, refs):
    assert tsv_run["code"] == 0, tsv_run["err"]
    pairs = _pairs(corpus, refs, tsv_run["hyps"])
    assert any(hyp for _, hyp in pairs)
    per, errors = naive_per(pairs)
    overall = tsv_run["metrics"]["overall"]
    assert overall["num_utts"] == len(refs)
    assert overall["errors"] == errors
    assert overall["ref_phones"] == sum(len(units(ref)) for ref, _ in pairs)
    assert overall["PER"] == per
    assert f"{per:.2f}" in tsv_run["out"]


def test_per_language_and_per_speaker(tsv_run, corpus, refs):
    metrics = tsv_run["metrics"]
    assert set(metrics["per_language"]) == {"en", "fr", "it"}
    assert set(metrics["per_speaker"]) == {"s1", "s2"}
    for split, column in (("per_language", 2), ("per_speaker", 3)):
        for group, block in metrics[split].items():
            pairs = _pairs(corpus, refs, tsv_run["hyps"], keep=lambda row: row[column] == group)
            assert block["num_utts"] == len(pairs)
            assert block["PER"] == naive_per(pairs)[0], (split, group)
            assert block["PFER mean"] is not None
    table = tsv_run["out"]
    assert "\n  fr " in table and "\n  speaker s1 " in table and "\n  speaker s2 " in table


def test_icefall_files_as_ctc_decode_names_them(tsv_run, corpus, refs):
    from zipa.evaluation.icefall_files import read_recogs

    out_dir = tsv_run["dir"]
    for name in (f"recogs-{STEM}.txt", f"errs-{STEM}.txt", f"metrics-{STEM}.json", f"wer-summary-{STEM}.txt"):
        assert (out_dir / name).is_file(), name
    metrics = tsv_run["metrics"]
    assert (metrics["test_set"], metrics["decoding"], metrics["settings"]) == ("refs", "ctc-greedy-search", "model")
    recogs = {r.cut_id: r for r in read_recogs(out_dir / f"recogs-{STEM}.txt")}
    assert set(recogs) == {name[:-4] for name, *_ in refs}
    for name, ipa, *_ in refs:
        assert "".join(recogs[name[:-4]].ref) == "".join(units(normalize_ipa(ipa)))
    errs = (out_dir / f"errs-{STEM}.txt").read_text(encoding="utf-8")
    assert errs.startswith(f"%PER = {metrics['overall']['PER']:.2f}\n")


def test_chart_is_a_png(tsv_run):
    import matplotlib.image

    path = tsv_run["dir"] / f"chart-{STEM}.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 300 and height > 300
    assert matplotlib.image.imread(str(path)).shape[:2] == (height, width)
    assert path.name in tsv_run["out"]


def test_chart_draws_every_language_and_speaker():
    from zipa.evaluation.charts import metrics_chart
    from zipa.evaluation.metrics import compute_metrics

    metrics = compute_metrics([("a", "pa", "ba", "en", "s1"), ("b", "ta", "ta", "de", "s2"), ("c", "ka", "k", "de", "s1")])
    fig = metrics_chart(metrics)
    assert len(fig.axes) == 4  # (language, speaker) x (PER, PFER)
    labels = [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes]
    assert labels[0] == ["all\n(3)", "de\n(2)", "en\n(1)"] and labels[2] == ["all\n(3)", "s1\n(2)", "s2\n(1)"]
    heights = [round(p.get_height(), 2) for p in fig.axes[0].patches]
    assert heights == [metrics["overall"]["PER"], metrics["per_language"]["de"]["PER"], metrics["per_language"]["en"]["PER"]]


def test_normalisation_report(tsv_run, refs):
    report = tsv_run["metrics"]["normalization"]
    assert report["references"] == len(refs) and report["changed_references"] == len(refs)
    assert report["removed"]["ˈ"] == 4 and report["removed"]["."] == 2 and report["removed"]["\u0361"] == 1
    assert report["mapped"] == {"ɡ→g": 1}
    assert report["dropped"] == {"X": 1, "\u032f": 1}  # X and the non-syllabic mark are not in the inventory
    out = tsv_run["out"]
    assert "4 of 4 references changed" in out
    assert "removed: ˈ (U+02C8) ×4" in out and "ɡ→g ×1" in out
    assert "dropped (not in the inventory): " in out and "X ×1" in out


def test_remove_diacritics_strips_both_sides(capsys, tmp_path, ctc_model, corpus):
    code, out, err, metrics = evaluate(capsys, ctc_model, tmp_path, corpus / "audio", "--ref", corpus / "refs.tsv",
                                       "--remove-diacritics")
    assert code == 0, err
    assert metrics["normalization"]["remove_diacritics"] is True
    removed = metrics["normalization"]["removed"]
    assert removed["ː"] >= 1 and removed["\u0303"] >= 1  # from wɜːld and bɔ̃ʒuʁ
    from zipa.evaluation.icefall_files import read_recogs
    from zipa.text.ipa import DIACRITICS

    results = read_recogs(tmp_path / f"recogs-{STEM}.txt")
    symbols = {ch for r in results for ch in [*r.ref, *r.hyp]}
    assert symbols and not {ch for ch in symbols if ch in DIACRITICS or 0x300 <= ord(ch) <= 0x36F}


# ----------------------------------------------------------------------------- the Python API


def test_model_evaluate_equals_the_cli(tsv_run, ctc_model, corpus, refs):
    model = zipa.load_model(ctc_model, device="cpu")
    audio = corpus / "audio"
    pairs = [(audio / name, ipa, lang, spk) for name, ipa, lang, spk in refs]
    metrics = model.evaluate(pairs, batch_size=1)
    cli = tsv_run["metrics"]
    for key in ("unit", "overall", "per_language", "per_speaker", "normalization", "failed"):
        assert metrics[key] == cli[key], key
    # arrays (here at 8 kHz) are decoded like the same audio in files
    arrays = [(sf.read(str(audio / name), dtype="float32")[0], ipa, lang, spk) for name, ipa, lang, spk in refs]
    files_8k = []
    from zipa.audio.load import resample

    arrays_8k = [(resample(a, 16000, 8000), ipa, lang, spk) for a, ipa, lang, spk in arrays]
    for i, (a, *_rest) in enumerate(arrays_8k):
        files_8k.append(write_wav(corpus / f"eight_{i}.wav", a, 8000))
    from_files = model.evaluate([(f, *row[1:]) for f, row in zip(files_8k, arrays_8k)], batch_size=1)
    from_arrays = model.evaluate(arrays_8k, batch_size=1, sampling_rate=8000)
    assert from_arrays["overall"] == from_files["overall"]
    assert from_arrays["per_speaker"] == from_files["per_speaker"]


def test_model_evaluate_writes_the_files_when_asked(tmp_path, ctc_model, corpus, refs):
    model = zipa.load_model(ctc_model, device="cpu")
    pairs = [(corpus / "audio" / name, ipa) for name, ipa, *_ in refs[:2]]
    metrics = model.evaluate(pairs, output_dir=tmp_path, test_set="mine", settings="tiny")
    assert "per_speaker" not in metrics and metrics["per_language"] == {}
    assert json.loads((tmp_path / "metrics-mine-tiny.json").read_text(encoding="utf-8")) == metrics
    assert (tmp_path / "recogs-mine-tiny.txt").is_file() and (tmp_path / "errs-mine-tiny.txt").is_file()


# ----------------------------------------------------------------------------- other references


def test_tsv_without_header_and_without_audio_inputs(capsys, tmp_path, tsv_run, ctc_model, corpus, refs):
    """Positional columns; the TSV's own paths (relative to its folder) name the audio."""
    tsv = corpus / "plain.tsv"
    tsv.write_text("".join(f"audio/{name}\t{ipa}\t{lang}\t{spk}\n" for name, ipa, lang, spk in refs), encoding="utf-8")
    code, _, err, metrics = evaluate(capsys, ctc_model, tmp_path, "--ref", tsv)
    assert code == 0, err
    for key in ("overall", "per_language", "per_speaker"):
        assert metrics[key] == tsv_run["metrics"][key]
    # a header may order the columns freely; file names match without their suffix
    tsv.write_text("path\tspeaker\tipa\n" + "".join(f"{name[:-4]}\t{spk}\t{ipa}\n" for name, ipa, _, spk in refs),
                   encoding="utf-8")
    code, _, err, metrics = evaluate(capsys, ctc_model, tmp_path / "b", corpus / "audio", "--ref", tsv)
    assert code == 0, err
    assert metrics["overall"] == tsv_run["metrics"]["overall"] and metrics["per_language"] == {}
    assert metrics["per_speaker"] == tsv_run["metrics"]["per_speaker"]


def _write_long_textgrid(path, duration, tiers):
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {duration}",
             "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for k, (name, intervals) in enumerate(tiers.items(), 1):
        lines += [f"    item [{k}]:", '        class = "IntervalTier"', f'        name = "{name}"',
                  "        xmin = 0", f"        xmax = {duration}", f"        intervals: size = {len(intervals)}"]
        for i, (start, end, text) in enumerate(intervals, 1):
            lines += [f"        intervals [{i}]:", f"            xmin = {start}", f"            xmax = {end}",
                      f'            text = "{text}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_textgrid_references_join_the_tier(capsys, tmp_path, ctc_model, corpus, tsv_run, refs):
    grids = tmp_path / "grids"
    grids.mkdir()
    for name, ipa, *_ in refs:
        words = ipa.split()
        labels = words[:1] + [""] + words[1:]  # a pause after the first word: its label is empty
        step = 1.0 / len(labels)
        intervals = [(step * i, step * (i + 1), label) for i, label in enumerate(labels)]
        _write_long_textgrid(grids / (name[:-4] + ".TextGrid"), 1.0,
                             {"words": intervals, "notes": [(0, 1.0, "not the reference")]})
    code, out, err, metrics = evaluate(capsys, ctc_model, tmp_path / "out", corpus / "audio", "--ref", grids,
                                       "--tier", "words")
    assert code == 0, err
    assert metrics["overall"] == tsv_run["metrics"]["overall"]
    assert metrics["normalization"]["removed"] == tsv_run["metrics"]["normalization"]["removed"]
    # without --tier, two interval tiers are ambiguous: every file fails and says why
    code, _, err, _ = evaluate(capsys, ctc_model, tmp_path / "out2", corpus / "audio", "--ref", grids)
    assert code == 1 and "say which with --tier" in err
    assert err.count("error: ") == len(refs)


def test_textgrids_from_zipa_align_score_zero(capsys, tmp_path, ctc_model, corpus, refs):
    """The model's own phone tier as the reference: PER 0 (same decoding, one file per batch)."""
    grids = tmp_path / "grids"
    code, _, err = run(capsys, "align", corpus / "audio", "--model", ctc_model, "--output", grids,
                       "--batch-size", 1, "-q")
    assert code == 0, err
    code, _, err, metrics = evaluate(capsys, ctc_model, tmp_path / "out", corpus / "audio", "--ref", grids,
                                     "--tier", "phones")
    assert code == 0, err
    assert metrics["overall"]["num_utts"] == len(refs) and metrics["overall"]["ref_phones"] > 0
    assert metrics["overall"]["PER"] == 0.0 and metrics["overall"]["PFER mean"] == 0.0


def test_shar_references(capsys, tmp_path, ctc_model):
    from lhotse import CutSet

    from training_utils import TEXTS, make_tiny_corpus
    from zipa.data.shar import discover_shards
    from zipa.inference.transcriber import Transcriber

    dev = make_tiny_corpus(tmp_path / "corpus", num_train=0, num_dev=5)["dev"]
    code, out, err, metrics = evaluate(capsys, ctc_model, tmp_path / "out", "--ref", dev)
    assert code == 0, err
    assert metrics["test_set"] == "dev" and metrics["overall"]["num_utts"] == 5
    assert list(metrics["per_language"]) == ["xx"] and metrics["per_language"]["xx"]["num_utts"] == 5
    # the same audio decoded from files, the references as written
    wavs, pairs = tmp_path / "wavs", []
    wavs.mkdir()
    for cut in CutSet.from_shar(fields=discover_shards(dev)):
        path = write_wav(wavs / f"{cut.id}.wav", cut.load_audio()[0], cut.sampling_rate)
        pairs.append((path, cut.supervisions[0].text))
    assert sorted(text for _, text in pairs) == sorted(TEXTS[i % len(TEXTS)] for i in range(5))
    transcriber = Transcriber.from_checkpoint(ctc_model, device="cpu")
    hyps = [t.tokens for t in transcriber.transcribe_files([p for p, _ in pairs], batch_size=1)]
    texts = [transcriber.alignment(tokens).text for tokens in hyps]
    per, _ = naive_per([(normalize_ipa(ref), hyp) for (_, ref), hyp in zip(pairs, texts)])
    assert metrics["overall"]["PER"] == per
    # audio comes from the shar: inputs beside it are a usage error
    code, _, err, _ = evaluate(capsys, ctc_model, tmp_path / "out2", wavs, "--ref", dev)
    assert code == 2 and "shar folder" in err


# ----------------------------------------------------------------------------- failures


def test_failing_files_are_reported_and_skipped(capsys, tmp_path, ctc_model, corpus, tsv_run, refs):
    audio = tmp_path / "audio"
    audio.mkdir()
    for name, *_ in refs:
        (audio / name).write_bytes((corpus / "audio" / name).read_bytes())
    (audio / "broken.wav").write_bytes(b"RIFF not really a wav file")
    write_wav(audio / "unlisted.wav", speechlike(1.0, 99))
    write_wav(audio / "blank.wav", speechlike(1.0, 98))
    tsv = tmp_path / "refs.tsv"
    tsv.write_text((corpus / "refs.tsv").read_text(encoding="utf-8") + "broken.wav\tba\nblank.wav\t\n",
                   encoding="utf-8")
    code, out, err, metrics = evaluate(capsys, ctc_model, tmp_path / "out", audio, "--ref", tsv)
    assert code == 1
    assert "broken.wav" in err and "unlisted.wav: no reference" in err and "blank.wav: empty reference" in err
    assert "3 of 7 inputs failed" in err
    assert metrics["num_failed"] == 3 and {f["id"] for f in metrics["failed"]} == {"broken", "unlisted", "blank"}
    assert metrics["overall"] == tsv_run["metrics"]["overall"]  # the others are scored as before


def test_usage_errors_exit_2(capsys, tmp_path, ctc_model, corpus):
    assert evaluate(capsys, ctc_model, tmp_path, corpus / "audio", "--ref", tmp_path / "missing.tsv")[0] == 2
    bad = tmp_path / "bad.tsv"
    bad.write_text("path\tlanguage\na.wav\ten\n", encoding="utf-8")
    code, _, err, _ = evaluate(capsys, ctc_model, tmp_path, corpus / "audio", "--ref", bad)
    assert code == 2 and "no reference column" in err
    code, _, err, _ = evaluate(capsys, ctc_model, tmp_path, corpus / "audio", "--ref", corpus / "refs.tsv",
                               "--tier", "words")
    assert code == 2 and "--tier" in err


def test_transducer_models_name_their_decoding_as_decode_py(tmp_path_factory, tmp_path, corpus, refs):
    model = zipa.load_model(tiny_model_path(tmp_path_factory, "transducer"), device="cpu")
    pairs = [(corpus / "audio" / name, ipa, lang) for name, ipa, lang, _ in refs[:2]]
    greedy = model.evaluate(pairs, output_dir=tmp_path, test_set="t", settings="x")
    beam = model.evaluate(pairs, decoding="beam", beam=2)
    assert (greedy["decoding"], beam["decoding"]) == ("greedy_search", "modified_beam_search")
    assert (tmp_path / "recogs-t-x.txt").is_file() and greedy["overall"]["num_utts"] == 2
