"""Timestamps you can trust: espeak-ng speech with known phone times, the timed reference built
from it, the matching and statistics of `zipa.evaluation.timing`, and forced alignment.

What a trained model measures (`benchmarks/timestamps.py`, table in the README) needs a trained
model; here the deterministic parts are checked against known answers: espeak's phone times
against the audio itself, the reference matching on hand-made events, the statistics on errors
with a known offset, and the forced alignment's phones against the transcript.
"""

import numpy as np
import pytest
from tiny_models import tiny_model_path

pytest.importorskip("espeakng_loader")

from zipa.evaluation.timing import (  # noqa: E402
    ReferencePhone,
    espeak_reference,
    forced_errors,
    free_errors,
    matched_indices,
    reference_phones,
    timing_stats,
)
from zipa.decoding.timestamps import Interval, TimedToken, build_alignment, split_phones  # noqa: E402
from zipa.text import espeak  # noqa: E402
from zipa.text.g2p import clean_espeak  # noqa: E402
from zipa.text.ipa import inventory, normalize_ipa  # noqa: E402
from zipa.text.tokenizer import Tokenizer  # noqa: E402

# Voices and sentences of no other test and not of the demo corpus.
SPEECH = [
    ("en-us+m4", "Sometimes, after a long pause, we speak again."),
    ("es+f5", "El gato come pescado, y el perro duerme."),
    ("fi+klatt2", "Sataa lunta, ja tuuli puhaltaa."),
    ("ru+m6", "Сегодня, наверное, будет снег."),
]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


