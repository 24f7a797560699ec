"""Forced alignment: the CTC Viterbi against brute force, `model.align`, `zipa align --transcript /
--text / --transcripts / --textgrid` in every format, the TextGrid reader and writer, and what is
refused (transcripts too long for their audio, stretches too long to align in one piece)."""

import itertools
import json
import warnings

import numpy as np
import pytest
import torch
from tiny_models import speechlike, tiny_model_path, write_wav

from zipa.cli import main
from zipa.decoding.alignment import ctc_forced_align, ctc_min_frames, ctc_viterbi
from zipa.inference import forced
from zipa.data.textgrid import IntervalTier, PointTier, TextGrid, parse_textgrid, read_textgrid
from zipa.decoding.fit import alignment_fit
from zipa.decoding.options import DecodingOptions
from zipa.decoding.timestamps import FRAME_OFFSET, Interval, split_phones
from zipa.inference.zipa_api import initialize_model
from zipa.text.ipa import normalize_ipa

praatio_textgrid = pytest.importorskip("praatio.textgrid")

TRANSCRIPT = "həloʊ wɜːld"
OTHER = "ðə kæt sæt"


@pytest.fixture(scope="module")
def ctc_path(tmp_path_factory):
    return tiny_model_path(tmp_path_factory, "ctc")


@pytest.fixture(scope="module")
def ctc_model(ctc_path):
    return initialize_model(ctc_path, device="cpu")


@pytest.fixture(scope="module")
def transducer_path(tmp_path_factory):
    return tiny_model_path(tmp_path_factory, "transducer")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("align_audio")
    write_wav(root / "a.wav", speechlike(2.5, 11))
    (root / "sub").mkdir()
    write_wav(root / "sub" / "b.wav", speechlike(2.0, 12))
    write_wav(root / "long.wav", speechlike(6.0, 13))
    return root


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _check_times(phones, lo, hi):
    """Ordered, non-overlapping intervals of positive length inside [lo, hi]."""
    for p in phones:
        assert lo - 1e-9 <= p.start < p.end <= hi + 1e-9
    for a, b in zip(phones, phones[1:]):
        assert a.end <= b.start + 1e-9


# ---------------------------------------------------------------------------------------------
# The Viterbi pass against brute force
# ---------------------------------------------------------------------------------------------


def _collapse(path, blank=0):
    out, previous = [], None
    for label in path:
        if label != previous and label != blank:
            out.append(label)
        previous = label
    return out


def _brute_force(lp, tokens):
    """Best score and token spans over every CTC path of len(lp) frames spelling `tokens`."""
    best, best_path = -np.inf, None
    for path in itertools.product(range(lp.shape[1]), repeat=lp.shape[0]):
        if _collapse(path) != tokens:
            continue
        score = sum(lp[t, label] for t, label in enumerate(path))
        if score > best:
            best, best_path = score, path
    if best_path is None:
        return best, None
    spans, t = [], 0
    while t < len(best_path):
        if best_path[t] == 0:
            t += 1
            continue
        start = t
        while t + 1 < len(best_path) and best_path[t + 1] == best_path[start]:
            t += 1
        spans.append((best_path[start], start, t + 1))
        t += 1
    return best, spans


