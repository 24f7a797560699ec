"""`zipa align CORPUS --output-dir OUT` on a corpus laid out as the Montreal Forced Aligner's
documentation shows (speaker folders of recordings with .lab transcripts beside them), with what
real corpora hold: a symbol outside the inventory, a recording without transcript, an unreadable
recording, nested speaker folders and a TextGrid with a tier per speaker. The TextGrids are read
back by praatio and the summary by the csv module."""

import csv
import json

import pytest
from tiny_models import speechlike, write_wav

from zipa.cli import main
from zipa.data.corpus import SUMMARY_COLUMNS, find_transcript, pair_transcripts
from zipa.text.ipa import normalize_ipa

praatio_textgrid = pytest.importorskip("praatio.textgrid")

LABS = {  # relative path -> IPA transcript (.lab)
    "spk1/utt1.wav": "həloʊ wɜːld",
    "spk1/utt2.wav": "ðə kæt sæt",
    "spk2/oov.wav": "ðə Xkæt",  # X is outside ZIPA's inventory: dropped, noted
    "dialect/spk3/utt4.wav": "ɡʊd mɔːɹnɪŋ",  # a nested speaker folder
}
CONVERSATION = {"anna": [(0.2, 1.2, "həloʊ")], "ben": [(1.5, 2.8, "wɜːld ðɛɹ")]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mfa") / "corpus"
    for k, (rel, text) in enumerate(LABS.items()):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_wav(root / rel, speechlike(2.0, 40 + k))
        (root / rel).with_suffix(".lab").write_text(text + "\n", encoding="utf-8")
    write_wav(root / "spk2" / "untranscribed.wav", speechlike(1.5, 50))  # no transcript
    (root / "spk2" / "broken.wav").write_bytes(b"RIFF\x00\x00 not audio")
    (root / "spk2" / "broken.lab").write_text("həloʊ\n", encoding="utf-8")
    (root / "spk4").mkdir()
    write_wav(root / "spk4" / "conversation.wav", speechlike(3.0, 51))
    grid = praatio_textgrid.Textgrid()
    for speaker, intervals in CONVERSATION.items():
        grid.addTier(praatio_textgrid.IntervalTier(speaker, intervals, 0, 3.0))
    grid.save(str(root / "spk4" / "conversation.TextGrid"), format="long_textgrid", includeBlankSpaces=True)
    return root


def read_tiers(path):
    grid = praatio_textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    return {name: grid.getTier(name).entries for name in grid.tierNames}


def labels(entries):
    return [text for _, _, text in entries if text]


def summary(out):
    with open(out / "alignment_summary.csv", newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def aligned(corpus, ctc_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("mfa_out") / "aligned"
    code = main(["align", str(corpus), "-m", str(ctc_model), "--ipa", "--output-dir", str(out), "-q"])
    return code, out


def test_transcripts_are_paired_beside_their_audio(corpus):
    assert find_transcript(corpus / "spk1" / "utt1.wav") == corpus / "spk1" / "utt1.lab"
    assert find_transcript(corpus / "spk2" / "untranscribed.wav") is None
    files = [(p, p.relative_to(corpus)) for p in sorted(corpus.rglob("*.wav"))]
    items = {str(item.relative): item for item in pair_transcripts(files)}
    assert items["dialect/spk3/utt4.wav"].speaker == "spk3"
    assert [(u.speaker, u.start, u.end, u.text) for u in items["spk4/conversation.wav"].utterances] == [
        ("anna", 0.2, 1.2, "həloʊ"), ("ben", 1.5, 2.8, "wɜːld ðɛɹ")]
    assert items["spk1/utt2.wav"].utterances[0].text == "ðə kæt sæt"


def test_each_lab_file_gets_mfa_tiers_holding_its_transcript(aligned, corpus):
    code, out = aligned
    assert code == 1  # the broken recording
    for rel, text in LABS.items():
        tiers = read_tiers((out / rel).with_suffix(".TextGrid"))
        assert list(tiers) == ["words", "phones"]  # MFA's names and order
        expected = normalize_ipa(text)
        assert "".join(labels(tiers["phones"])) == expected.replace(" ", "")
        assert labels(tiers["words"]) == expected.split()
        for entries in tiers.values():  # contiguous over the whole recording
            assert entries[0][0] == 0 and entries[-1][1] == pytest.approx(2.0)
            assert all(a[1] == b[0] for a, b in zip(entries, entries[1:]))


def test_summary_has_a_row_per_file_marking_free_failed_and_dropped_symbols(aligned, corpus):
    _, out = aligned
    rows = summary(out)
    assert set(rows) == set(LABS) | {"spk2/untranscribed.wav", "spk2/broken.wav", "spk4/conversation.wav"}
    assert tuple(next(iter(rows.values()))) == SUMMARY_COLUMNS
    for rel, row in rows.items():
        if rel == "spk2/broken.wav":
            continue
        tiers = read_tiers((out / rel).with_suffix(".TextGrid"))
        phones = [label for name, entries in tiers.items() if name.endswith("phones") for label in labels(entries)]
        assert int(row["phones"]) == len(phones)
        assert 0 < float(row["mean_confidence"]) <= 1
    assert rows["spk1/utt1.wav"]["alignment"] == "forced" and rows["spk1/utt1.wav"]["transcript"] == "spk1/utt1.lab"
    assert rows["dialect/spk3/utt4.wav"]["speaker"] == "spk3"
    assert rows["spk2/untranscribed.wav"]["alignment"] == "free" and rows["spk2/untranscribed.wav"]["transcript"] == ""
    assert float(rows["spk2/untranscribed.wav"]["duration"]) == 1.5
    assert "X (U+0058)" in rows["spk2/oov.wav"]["notes"] and not rows["spk2/oov.wav"]["error"]
    broken = rows["spk2/broken.wav"]
    assert broken["alignment"] == "failed" and "broken.wav" in broken["error"] and broken["phones"] == ""
    assert not (out / "spk2" / "broken.TextGrid").exists()


def test_a_textgrid_with_a_tier_per_speaker_gets_speaker_prefixed_tiers(aligned):
    _, out = aligned
    tiers = read_tiers(out / "spk4" / "conversation.TextGrid")
    assert list(tiers) == ["anna - words", "anna - phones", "ben - words", "ben - phones"]
    for speaker, [(start, end, text)] in CONVERSATION.items():
        phones = [(a, b, label) for a, b, label in tiers[f"{speaker} - phones"] if label]
        assert "".join(label for _, _, label in phones) == text.replace(" ", "")
        assert all(start <= a < b <= end for a, b, _ in phones)
        assert labels(tiers[f"{speaker} - words"]) == text.split()
    assert summary(out)["spk4/conversation.wav"]["speaker"] == "anna, ben"


def test_resume_aligns_only_what_is_missing_and_keeps_the_summary(aligned, corpus, ctc_model):
    _, out = aligned
    before = summary(out)
    kept = (out / "spk1" / "utt1.TextGrid").stat().st_mtime_ns
    (out / "spk1" / "utt2.TextGrid").unlink()
    code = main(["align", str(corpus), "-m", str(ctc_model), "--ipa", "--output-dir", str(out), "-q", "--resume"])
    assert code == 1  # the broken recording is tried again
    assert (out / "spk1" / "utt2.TextGrid").exists()
    assert (out / "spk1" / "utt1.TextGrid").stat().st_mtime_ns == kept
    assert summary(out) == before


def test_orthographic_lab_files_go_through_g2p_and_name_the_written_words(tmp_path, ctc_model):
    pytest.importorskip("espeakng_loader")
    from zipa.text.g2p import g2p

    (tmp_path / "corpus" / "spk").mkdir(parents=True)
    texts = {"a": "Hello, world!", "b": "I have 42 cats"}  # 42: two spoken words for one written
    for k, (name, text) in enumerate(texts.items()):
        write_wav(tmp_path / "corpus" / "spk" / f"{name}.wav", speechlike(2.5, 60 + k))
        (tmp_path / "corpus" / "spk" / f"{name}.lab").write_text(text + "\n")
    out = tmp_path / "out"
    assert main(["align", str(tmp_path / "corpus"), "-m", str(ctc_model), "--lang", "en-us", "--output-dir", str(out),
                 "-q", "-f", "eaf"]) == 0
    import pympi

    for name, text in texts.items():
        eaf = pympi.Elan.Eaf(str(out / "spk" / f"{name}.eaf"))
        ipa = g2p(text, "en-us")
        assert "".join(a[2] for a in eaf.get_annotation_data_for_tier("phones")) == ipa.replace(" ", "")
        words = [a[2] for a in eaf.get_annotation_data_for_tier("words")]
        assert words == (["Hello", "world"] if name == "a" else ipa.split())
    notes = summary(out)
    assert notes["spk/a.wav"]["notes"] == ""
    assert "the words tier holds IPA words" in notes["spk/b.wav"]["notes"]


def test_fit_warnings_are_those_of_forced_alignment_and_strict_fails_the_file(aligned, corpus, ctc_model, capsys,
                                                                            tmp_path):
    _, out = aligned
    rows = summary(out)
    for rel in ("spk1/utt1.wav", "spk1/utt2.wav"):
        assert main(["align", str(corpus / rel), "-m", str(ctc_model), "--transcript", LABS[rel], "-f", "jsonl",
                     "-q"]) == 0
        record = json.loads(capsys.readouterr().out)
        assert rows[rel]["fit_warnings"] == " | ".join(record["warnings"])
        assert float(rows[rel]["mean_confidence"]) == pytest.approx(
            sum(p["confidence"] for p in record["phones"]) / len(record["phones"]), abs=1e-4)
    assert any(row["fit_warnings"] for row in rows.values())  # the tiny model fits no transcript well
    strict = tmp_path / "strict"
    assert main(["align", str(corpus / "spk1"), "-m", str(ctc_model), "--ipa", "--output-dir", str(strict), "-q",
                 "--strict"]) == 1
    for rel, row in summary(strict).items():
        assert row["alignment"] == ("failed" if rows[f"spk1/{rel}"]["fit_warnings"] else "forced")
        assert ("--strict" in row["error"]) == bool(rows[f"spk1/{rel}"]["fit_warnings"])
        assert (strict / rel).with_suffix(".TextGrid").exists() == (row["alignment"] == "forced")


def test_corpus_mode_usage_errors(corpus, ctc_model, tmp_path, capsys):
    base = ["align", str(corpus), "-m", str(ctc_model), "--output-dir", str(tmp_path / "o")]
    assert main(base) == 2
    assert "--lang CODE" in capsys.readouterr().err
    assert main(base + ["--ipa", "-f", "jsonl"]) == 2
    assert "writes a file per audio file" in capsys.readouterr().err
    assert main(base + ["--ipa", "--transcript", "a"]) == 2
    assert "does not go with --transcript" in capsys.readouterr().err
    assert main(["align", str(corpus), "-m", str(ctc_model), "--ipa", "--output-dir", str(corpus), "-q"]) == 2
    assert "overwrite the input TextGrid" in capsys.readouterr().err