@pytest.mark.parametrize("voice,text", SPEECH)
def test_espeak_phone_times_fit_the_audio(voice, text):
    speech = espeak.synthesize_with_phones(text, voice, seed=7)
    sr, x = speech.sample_rate, speech.samples
    assert sr == espeak.sample_rate() and x.dtype == np.float32 and x.size > sr // 2
    starts = [p.sample for p in speech.phonemes]
    assert starts == sorted(starts) and 0 <= starts[0] and starts[-1] <= x.size  # monotonic, inside
    for p in speech.phonemes:
        assert p.start == pytest.approx(p.sample / sr) and p.start <= p.end <= x.size / sr
    spoken = [p for p in speech.phonemes if p.phoneme]
    assert len(spoken) > 15
    # Every phoneme name normalises into the model's inventory (nothing outside it is left).
    inv = inventory()
    for p in spoken:
        ipa = normalize_ipa(clean_espeak(p.phoneme, voice.split("+")[0]))
        assert set(ipa) <= inv, p
    # The first phone comes after the leading silence (espeak's is short) and the audio before
    # it is silent; the audio is loud soon after it.
    first = spoken[0].sample
    assert np.abs(x[:first]).max(initial=0.0) < 1e-3
    assert np.abs(x[first : first + sr // 10]).max() > 0.05
    # The comma pauses (runs of events with an empty name, 100 ms or more) are silent, and the
    # phone after each starts where the sound comes back: the times are those of the audio.
    pauses, run = [], []
    for p in speech.phonemes:
        if not p.phoneme:
            run.append(p)
            continue
        if run and run[-1].end - run[0].start >= 0.1:
            pauses.append((run[0].sample, p.sample))
        run = []
    assert pauses
    frame = sr // 200  # 5 ms
    for begin, end in pauses:
        silence = _rms(x[begin + frame : end - frame])
        assert silence < 0.005
        onset = end + np.flatnonzero(np.abs(x[end:]) > 0.01)[0]
        assert 0 <= (onset - end) / sr < 0.015
        assert _rms(x[end : end + 4 * frame]) > 4 * silence


_SYNTH_SCRIPT = """
import hashlib, sys
from zipa.text import espeak
if sys.argv[1] == "plain":  # the library as it was before phoneme events were switched on
    espeak._INITIALIZE_PHONEME_EVENTS = espeak._INITIALIZE_PHONEME_IPA = 0
    x, _ = espeak.synthesize("Kuusi kissaa istuu katolla.", "fi+f5", seed=3)
else:
    x = espeak.synthesize_with_phones("Kuusi kissaa istuu katolla.", "fi+f5", seed=3).samples
print(x.size, hashlib.sha256(x.tobytes()).hexdigest())
"""


def test_phoneme_events_do_not_change_the_samples():
    # Fresh processes: libespeak-ng carries its flutter phase from one utterance to the next
    # (see espeak.synthesize), so only the same sequence of calls from a clean start compares.
    import subprocess
    import sys

    out = [
        subprocess.run([sys.executable, "-c", _SYNTH_SCRIPT, mode], capture_output=True, text=True, check=True).stdout
        for mode in ("plain", "events")
    ]
    assert out[0] == out[1] and int(out[0].split()[0]) > 10000


def test_split_phones_groups_as_build_alignment():
    tokenizer = Tokenizer.default()
    text = "tʰaːkʲ ʰi ə˞ɹ̩ŋ"
    tokens = [TimedToken(t, 0.1 * k, 0.1 * k + 0.05, 1.0) for k, t in enumerate(tokenizer.encode(text))]
    alignment = build_alignment(tokens, tokenizer.id_to_piece)
    assert split_phones(text) == [p.label for p in alignment.phones] == ["tʰ", "aː", "kʲ", "ʰ", "i", "ə˞", "ɹ̩", "ŋ"]


def test_matched_indices():
    assert matched_indices(list("abcd"), list("abcd")) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert matched_indices(list("abcd"), list("axcd")) == [(0, 0), (2, 2), (3, 3)]  # substitution
    assert matched_indices(list("abcd"), list("acd")) == [(0, 0), (2, 1), (3, 2)]  # deletion
    assert matched_indices(list("acd"), list("abbcd")) == [(0, 0), (1, 3), (2, 4)]  # insertions
    assert matched_indices([], list("ab")) == [] and matched_indices(list("ab"), []) == []
    assert matched_indices(["tʰ", "a"], ["t", "a"]) == [(1, 1)]  # whole labels are compared


def _event(name, start):
    return espeak.PhonemeEvent(name, start, start, int(start * 22050), 1)


def test_reference_phones_take_the_first_phone_of_each_event():
    # Events as espeak names them: stress marks, a diphthong, a separate palatalisation, a
    # length mark missing (Finnish-like "a" where the label has "aː"), pauses, a tone-like "".
    events = [_event("", 0.0), _event("ˈaɪ", 0.01), _event("n", 0.20), _event("ʲ", 0.25),
              _event("a", 0.30), _event("", 0.40), _event("tʃ", 0.50), _event("ˌo", 0.58), _event("", 0.7)]
    phones = reference_phones("aɪnʲ aː tʃo", events, "xx")
    assert phones == [
        ReferencePhone("a", 0.01), ReferencePhone("ɪ", None), ReferencePhone("nʲ", 0.20),
        ReferencePhone("aː", 0.30), ReferencePhone("t", 0.50), ReferencePhone("ʃ", None),
        ReferencePhone("o", 0.58),
    ]
    # A phone the events lack (or spell with another base) gets no time; the rest still match.
    phones = reference_phones("bano", [_event("b", 0.1), _event("a", 0.2), _event("m", 0.3), _event("o", 0.4)], "xx")
    assert [p.start for p in phones] == [0.1, 0.2, None, 0.4]


@pytest.mark.parametrize("voice,text", SPEECH[:2] + [("cmn+m4", "我们明天早上去公园。")])
def test_espeak_reference_times_most_phones(voice, text):
    utt = espeak_reference(text, voice, seed=1)
    language = voice.split("+")[0]
    assert utt.transcript == normalize_ipa(clean_espeak(espeak.phonemize(text, language), language))
    assert [p.label for p in utt.phones] == split_phones(utt.transcript)
    known = [p.start for p in utt.phones if p.start is not None]
    assert len(known) >= 0.75 * len(utt.phones)  # affricates, diphthongs: second halves untimed
    assert known == sorted(known) and 0 <= known[0] and known[-1] < utt.duration


def test_statistics_of_known_errors():
    errors = [0.005, -0.010, 0.015, 0.030, -0.050, 0.020]
    stats = timing_stats(errors)
    assert stats.n == 6
    assert stats.median == pytest.approx(0.0175) and stats.mean == pytest.approx(0.13 / 6)
    assert stats.bias == pytest.approx(0.010 / 6)
    assert stats.within_20 == pytest.approx(4 / 6) and stats.within_40 == pytest.approx(5 / 6)
    assert stats.row()["bias_ms"] == 1.7 and stats.row()["within_20ms_%"] == 66.7
    with pytest.raises(ValueError):
        timing_stats([])


def test_errors_of_shifted_phones_give_the_shift_as_bias():
    rng = np.random.default_rng(0)
    labels = list("abcdefghij")
    starts = np.cumsum(rng.uniform(0.05, 0.12, len(labels)))
    reference = [ReferencePhone(lab, float(s) if k != 3 else None) for k, (lab, s) in enumerate(zip(labels, starts))]
    late = [Interval(lab, float(s) + 0.013, float(s) + 0.05, 1.0) for lab, s in zip(labels, starts)]
    forced = timing_stats(forced_errors(reference, late))
    assert forced.n == 9 and forced.bias == pytest.approx(0.013) and forced.median == pytest.approx(0.013)
    assert forced.within_20 == 1.0
    # Free transcription: one phone substituted, one inserted, one deleted: 6 matched, timed pairs.
    hyp = late[:2] + [Interval("x", 0.0, 0.0, 1.0)] + late[3:5] + [Interval("y", 0.5, 0.5, 1.0)] + late[6:9]
    hyp[0] = Interval("a", hyp[0].start - 0.026, hyp[0].end, 1.0)  # one early by 13 ms
    free = timing_stats(free_errors(reference, hyp))
    assert free.n == 6 and free.median == pytest.approx(0.013) and free.bias == pytest.approx(0.013 * 4 / 6)
    with pytest.raises(ValueError):
        forced_errors(reference, late[:-1])


def test_forced_alignment_errors_cover_the_timed_reference_phones(tmp_path_factory):
    import zipa

    model = zipa.load_model(tiny_model_path(tmp_path_factory, "ctc"), device="cpu")
    utt = espeak_reference("Mama anapika chakula.", "sw+m6", seed=2)
    (alignment,) = model.align([utt.samples], utt.transcript, sampling_rate=utt.sample_rate)
    assert [p.label for p in alignment.phones] == [p.label for p in utt.phones]
    assert [w.label for w in alignment.words] == utt.transcript.split()
    starts = [p.start for p in alignment.phones]
    assert starts == sorted(starts) and starts[-1] < utt.duration
    errors = forced_errors(utt.phones, alignment.phones)
    assert len(errors) == sum(p.start is not None for p in utt.phones)