def test_ctc_viterbi_is_the_best_path_of_brute_force():
    rng = np.random.default_rng(0)
    cases = [([1], 3), ([1, 2], 4), ([2, 2], 5), ([1, 1, 2], 5), ([3, 1, 3], 6), ([2, 2, 2], 6), ([1, 2, 3], 3)]
    for tokens, frames in cases:
        for _ in range(4):
            lp = torch.from_numpy(rng.normal(size=(frames, 4))).log_softmax(-1)
            lp64 = lp.double().numpy()
            best, spans = _brute_force(lp64, tokens)
            states, score = ctc_viterbi(lp.float(), tokens)
            assert score == pytest.approx(best, abs=1e-4)
            path_score = sum(lp64[t, tokens[s // 2] if s % 2 else 0] for t, s in enumerate(states))
            assert path_score == pytest.approx(best, abs=1e-9)  # the path returned has the best score
            got = ctc_forced_align(lp.float(), tokens)
            assert [(s.token, s.start, s.end) for s in got] == spans
            for span in got:
                mean = np.exp(lp64[span.start : span.end, span.token]).mean()
                assert span.confidence == pytest.approx(mean, rel=1e-5)


def test_repeated_tokens_need_a_blank_and_too_few_frames_are_refused():
    # The exact minimum is feasible (brute force finds a path), one frame less is not.
    rng = np.random.default_rng(1)
    for tokens in ([1, 1], [1, 1, 1], [1, 2, 2, 3], [1, 2]):
        need = ctc_min_frames(tokens)
        assert need == len(tokens) + sum(a == b for a, b in zip(tokens, tokens[1:]))
        lp = torch.from_numpy(rng.normal(size=(need, 4))).log_softmax(-1).float()
        assert _brute_force(lp.double().numpy(), tokens)[1] is not None
        spans = ctc_forced_align(lp, tokens)
        assert [s.token for s in spans] == tokens
        for a, b in zip(spans, spans[1:]):
            assert a.end + (a.token == b.token) <= b.start  # a blank frame between repeats
        assert _brute_force(lp[:-1].double().numpy(), tokens)[1] is None
        with pytest.raises(ValueError, match="cannot be aligned"):
            ctc_viterbi(lp[:-1], tokens)


# ---------------------------------------------------------------------------------------------
# Transcripts
# ---------------------------------------------------------------------------------------------


def test_transcripts_are_normalised_and_dropped_symbols_counted(ctc_model):
    t = forced.prepare_transcript("ˈhɛ̞lo X", ctc_model.tokenizer)
    assert t.phones == "hɛlo"  # stress removed on purpose, ̞ and X dropped
    assert t.dropped == {"\u031e": 1, "X": 1}
    assert "U+031E" in t.dropped_message() and "X (U+0058)" in t.dropped_message()
    assert [ctc_model.tokenizer.id_to_piece(i) for i in t.tokens] == ["▁", "h", "ɛ", "l", "o"]
    assert forced.prepare_transcript("a b", ctc_model.tokenizer).tokens.count(3) == 2  # ▁ per word


# ---------------------------------------------------------------------------------------------
# The Python API
# ---------------------------------------------------------------------------------------------


def test_model_align_gives_the_transcript_phones_in_order(ctc_model, audio_dir):
    audio = [audio_dir / "a.wav", speechlike(1.8, 3)]
    alignments = ctc_model.align(audio, [TRANSCRIPT, OTHER])
    for alignment, text, duration in zip(alignments, [TRANSCRIPT, OTHER], [2.5, 1.8]):
        assert [p.label for p in alignment.phones] == split_phones(normalize_ipa(text))
        assert alignment.text == normalize_ipa(text)
        assert [w.label for w in alignment.words] == normalize_ipa(text).split()
        _check_times(alignment.phones, 0.0, duration)
        assert all(0 <= p.confidence <= 1 for p in alignment.phones)
    # One string for one item; the same object timestamps() returns.
    single = ctc_model.align([audio_dir / "a.wav"], TRANSCRIPT)[0]
    assert single == ctc_model.align([audio_dir / "a.wav"], [TRANSCRIPT])[0]
    assert [p.label for p in single.phones] == [p.label for p in alignments[0].phones]
    assert type(single) is type(ctc_model.timestamps([audio_dir / "a.wav"])[0])


def test_model_align_times_are_those_of_the_viterbi_frames(ctc_model):
    audio = [speechlike(3.0, 21)]
    transcript = forced.prepare_transcript("badʒ ɪt", ctc_model.tokenizer)
    feats, lens = ctc_model.features(audio)
    with torch.inference_mode():
        encoder_out, encoder_out_lens = ctc_model.model.forward_encoder(feats, lens)
        log_probs = ctc_model.model.ctc_output(encoder_out)[0, : int(encoder_out_lens[0])]
    spans = [s for s in ctc_forced_align(log_probs, transcript.tokens) if s.token != 3]  # no ▁
    phones = ctc_model.align(audio, "badʒ ɪt")[0].phones
    assert len(phones) == len(spans) == 6
    for phone, span in zip(phones, spans):
        assert phone.start == pytest.approx(FRAME_OFFSET + 0.02 * span.start)
        assert phone.end == pytest.approx(FRAME_OFFSET + 0.02 * span.end)  # CTC spans never overlap
        assert phone.confidence == pytest.approx(span.confidence)


def test_model_align_reports_dropped_symbols_and_refuses_impossible_transcripts(ctc_model):
    with pytest.warns(forced.TranscriptWarning, match="U\\+031E"):
        alignment = ctc_model.align([speechlike(1.5, 4)], "hə̞lo")[0]
    assert [p.label for p in alignment.phones] == ["h", "ə", "l", "o"]
    with pytest.raises(ValueError, match="item 0: the transcript is too long for the audio"):
        ctc_model.align([speechlike(0.3, 5)], "abcdefghijklmnopqrstu")
    with pytest.raises(ValueError, match="one transcript"):
        ctc_model.align([speechlike(1.0, 5), speechlike(1.0, 6)], "a")
    with pytest.raises(ValueError, match="lang="):
        ctc_model.align([speechlike(1.0, 5)], text="hello")


def test_model_align_text_goes_through_g2p(ctc_model):
    pytest.importorskip("espeakng_loader")
    from zipa.text.g2p import g2p

    alignment = ctc_model.align([speechlike(2.0, 7)], text="hello world", lang="en-us")[0]
    assert [p.label for p in alignment.phones] == split_phones(g2p("hello world", "en-us"))


def test_transducer_models_align_on_their_40ms_frames(transducer_path):
    model = initialize_model(transducer_path, device="cpu")
    alignment = model.align([speechlike(2.0, 8)], TRANSCRIPT)[0]
    assert [p.label for p in alignment.phones] == split_phones(TRANSCRIPT)
    _check_times(alignment.phones, 0.0, 2.0)
    for p in alignment.phones:  # each token emitted at one 40 ms frame
        if len(p.label) == 1:
            assert p.end - p.start == pytest.approx(0.04)
        assert (p.start - FRAME_OFFSET) / 0.04 == pytest.approx(round((p.start - FRAME_OFFSET) / 0.04))


# ---------------------------------------------------------------------------------------------
# Long audio: windows stitched into one sequence of frames
# ---------------------------------------------------------------------------------------------


def test_windowed_frames_tile_the_timeline(ctc_model, audio_dir):
    path = audio_dir / "long.wav"
    info = forced.audio_info(path)
    whole, whole_times = forced._encode_stretch(ctc_model, path, info, 0.0, 6.0, DecodingOptions(batch_size=4), "x")
    windows = DecodingOptions(window=2.0, overlap=0.5, batch_size=4)
    frames, times = forced._encode_stretch(ctc_model, path, info, 0.0, 6.0, windows, "x")
    steps = np.diff(times)
    assert (steps > 0).all() and (steps < 2 * ctc_model.frame_shift).all()  # no frame twice, no gap
    assert len(times) == pytest.approx(len(whole_times), abs=3)
    assert frames.shape == (len(times), whole.shape[1])


def test_windowed_alignment_of_a_long_file(ctc_model, audio_dir):
    job = forced.AlignJob.whole(audio_dir / "long.wav", f"{TRANSCRIPT} {OTHER} {TRANSCRIPT}")
    (result,) = ctc_model.align_files([job], window=2.0, overlap=0.5)
    assert result.ok, result.error
    alignment = ctc_model.alignment(result.tokens, result.duration)
    assert [p.label for p in alignment.phones] == split_phones(job.utterances[0].text)
    _check_times(alignment.phones, 0.0, 6.0)


def test_too_long_to_align_in_one_piece_says_to_segment(ctc_model, audio_dir, monkeypatch):
    monkeypatch.setattr(forced, "MAX_ALIGN_BYTES", 1000)
    (result,) = ctc_model.align_files([forced.AlignJob.whole(audio_dir / "long.wav", TRANSCRIPT)])
    assert not result.ok and "cut the recording into utterances" in result.error


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["txt", "tsv", "jsonl", "ctm", "textgrid"])
def test_cli_transcript_in_every_format(capsys, tmp_path, fmt, ctc_path, ctc_model, audio_dir):
    audio = audio_dir / "a.wav"
    expected = ctc_model.align([audio], TRANSCRIPT)[0]
    target = tmp_path / f"out.{fmt}"
    code, _, err = run(capsys, "align", audio, "-m", ctc_path, "--transcript", TRANSCRIPT, "-f", fmt,
                       "-o", target, "-q")
    assert code == 0, err
    text = target.read_text(encoding="utf-8")
    phones = [(p.label, round(p.start, 3), round(p.end, 3)) for p in expected.phones]
    if fmt == "txt":
        assert text == f"{audio}\t{normalize_ipa(TRANSCRIPT)}\n"
    elif fmt == "tsv":
        rows = [line.split("\t") for line in text.splitlines()[1:]]
        assert [(r[3], float(r[1]), float(r[2])) for r in rows] == phones
    elif fmt == "jsonl":
        obj = json.loads(text)
        assert [(p["phone"], p["start"], p["end"]) for p in obj["phones"]] == phones
        assert [w["word"] for w in obj["words"]] == normalize_ipa(TRANSCRIPT).split()
    elif fmt == "ctm":
        rows = [line.split() for line in text.splitlines()]
        assert [(r[4], float(r[2])) for r in rows] == [(p, s) for p, s, _ in phones]
    else:
        grid = praatio_textgrid.openTextgrid(str(target), includeEmptyIntervals=False)
        got = [(e.label, round(e.start, 3), round(e.end, 3)) for e in grid.getTier("phones").entries]
        assert got == phones
        assert [e.label for e in grid.getTier("words").entries] == normalize_ipa(TRANSCRIPT).split()


def test_cli_text_through_g2p_and_usage_errors(capsys, ctc_path, audio_dir):
    pytest.importorskip("espeakng_loader")
    from zipa.text.g2p import g2p

    code, out, err = run(capsys, "align", audio_dir / "a.wav", "-m", ctc_path, "--text", "hello world",
                         "--lang", "en-us", "-f", "txt", "-q")
    assert code == 0, err
    assert out.split("\t")[1].strip() == g2p("hello world", "en-us")
    for argv, message in [
        (("--text", "hello"), "--text needs --lang"),
        (("--transcript", "a", "--lang", "fra"), "does nothing"),
        (("--transcript", "a", "--decoding", "beam"), "does not apply to forced alignment"),
        (("--transcripts", "x.tsv", "--tier", "utt"), "--tier"),
    ]:
        code, _, err = run(capsys, "align", audio_dir / "a.wav", "-m", ctc_path, *argv, "-q")
        assert code == 2 and message in err, err
    code, _, err = run(capsys, "align", audio_dir, "-m", ctc_path, "--transcript", "a", "-q")
    assert code == 2 and "one audio file" in err


def test_cli_reports_dropped_symbols_and_impossible_transcripts(capsys, tmp_path, ctc_path, audio_dir):
    code, out, err = run(capsys, "align", audio_dir / "a.wav", "-m", ctc_path, "--transcript", "hə̞lo X",
                         "-f", "txt", "-q")
    assert code == 0
    assert "outside ZIPA's inventory" in err and "U+031E" in err and "X (U+0058)" in err
    assert out.endswith("\thelo\n".replace("e", "ə"))
    short = write_wav(tmp_path / "short.wav", speechlike(0.3, 9))
    code, out, err = run(capsys, "align", short, "-m", ctc_path, "--transcript", "abcdefghijklmnopqrstu",
                         "-f", "txt", "-q")
    assert code == 1 and out == ""
    assert f"{short}: the transcript is too long for the audio" in err


def test_cli_transcripts_tsv_by_path_and_by_file_name(capsys, tmp_path, ctc_path, ctc_model, audio_dir):
    refs = tmp_path / "refs.tsv"
    refs.write_text(f"{audio_dir / 'a.wav'}\t{TRANSCRIPT}\nb.wav\t{OTHER}\n", encoding="utf-8")
    extra = tmp_path / "in" / "c.wav"
    extra.parent.mkdir()
    write_wav(extra, speechlike(1.0, 14))
    code, out, err = run(capsys, "align", audio_dir / "a.wav", audio_dir / "sub" / "b.wav", extra, "-m", ctc_path,
                         "--transcripts", refs, "-f", "jsonl", "-q")
    assert code == 1 and "c.wav" in err  # no transcript for c.wav: reported, the others written
    objs = {o["path"]: o for o in map(json.loads, out.splitlines())}
    assert set(objs) == {str(audio_dir / "a.wav"), str(audio_dir / "sub" / "b.wav")}
    for path, text in ((audio_dir / "a.wav", TRANSCRIPT), (audio_dir / "sub" / "b.wav", OTHER)):
        expected = ctc_model.align([path], text)[0]
        assert [p["phone"] for p in objs[str(path)]["phones"]] == [p.label for p in expected.phones]
        assert [p["start"] for p in objs[str(path)]["phones"]] == [round(p.start, 3) for p in expected.phones]


def _utterance_grid(path, duration, utterances, fmt="long_textgrid"):
    grid = praatio_textgrid.Textgrid()
    grid.addTier(praatio_textgrid.IntervalTier("utt", utterances, 0, duration))
    grid.addTier(praatio_textgrid.PointTier("events", [(1.0, "click")], 0, duration))
    grid.save(str(path), format=fmt, includeBlankSpaces=True)
    return path


def _check_added_tiers(grid_path, utterances, duration):
    grid = praatio_textgrid.openTextgrid(str(grid_path), includeEmptyIntervals=False)
    assert grid.tierNames == ("utt", "events", "phones", "words")
    assert [tuple(e) for e in grid.getTier("utt").entries] == [tuple(u) for u in utterances]
    assert [tuple(e) for e in grid.getTier("events").entries] == [(1.0, "click")]
    assert grid.maxTimestamp == pytest.approx(duration)
    phones = grid.getTier("phones").entries
    words = grid.getTier("words").entries
    for start, end, text in utterances:
        inside = [p for p in phones if start - 1e-9 <= p.start and p.end <= end + 1e-9]
        assert [p.label for p in inside] == split_phones(normalize_ipa(text))
        assert [w.label for w in words if start - 1e-9 <= w.start and w.end <= end + 1e-9] == normalize_ipa(text).split()
    assert len(phones) == sum(len(split_phones(normalize_ipa(t))) for _, _, t in utterances)


@pytest.mark.parametrize("fmt", ["long_textgrid", "short_textgrid"])
def test_cli_textgrid_tier_gets_phone_and_word_tiers(capsys, tmp_path, fmt, ctc_path, audio_dir):
    audio = audio_dir / "long.wav"
    utterances = [(0.3, 2.4, TRANSCRIPT), (2.6, 5.9, OTHER)]
    source = _utterance_grid(tmp_path / "long.TextGrid", 6.0, utterances, fmt)
    before = source.read_bytes()
    out = tmp_path / "aligned.TextGrid"
    # A 2 s window: the second utterance (3.3 s) is encoded in windows.
    code, _, err = run(capsys, "align", audio, "-m", ctc_path, "--textgrid", source, "--tier", "utt",
                       "-o", out, "--window", 2, "--overlap", 0.5, "-q")
    assert code == 0, err
    _check_added_tiers(out, utterances, 6.0)
    assert source.read_bytes() == before
    # Other formats: the phones of all utterances, in order, with global times.
    code, text, err = run(capsys, "align", audio, "-m", ctc_path, "--textgrid", source, "--tier", "utt",
                          "-f", "jsonl", "-q")
    assert code == 0, err
    obj = json.loads(text)
    assert obj["text"] == " ".join(normalize_ipa(t) for _, _, t in utterances)


def test_cli_textgrid_folder_matched_by_file_name(capsys, tmp_path, ctc_path, audio_dir):
    grids = tmp_path / "grids"
    grids.mkdir()
    utt_a, utt_b = [(0.2, 2.3, TRANSCRIPT)], [(0.1, 1.9, OTHER)]
    _utterance_grid(grids / "a.TextGrid", 2.5, utt_a)
    _utterance_grid(grids / "b.TextGrid", 2.0, utt_b)
    out = tmp_path / "out"
    code, _, err = run(capsys, "align", audio_dir / "a.wav", audio_dir / "sub", "-m", ctc_path,
                       "--textgrid", grids, "--tier", "utt", "-o", out, "-q")
    assert code == 0, err
    _check_added_tiers(out / "a.TextGrid", utt_a, 2.5)
    _check_added_tiers(out / "b.TextGrid", utt_b, 2.0)
    # Writing the copies over the inputs is refused.
    code, _, err = run(capsys, "align", audio_dir / "a.wav", "-m", ctc_path, "--textgrid", grids,
                       "--tier", "utt", "-o", grids, "-q")
    assert code == 2 and "overwrite" in err
    # A missing tier is named, with the tiers there are.
    code, _, err = run(capsys, "align", audio_dir / "a.wav", "-m", ctc_path, "--textgrid", grids / "a.TextGrid",
                       "--tier", "nope", "-q")
    assert code == 2 and "'utt'" in err


def test_cli_textgrid_utterance_that_cannot_be_aligned_is_reported(capsys, tmp_path, ctc_path, audio_dir):
    utterances = [(0.2, 1.2, TRANSCRIPT), (1.3, 1.5, "abcdefghijklmnopqrstuvw"), (2.0, 2.05, "a"), (2.6, 3.9, "a")]
    source = _utterance_grid(tmp_path / "a.TextGrid", 4.0, utterances)  # a.wav lasts 2.5 s
    out = tmp_path / "out.TextGrid"
    code, _, err = run(capsys, "align", audio_dir / "a.wav", "-m", ctc_path, "--textgrid", source, "--tier", "utt",
                       "-o", out, "-q")
    assert code == 1
    assert "[1.300-1.500 s]: the transcript is too long" in err
    assert "[2.000-2.050 s]: audio too short" in err
    assert "[2.600-3.900 s]: the interval is not inside the audio" in err
    assert "3 utterances could not be aligned" in err
    phones = praatio_textgrid.openTextgrid(str(out), includeEmptyIntervals=False).getTier("phones").entries
    assert [p.label for p in phones] == split_phones(TRANSCRIPT)


def test_cli_transducer_model(capsys, transducer_path, audio_dir):
    code, out, err = run(capsys, "align", audio_dir / "a.wav", "-m", transducer_path, "--transcript", TRANSCRIPT,
                         "-f", "jsonl", "-q")
    assert code == 0, err
    assert [p["phone"] for p in json.loads(out)["phones"]] == split_phones(TRANSCRIPT)


# ---------------------------------------------------------------------------------------------
# TextGrid reading and writing
# ---------------------------------------------------------------------------------------------


def test_textgrid_round_trip_through_praatio(tmp_path):
    grid = TextGrid(0.0, 2.5, [
        IntervalTier("utt", 0.0, 2.5, [(0.0, 1.25, 'say "hi"'), (1.25, 2.5, "ŋ͡m ɕʰ")]),
        PointTier("events", 0.0, 2.5, [(0.5, "a"), (2.0, "")]),
    ])
    path = tmp_path / "g.TextGrid"
    path.write_text(grid.to_text(), encoding="utf-8")
    read = praatio_textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    assert [tuple(e) for e in read.getTier("utt").entries] == grid.tiers[0].intervals
    assert [tuple(e) for e in read.getTier("events").entries] == grid.tiers[1].points
    assert read_textgrid(path) == grid
    # What praatio writes, long and short, and UTF-16 as Praat writes non-ASCII labels.
    for fmt in ("long_textgrid", "short_textgrid"):
        read.save(str(tmp_path / f"{fmt}.TextGrid"), format=fmt, includeBlankSpaces=True)
        assert read_textgrid(tmp_path / f"{fmt}.TextGrid") == grid
    utf16 = tmp_path / "utf16.TextGrid"
    utf16.write_bytes(grid.to_text().encode("utf-16"))
    assert read_textgrid(utf16) == grid


def test_textgrid_reader_errors(tmp_path):
    binary = tmp_path / "b.TextGrid"
    binary.write_bytes(b"ooBinaryFile\x08TextGrid")
    with pytest.raises(ValueError, match="binary TextGrid"):
        read_textgrid(binary)
    with pytest.raises(ValueError, match="not a Praat TextGrid"):
        parse_textgrid('File type = "ooTextFile"\nObject class = "Pitch 1"\n')
    grid = TextGrid(0, 1, [IntervalTier("a", 0, 1, [(0, 1, "x")]), IntervalTier("b", 0, 1, [(0, 1, "y")])])
    with pytest.raises(ValueError, match="'a', 'b'"):
        grid.interval_tier(None)
    assert grid.unique_name("a") == "a (zipa)" and grid.unique_name("c") == "c"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_textgrid(grid.to_text()) == grid


# ----------------------------------------------------------------------------- does the transcript fit?


def test_fit_measures_of_hand_made_alignments():
    spaced = [Interval("a", i * 0.1, i * 0.1 + 0.08, 0.9) for i in range(10)]  # 10 phones a second
    fit = alignment_fit(spaced, 1.0, 0.02)
    assert (fit.phones_per_second, fit.squeezed_share, fit.num_phones) == (10.0, 0.0, 10)
    assert fit.mean_confidence == pytest.approx(0.9) and fit.problems() == []
    crowded = [Interval("a", i * 0.02, i * 0.02 + 0.02, 0.9) for i in range(65)]  # one frame each
    fit = alignment_fit(crowded, 1.96, 0.02)
    assert fit.phones_per_second == pytest.approx(65 / 1.96) and fit.squeezed_share == 1.0
    too_fast, squeezed = fit.problems()  # and confident enough
    assert "33.2 phones a second" in too_fast and "100% of the phones are squeezed" in squeezed
    unsure = [Interval("a", i * 0.1, i * 0.1 + 0.08, 0.1) for i in range(10)]
    (problem,) = alignment_fit(unsure, 1.0, 0.02).problems()
    assert "mean confidence is 0.10" in problem


def test_a_transcript_too_long_for_its_audio_is_warned_about_and_refused_with_strict(capsys, tmp_path, ctc_path,
                                                                                       audio_dir):
    audio = tmp_path / "short.wav"
    write_wav(audio, speechlike(1.96, 5))
    crowded = " ".join(["pataki"] * 11)  # 66 phones in 1.96 s
    out = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "align", audio, "-m", ctc_path, "--transcript", crowded, "-f", "jsonl", "-o", out)
    assert code == 0 and "the transcript does not fit the audio" in err and "phones a second" in err
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["fit"]["phones_per_second"] > 25 and any("phones a second" in w for w in record["warnings"])
    fitting = tmp_path / "fits.jsonl"
    code, _, err = run(capsys, "align", audio, "-m", ctc_path, "--transcript", "pa", "-f", "jsonl", "-o", fitting)
    assert code == 0 and "phones a second" not in err
    assert json.loads(fitting.read_text(encoding="utf-8"))["fit"]["phones_per_second"] == pytest.approx(2 / 1.96, abs=0.01)
    strict = tmp_path / "strict.jsonl"
    code, _, err = run(capsys, "align", audio, "-m", ctc_path, "--transcript", crowded, "-f", "jsonl", "-o", strict,
                       "--strict")
    assert code == 1 and "--strict" in err and strict.read_text(encoding="utf-8") == ""
    code, _, err = run(capsys, "align", audio, "-m", ctc_path, "--strict")
    assert code == 2 and "--strict is for forced alignment" in err


def test_model_align_warns_or_raises_on_a_transcript_that_cannot_fit(ctc_model):
    audio = [speechlike(1.96, 5)]
    crowded = " ".join(["pataki"] * 11)
    with pytest.warns(forced.FitWarning, match="phones a second"):
        (alignment,) = ctc_model.align(audio, crowded)
    assert alignment.fit.phones_per_second > 25 and alignment.warnings
    with pytest.raises(ValueError, match="does not fit the audio"):
        ctc_model.align(audio, crowded, strict=True)
