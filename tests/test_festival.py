"""Festival speech (`zipa.text.festival`): phone-set tables, times against the audio, errors.

The tables are checked against two independent sources: Festival's own phone-set definitions
(every phone a voice can say has an IPA spelling in the inventory) and espeak-ng's IPA of the
same sentences (aligned phone by phone, each Festival phone's most frequent espeak-ng partner
must be the table's sound). The times are checked against the audio itself: after a pause, the
sound comes back where Festival says the next phone starts.

Needs Debian's ``festival`` and the voices (``.ci/run`` installs them); skips elsewhere.
"""

from collections import Counter, defaultdict

import numpy as np
import pytest

from zipa.text import festival

pytestmark = pytest.mark.skipif(
    not festival.is_available(),
    reason=f"Festival is not installed (apt-get install {festival.DEBIAN_PACKAGES}; .ci/run installs it)")

pytest.importorskip("espeakng_loader")

from zipa.evaluation.timing import festival_reference, phone_class  # noqa: E402
from zipa.decoding.timestamps import is_modifier, split_phones  # noqa: E402
from zipa.text import espeak  # noqa: E402
from zipa.text.g2p import clean_espeak  # noqa: E402
from zipa.text.ipa import normalize_ipa, normalize_ipa_report  # noqa: E402

# Sentences written for these tests (none of the demo corpus's, none of the benchmark's).
SENTENCES = {
    "en-us": ["My neighbour paints small boats in the garage.", "The children played chess until midnight.",
              "A thick fog covered the village this morning.", "Please bring the yellow jug to the kitchen."],
    "it": ["Mia sorella lavora in un negozio di scarpe.", "Domani andiamo al mare con la zia.",
           "Il treno per Milano parte alle otto.", "Gli gnocchi di ieri erano buonissimi."],
    "fi": ["Isoäiti leipoo pullaa joka sunnuntai.", "Bussi myöhästyi taas kymmenen minuuttia.",
           "Järven rannalla kasvaa korkeita mäntyjä.", "Veljeni opiskelee kemiaa yliopistossa."],
    "cs": ["Můj bratr pracuje v malém obchodě.", "Večer jsme šli do kina s přáteli.",
           "Na zahradě kvetou žluté tulipány.", "Dědeček čte noviny každé ráno."],
    "ru": ["Мой брат работает в маленьком магазине.", "Вечером мы пошли в кино с друзьями.",
           "В саду цветут жёлтые тюльпаны.", "Дедушка читает газету каждое утро."],
    "hi": ["मेरा भाई एक छोटी दुकान में काम करता है।", "शाम को हम दोस्तों के साथ सिनेमा गए।",
           "बगीचे में पीले फूल खिले हैं।", "दादाजी हर सुबह अख़बार पढ़ते हैं।"],
}
# espeak-ng's own spellings of the same sounds (pairs of first letters that count as the same
# sound): Russian ɭ for л and ʌ/ɑ/ɪ/i vowel reduction, Hindi ʌ for the schwa, Czech/Italian
# ʊ/ɪ for unstressed u/i, English flaps and reduced vowels.
SAME = {frozenset(p) for p in ("lɭ", "ʌɐ", "ʌə", "ʌa", "ɑa", "ɪi", "ɪe", "ʊu", "ʊo", "ɾt", "ɾd", "ɾr", "əɪ", "ɔo",
                               "ɛe", "ɜə", "ɨy", "ɨi", "ɵo", "ɑɔ")}


def _allowed_installed():
    return [v for v in festival.allowed_voices() if v in festival.installed_voices()]


def _needs(voice):
    if voice not in festival.installed_voices():
        pytest.skip(f"Festival voice {voice} is not installed (apt-get install {festival.VOICES[voice].package})")


@pytest.mark.parametrize("voice", list(festival.VOICES))
def test_every_phone_of_the_voice_has_an_inventory_ipa_spelling(voice):
    _needs(voice)
    defined = festival.phone_set_description(voice)
    table = festival.PHONE_SETS[festival.VOICES[voice].phone_set]
    assert len(defined) > 30
    assert sorted(set(defined) - set(table)) == []  # every phone Festival defines is spelled
    for phone, features in defined.items():
        ipa, dropped = normalize_ipa_report(table[phone])
        assert not dropped, (phone, table[phone], dropped)
        if ipa:  # consonant or vowel as Festival's vc feature says
            is_vowel = phone_class(ipa) == "vowels"
            if features.get("vc") == "+" and features.get("ctype", "0") == "0":
                assert is_vowel, (phone, ipa)
            elif features.get("vc") == "-" and features.get("ctype", "0") not in ("0", "r"):
                assert not is_vowel, (phone, ipa)


