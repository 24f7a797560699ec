"""ELAN files: what `--format eaf` writes is read back by pympi-ling (the library ELAN users
script with) as time-aligned phone and word tiers, confidences in symbolic-association tiers and
the audio linked; what pympi writes is read by `zipa.data.eaf` and aligned by `zipa align --eaf`."""

import json

import pytest
from tiny_models import speechlike, write_wav

from zipa.cli import main
from zipa.data.eaf import read_eaf
from zipa.decoding.timestamps import Alignment, Interval
from zipa.inference.writers import FORMATS, Record

pympi = pytest.importorskip("pympi")

TRANSCRIPT = "həloʊ wɜːld"


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("eaf_audio") / "clip.wav", speechlike(2.0, 7))


def test_eaf_writer_read_by_pympi(tmp_path):
    phones = [Interval("h", 0.1, 0.14, 0.9), Interval("a", 0.14, 0.3, 0.75), Interval("j", 0.5, 0.5004, 0.5)]
    words = [Interval("ha", 0.1, 0.3, 0.8)]
    record = Record(str(tmp_path / "a b.wav"), 1.0, Alignment("ha", phones, words))
    path = tmp_path / "a.eaf"
    path.write_text(FORMATS["eaf"].text(record), encoding="utf-8")
    eaf = pympi.Elan.Eaf(str(path))
    assert sorted(eaf.get_tier_names()) == ["phones", "phones confidence", "words", "words confidence"]
    # whole milliseconds; the 0.4 ms phone rounds to nothing and is left out
    assert eaf.get_annotation_data_for_tier("phones") == [(100, 140, "h"), (140, 300, "a")]
    assert eaf.get_annotation_data_for_tier("words") == [(100, 300, "ha")]
    assert eaf.get_ref_annotation_data_for_tier("phones confidence") == [
        (100, 140, "0.9000", "h"), (140, 300, "0.7500", "a")]
    assert eaf.get_parameters_for_tier("words confidence")["PARENT_REF"] == "words"
    kind = eaf.get_parameters_for_tier("phones confidence")["LINGUISTIC_TYPE_REF"]
    assert eaf.linguistic_types[kind]["CONSTRAINTS"] == "Symbolic_Association"
    assert eaf.get_linked_files() == [{"MEDIA_URL": (tmp_path / "a b.wav").as_uri(), "MIME_TYPE": "audio/x-wav"}]
    assert read_eaf(path).tiers["phones confidence"] == [(0.1, 0.14, "0.9000"), (0.14, 0.3, "0.7500")]


def _utterance_eaf(path, media):
    eaf = pympi.Elan.Eaf(author="test")
    eaf.add_linked_file(str(media), mimetype="audio/x-wav")
    eaf.add_tier("utt")
    eaf.add_annotation("utt", 250, 1750, TRANSCRIPT)
    eaf.add_linguistic_type("note", constraints="Symbolic_Association", timealignable=False)
    eaf.add_tier("note", ling="note", parent="utt")
    eaf.add_ref_annotation("note", "utt", 1000, "greeting")
    eaf.add_tier("other")
    eaf.add_annotation("other", 100, 400, "a")
    eaf.add_annotation("other", 600, 900, "b")
    eaf.remove_tier("default")
    pympi.Elan.to_eaf(str(path), eaf)
    return path


def test_eaf_reader_reads_what_pympi_writes(tmp_path, wav):
    eaf = read_eaf(_utterance_eaf(tmp_path / "u.eaf", wav))
    assert eaf.tiers == {"utt": [(0.25, 1.75, TRANSCRIPT)], "note": [(0.25, 1.75, "greeting")],
                         "other": [(0.1, 0.4, "a"), (0.6, 0.9, "b")]}
    assert eaf.parents == {"note": "utt"}
    assert eaf.to_textgrid().interval_tier("utt").intervals == [(0.25, 1.75, TRANSCRIPT)]
    (tmp_path / "bad.eaf").write_text("<html/>")
    with pytest.raises(ValueError, match="bad.eaf: not an ELAN file"):
        read_eaf(tmp_path / "bad.eaf")


def test_align_eaf_tier_writes_eaf_with_phones_inside_the_utterance(tmp_path, wav, ctc_model):
    source = _utterance_eaf(tmp_path / "u.eaf", wav)
    out = tmp_path / "aligned.eaf"
    assert main(["align", str(wav), "-m", str(ctc_model), "--eaf", str(source), "--eaf-tier", "utt", "-f", "eaf",
                 "-o", str(out), "-q"]) == 0
    eaf = pympi.Elan.Eaf(str(out))
    assert eaf.get_annotation_data_for_tier("utt") == [(250, 1750, TRANSCRIPT)]  # the source's tiers are kept
    phones = eaf.get_annotation_data_for_tier("phones")
    assert "".join(label for _, _, label in phones) == TRANSCRIPT.replace(" ", "")
    assert all(250 <= a < b <= 1750 for a, b, _ in phones)
    assert [label for _, _, label in eaf.get_annotation_data_for_tier("words")] == TRANSCRIPT.split()
    assert len(eaf.get_ref_annotation_data_for_tier("phones confidence")) == len(phones)
    assert eaf.get_linked_files()[0]["MEDIA_URL"] == wav.resolve().as_uri()
    # the same ELAN file as the utterance tier of a TextGrid output
    assert main(["align", str(wav), "-m", str(ctc_model), "--eaf", str(source), "--eaf-tier", "other", "-q",
                 "-o", str(tmp_path / "aligned.TextGrid")]) == 0
    assert main(["align", str(wav), "-m", str(ctc_model), "--eaf", str(source), "-q", "-o", str(tmp_path / "x.eaf"),
                 "-f", "eaf"]) == 2  # three tiers: which?


def test_transcribe_eaf_holds_the_phones_of_jsonl(tmp_path, wav, ctc_model, capsys):
    out = tmp_path / "t.eaf"
    assert main(["transcribe", str(wav), "-m", str(ctc_model), "-f", "eaf", "-o", str(out), "-q"]) == 0
    assert main(["transcribe", str(wav), "-m", str(ctc_model), "-f", "jsonl", "--timestamps", "-q"]) == 0
    record = json.loads(capsys.readouterr().out)
    eaf = pympi.Elan.Eaf(str(out))
    expected = [(round(p["start"] * 1000), round(p["end"] * 1000), p["phone"]) for p in record["phones"]]
    assert eaf.get_annotation_data_for_tier("phones") == [e for e in expected if e[1] > e[0]]
    confidences = [(a, b, f"{p['confidence']:.4f}", label) for (a, b, label), p in zip(expected, record["phones"])]
    assert eaf.get_ref_annotation_data_for_tier("phones confidence") == confidences