def _agreement(voice):
    """Per Festival phone: Counter of the espeak-ng phones (first letters) it is aligned with."""
    language = festival.VOICES[voice].language
    partners = defaultdict(Counter)
    for speech in festival.synthesize(SENTENCES[language], voice):
        ours = [(p.name, normalize_ipa(p.ipa)) for p in speech.phones if p.ipa]
        theirs = [p for p in split_phones(normalize_ipa(clean_espeak(espeak.phonemize(speech.text, language),
                                                                      language))) if not is_modifier(p)]
        a, b = [ipa[0] for _, ipa in ours], [p[0] for p in theirs]
        cost = np.zeros((len(a) + 1, len(b) + 1), dtype=np.int64)
        cost[:, 0], cost[0, :] = np.arange(len(a) + 1), np.arange(len(b) + 1)
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                same = a[i - 1] == b[j - 1] or frozenset((a[i - 1], b[j - 1])) in SAME
                cost[i, j] = min(cost[i - 1, j - 1] + (not same), cost[i - 1, j] + 1, cost[i, j - 1] + 1)
        i, j = len(a), len(b)
        while i and j:
            same = a[i - 1] == b[j - 1] or frozenset((a[i - 1], b[j - 1])) in SAME
            if cost[i, j] == cost[i - 1, j - 1] + (not same):
                partners[ours[i - 1][0]][b[j - 1] if not same else a[i - 1]] += 1
                i, j = i - 1, j - 1
            elif cost[i, j] == cost[i - 1, j] + 1:
                i -= 1
            else:
                j -= 1
    return partners


@pytest.mark.parametrize("voice", festival.allowed_voices())
def test_phone_table_agrees_with_espeak_ng_on_the_same_sentences(voice):
    _needs(voice)
    table = festival.PHONE_SETS[festival.VOICES[voice].phone_set]
    partners = _agreement(voice)
    total = sum(sum(c.values()) for c in partners.values())
    agreeing = sum(c[normalize_ipa(table[p])[0]] for p, c in partners.items())
    assert total > 80
    assert agreeing / total >= 0.85, (agreeing, total)
    for phone, counts in partners.items():
        best, n = counts.most_common(1)[0]
        if n >= 3:  # each phone seen often enough is most often espeak-ng's same sound
            assert best == normalize_ipa(table[phone])[0], (phone, table[phone], counts)


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


# Median |energy onset - Festival's start| after pauses, as measured (2026-12-07): lp 3 ms,
# suo_fi_lj 7 ms, msu_ru_nsh 4 ms; ked and czech_ph put the first phone after a pause 12-35 ms
# before the sound starts (their pau-X diphones' labels), so their bound is looser. hindi_NSK's
# pauses hold recording noise (5-6 % of the peak): onsets cannot be read there.
ONSET_TOLERANCE = {"ked_diphone": 0.030, "czech_ph": 0.035}


def _onset_errors(speech):
    """(onset - Festival start) in s for each non-stop phone after a pause whose middle is quiet:
    the onset is the first 2.5 ms over max(2 % of the utterance's peak, 4 x the pause's floor),
    searched from 60 ms before Festival's start; and the number of pauses too noisy to read."""
    x, sr = speech.samples, speech.sample_rate
    hop = sr // 400
    env = np.array([_rms(x[k:k + hop]) for k in range(0, len(x) - hop, hop)])
    errors, noisy = [], 0
    for before, phone in zip(speech.phones, speech.phones[1:]):
        if before.ipa or not phone.ipa or phone_class(normalize_ipa(phone.ipa)) == "stops":
            continue
        assert phone.start == before.end
        pause = env[int((before.start + 0.03) * sr) // hop:int(before.end * sr) // hop - 2]
        floor = float(np.median(pause)) if pause.size else 0.0
        if floor > 0.01 * env.max():
            noisy += 1
            continue
        first = int(max(before.start, phone.start - 0.06) * sr) // hop
        over = np.flatnonzero(env[first:] > max(0.02 * env.max(), 4 * floor))
        errors.append((first + over[0]) * hop / sr - phone.start)
    return errors, noisy


@pytest.mark.parametrize("voice", festival.allowed_voices())
def test_festival_phone_times_agree_with_the_audio(voice):
    # After a pause the sound comes back where Festival says the next phone starts (stops are
    # left out: their closure is silent too).
    _needs(voice)
    language = festival.VOICES[voice].language
    texts = [s.replace(" ", ", ", 1) for s in SENTENCES[language]]  # a comma pause inside
    errors, noisy = [], 0
    for speech in festival.synthesize(texts, voice):
        assert speech.sample_rate == 16000 and speech.samples.dtype == np.float32 and len(speech.samples) > 16000
        e, n = _onset_errors(speech)
        errors += e
        noisy += n
    if voice == "hindi_NSK_diphone":
        assert noisy >= 4 and not errors  # the reason it is not measured holds
        return
    assert len(errors) >= 4
    assert float(np.median(np.abs(errors))) <= ONSET_TOLERANCE.get(voice, 0.010), errors


def test_festival_reference_merges_geminates_and_keeps_words():
    _needs("lp_diphone")
    (speech,) = festival.synthesize(["Il gatto dorme sulla sedia."], "lp_diphone")
    utt = festival_reference(speech)
    assert utt.transcript == "il gatːo dɔrme sulːa sɛdja"
    labels = [p.label for p in utt.phones]
    assert labels == split_phones(utt.transcript)
    t = labels.index("tː")
    # The long t starts where Festival's first t does and its closure (silence) follows.
    firsts = [p for p in speech.phones if p.name == "t"]
    assert len(firsts) == 2 and utt.phones[t].start == pytest.approx(firsts[0].start)
    starts = [p.start for p in utt.phones]
    assert starts == sorted(starts) and None not in starts


def test_text_encodings_per_voice():
    # Finnish and Czech read ISO-8859 bytes: their letters come through (no spelled-out
    # UTF-8 bytes), and a letter the encoding cannot hold is an error naming it.
    for voice, text, must in [("suo_fi_lj_diphone", "Pöytä on täynnä.", "ø"), ("czech_ph", "Řeka teče.", "r̝")]:
        _needs(voice)
        (speech,) = festival.synthesize([text], voice)
        assert must[0] in "".join(normalize_ipa(p.ipa) for p in speech.phones) or must == "r̝"
        assert len([p for p in speech.phones if p.ipa]) <= 2 * len(text)
    _needs("suo_fi_lj_diphone")
    with pytest.raises(festival.FestivalError, match="latin-1.*'ж'"):
        festival.synthesize(["Pöytä ж."], "suo_fi_lj_diphone")


def test_missing_festival_or_voice_is_a_clear_error(monkeypatch):
    with pytest.raises(festival.FestivalError, match="unknown Festival voice"):
        festival.synthesize(["x"], "no_such_voice")
    monkeypatch.setattr(festival, "installed_voices", lambda: ())
    with pytest.raises(festival.FestivalError, match="apt-get install festvox-kdlpc16k"):
        festival.synthesize(["Hello."], "ked_diphone")
    monkeypatch.setattr(festival.shutil, "which", lambda name: None)
    with pytest.raises(festival.FestivalError, match="Festival is not installed.*apt-get install festival"):
        festival.synthesize(["Hello."], "ked_diphone")


def test_timestamps_benchmark_prints_both_synthesisers_and_marks_held_out_voices(tmp_path_factory, tmp_path):
    # The benchmark's groups and tables (numbers of a tiny untrained model mean nothing here).
    import json
    import subprocess
    import sys
    from pathlib import Path

    from tiny_models import tiny_model_path

    for name in ("ked_diphone", "kal_diphone"):
        _needs(name)
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "t.json"
    result = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "timestamps.py"), "--model", str(tiny_model_path(tmp_path_factory)),
         "--num", "1", "--voices", "m4", "--festival-voices", "ked_diphone", "kal_diphone", "--aligner", "none",
         "--device", "cpu", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("command: python benchmarks/timestamps.py --model")
    rows = {tuple(line.split("\t")[:2]) for line in lines}
    for group in ("espeak-ng", "festival (allowed, never trained)", "festival (HELD OUT)"):
        assert (group, "forced (CTC)") in rows  # free rows need matched phones, which a tiny model may lack
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["groups"]["festival (HELD OUT)"]["voices"] == ["kal_diphone"]
    assert set(data["per_class"]["espeak-ng"]) <= {"stops", "fricatives", "nasals", "vowels", "approximants", "other"}
    assert "stops" in data["per_class"]["festival (HELD OUT)"]
