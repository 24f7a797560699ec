"""zipa/evaluation/{metrics,icefall_files}.py: PER alignment and icefall-style files against hand-worked examples, PFER
against hand-computed panphon feature distances, per-language metrics, atomic writes."""

import json
import math

import pytest

from zipa.evaluation import icefall_files as files
from zipa.evaluation import metrics as ev
from zipa.evaluation.metrics import EvaluationResult as R


@pytest.fixture(scope="module")
def dist():
    """One panphon Distance for the module (building one takes about a second)."""
    return ev.get_distance()


# Hand-worked example used by several tests (character units, spaces ignored):
#   u1  ref a b c d    hyp a x c d e   -> b->x (sub), e inserted           2 errors / 4
#   u2  ref a b b      hyp a b         -> the last b deleted (kaldialign's
#                                         tie-break: deletion at the end)  1 error  / 3
#   u3  ref p a        hyp b a         -> p->b (sub)                       1 error  / 2
# Totals: 4 errors over 9 reference phones = 44.44 %; 1 ins, 1 del, 2 sub; 6 correct.
EXAMPLE = [
    R("u3", "pa", ["ba"], "en"),
    R("u1", "a b c d", ["a", "x", "c", "d", "e"], "en"),
    R("u2", ["ab", "b"], ["ab"], "de"),
]

EXPECTED_ERRS = """\
%PER = 44.44
Errors: 1 insertions, 1 deletions, 2 substitutions, over 9 reference phones (6 correct)
Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, INSERTIONS:, PER-PHONE STATS:

PER-UTT DETAILS: corr or (ref->hyp)  
u1:\ta (b->x) c d (*->e)
u2:\ta b (b->*)
u3:\t(p->b) a

SUBSTITUTIONS: count ref -> hyp
1   p -> b
1   b -> x

DELETIONS: count ref
1   b

INSERTIONS: count hyp
1   e

PER-PHONE STATS: phone  corr tot_errs count_in_ref count_in_hyp
b   1 3 3 2
x   0 1 0 1
p   0 1 1 0
e   0 1 0 1
d   1 0 1 1
c   1 0 1 1
a   3 0 3 3
"""


# ------------------------------------------------------------------------------- units, alignment


def test_phone_units_char_level_like_zipa():
    # ZIPA's pieces are single characters; word boundaries are not scored.
    assert ev.phone_units("wɜːld hɛ") == ["w", "ɜ", "ː", "l", "d", "h", "ɛ"]
    assert ev.phone_units(["wɜːld", "hɛ"]) == ev.phone_units("wɜːld hɛ")
    assert ev.phone_units("\u2581ab \u2581c") == ["a", "b", "c"]
    assert ev.phone_units("") == []


def test_phone_units_segment_attaches_modifiers():
    assert ev.phone_units("tʃʰaːn", "segment") == ["t", "ʃʰ", "aː", "n"]
    assert ev.phone_units("t\u0361ʃa\u0303", "segment") == ["t\u0361ʃ", "a\u0303"]
    with pytest.raises(ValueError):
        ev.phone_units("a", "word")


def test_alignment_and_counts():
    ali = ev.align(list("abcd"), list("axcde"))
    assert ali == [("a", "a"), ("b", "x"), ("c", "c"), ("d", "d"), ("*", "e")]
    c = ev.edit_counts(list("abcd"), list("axcde"))
    assert (c.corr, c.ins, c.dels, c.subs, c.errors, c.ref_len, c.hyp_len) == (3, 1, 0, 1, 2, 4, 5)
    assert ev.align([], list("ab")) == [("*", "a"), ("*", "b")]
    assert ev.align(list("ab"), []) == [("a", "*"), ("b", "*")]
    # Ties: deletion preferred over insertion, substitution over both.
    assert ev.align(list("abb"), list("ab")) == [("a", "a"), ("b", "b"), ("b", "*")]


# ------------------------------------------------------------------------------------- errs file


def test_errs_file_hand_worked(tmp_path):
    path = tmp_path / "errs-test-iter-1-avg-1.txt"
    per = files.write_errs(path, "test-ctc-greedy-search", EXAMPLE)
    assert per == 44.44
    assert path.read_text(encoding="utf-8") == EXPECTED_ERRS


def test_errs_single_utterance_50_percent(tmp_path):
    # ref "a b c d", hyp "a x c d e": 1 sub + 1 ins over 4 reference phones = 50 %.
    per = files.write_errs(tmp_path / "errs.txt", "t", [("u", "a b c d", ["a x c d e"])])
    text = (tmp_path / "errs.txt").read_text(encoding="utf-8").splitlines()
    assert per == 50.0
    assert text[0] == "%PER = 50.00"
    assert text[1] == (
        "Errors: 1 insertions, 0 deletions, 1 substitutions, over 4 reference phones (3 correct)"
    )
    assert "u:\ta (b->x) c d (*->e)" in text


def test_errs_logs_icefall_summary_line(caplog):
    with caplog.at_level("INFO"):
        files.format_errs("test-x", [("u", "abcd", "axcde")])
    assert "[test-x] %PER 50.00% [2 / 4, 1 ins, 0 del, 1 sub ]" in caplog.text


def test_successive_errors_are_merged_as_icefall():
    def line(ref, hyp):
        text, _ = files.format_errs("t", [("u", ref, hyp)], enable_log=False)
        return next(ln for ln in text.splitlines() if ln.startswith("u:\t"))[3:]

    assert line("abc", "axy") == "a (b c->x y)"
    assert line("abcd", "ad") == "a (b c->*) d"
    assert line("ab", "abxy") == "a b (*->x y)"
    assert line("ab", "ab") == "a b"


def test_errs_tables_count_repeats():
    results = [("u1", "pap", "bab"), ("u2", "pa", "ba"), ("u3", "t", "")]
    text, per = files.format_errs("t", results, enable_log=False)
    lines = text.splitlines()
    subs = lines[lines.index("SUBSTITUTIONS: count ref -> hyp") + 1:]
    assert subs[:2] == ["3   p -> b", ""]
    dels = lines[lines.index("DELETIONS: count ref") + 1:]
    assert dels[:2] == ["1   t", ""]
    assert per == round(100 * 4 / 6, 2)


# ---------------------------------------------------------------------------------------- recogs


def test_recogs_format_sorted(tmp_path):
    path = tmp_path / "recogs-test-iter-1-avg-1.txt"
    files.store_recogs(path, EXAMPLE)
    assert path.read_text(encoding="utf-8") == (
        "u1:\tref=['a', 'b', 'c', 'd']\n"
        "u1:\thyp=['a', 'x', 'c', 'd', 'e']\n"
        "u2:\tref=['a', 'b', 'b']\n"
        "u2:\thyp=['a', 'b']\n"
        "u3:\tref=['p', 'a']\n"
        "u3:\thyp=['b', 'a']\n"
    )
    back = files.read_recogs(path)
    assert [r.cut_id for r in back] == ["u1", "u2", "u3"]
    assert back[0].hyp == ["a", "x", "c", "d", "e"]


def test_recogs_keep_diacritics_as_units(tmp_path):
    path = tmp_path / "r.txt"
    files.store_recogs(path, [R("c", "wɜːld", ["wɜld"])])
    assert path.read_text(encoding="utf-8").splitlines()[0] == "c:\tref=['w', 'ɜ', 'ː', 'l', 'd']"


# ------------------------------------------------------------------------------------------ PFER


def test_pfer_identical_is_zero(dist):
    assert ev.pfer("wɜːld", "wɜːld", dist) == 0.0
    assert ev.pfer(["a", "b"], "a b", dist) == 0.0
    assert ev.pfer("", "", dist) == 0.0


def test_pfer_hand_checked(dist):
    # panphon 'spe+' has 24 features. p = [-syl -son +cons -cont -delrel -lat -nas -strid -voi
    # -sg -cg +ant -cor 0distr +lab -hi -lo -back -round -velaric 0tense -long 0hitone 0hireg];
    # b differs only in voi (-1 vs +1): substitution = (|-1 - 1| / 2) / 24 = 1/24.
    assert len(dist.fm.names) == 24
    p = dist.fm.word_to_vector_list("p", numeric=True)[0]
    b = dist.fm.word_to_vector_list("b", numeric=True)[0]
    assert [n for n, x, y in zip(dist.fm.names, p, b) if x != y] == ["voi"]
    assert ev.pfer("b", "p", dist) == pytest.approx(1 / 24, abs=1e-15)
    # Deleting p: 20 specified features cost 1, the 4 unspecified (distr, tense, hitone,
    # hireg) 0.5 each: (20 + 2) / 24. Not normalised by the reference length (as ZIPA).
    assert p.count(0) == 4
    assert ev.pfer("", "p", dist) == pytest.approx(22 / 24, abs=1e-15)
    assert ev.pfer("ba", "pa", dist) == pytest.approx(1 / 24, abs=1e-15)


def test_pfer_g_and_stripped_marks(dist):
    # ASCII g (ZIPA's inventory) scores as ɡ, which panphon knows: g vs k differ in voicing.
    assert ev.pfer("g", "\u0261", dist) == 0.0
    assert ev.pfer("g", "k", dist) == pytest.approx(1 / 24, abs=1e-15)
    # Stress, syllable breaks, tones (letters and digits) and spaces are removed first.
    assert ev.pfer("ˈpa.ta", "pata", dist) == 0.0
    assert ev.pfer("ma˥˩", "ma", dist) == 0.0
    assert ev.pfer("ma55 ba", "maba", dist) == 0.0


def test_fast_distance_equals_panphon(dist):
    pairs = [("wɜːldhɛloʊ", "wɔldhəlo"), ("tʃʰaːn", "ʃan"), ("", "ŋaː"), ("ã", ""),
             ("kʷəl̴", "ɡulə˞"), ("ɹ̩bβθ", "rbvθð")]
    for hyp, ref in pairs:
        assert ev.feature_edit_distance(hyp, ref, dist) == dist.feature_edit_distance(hyp, ref)


def test_pfer_stats_hand_computed():
    s = ev.pfer_stats([3.0, 0.0, 2.0, 1.0])
    # mean 1.5; median 1.5; q75 = 2.25, q25 = 0.75 (linear) -> IQR 1.5; std sqrt(1.25)
    assert s == {"PFER mean": 1.5, "PFER median": 1.5, "PFER IQR": 1.5, "PFER std": 1.118}
    assert ev.pfer_stats([])["PFER mean"] is None


# --------------------------------------------------------------------------------------- metrics


def test_compute_metrics_overall_and_per_language(dist):
    m = ev.compute_metrics(EXAMPLE, distance=dist)
    o = m["overall"]
    assert (o["num_utts"], o["ref_phones"], o["hyp_phones"]) == (3, 9, 9)
    assert (o["corr"], o["ins"], o["del"], o["sub"], o["errors"]) == (6, 1, 1, 2, 4)
    assert o["PER"] == 44.44
    assert set(m["per_language"]) == {"de", "en"}
    en, de = m["per_language"]["en"], m["per_language"]["de"]
    assert (en["num_utts"], en["ref_phones"], en["errors"], en["PER"]) == (2, 6, 3, 50.0)
    assert (de["num_utts"], de["ref_phones"], de["errors"], de["PER"]) == (1, 3, 1, 33.33)
    # u3's PFER is 1/24 (p->b); the 'en' mean is over u1 and u3.
    u1 = ev.pfer(EXAMPLE[1].hyp, EXAMPLE[1].ref, dist)
    assert en["PFER mean"] == round((u1 + 1 / 24) / 2, 3)
    # A mapping overrides the results' own languages.
    m2 = ev.compute_metrics(EXAMPLE, languages={"u2": "en"}, distance=dist)
    assert list(m2["per_language"]) == ["en"]
    assert m2["per_language"]["en"]["PER"] == 44.44


def test_compute_metrics_pfer_stats(dist):
    m = ev.compute_metrics([("u1", "pa", "ba"), ("u2", "pa", "pa")], distance=dist)
    o = m["overall"]
    # PFERs 1/24 and 0: mean = median = 1/48, IQR = 1/48 (0.75*1/24 - 0.25*1/24), std 1/48.
    assert o["PFER mean"] == o["PFER median"] == o["PFER IQR"] == o["PFER std"] == 0.021
    assert m["per_language"] == {}


def test_metrics_json_and_summary_table(tmp_path, dist):
    m = ev.compute_metrics(EXAMPLE, distance=dist)
    path = tmp_path / "metrics.json"
    files.write_metrics_json(path, m)
    assert json.loads(path.read_text(encoding="utf-8")) == m
    table = ev.summarise_table({"test": m, "held-out": ev.compute_metrics([], distance=dist)})
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["test", "set", "utts", "phones"]
    assert lines[2].split()[:4] == ["test", "3", "9", "44.44"]
    assert any(ln.split()[:2] == ["en", "2"] and "50.00" in ln for ln in lines)
    assert lines[-1].split()[:4] == ["held-out", "0", "0", "-"]


def test_save_results_zipa_names(tmp_path, dist):
    out = files.save_results(tmp_path, "test", "iter-10-avg-2", {"ctc-greedy-search": EXAMPLE})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "errs-test-iter-10-avg-2.txt",
        "metrics-test-iter-10-avg-2.json",
        "recogs-test-iter-10-avg-2.txt",
        "wer-summary-test-iter-10-avg-2.txt",
    ]
    assert (tmp_path / "wer-summary-test-iter-10-avg-2.txt").read_text() == (
        "settings\tPER\nctc-greedy-search\t44.44\n"
    )
    assert out["ctc-greedy-search"]["overall"]["PER"] == 44.44
    assert (tmp_path / "errs-test-iter-10-avg-2.txt").read_text(encoding="utf-8") == EXPECTED_ERRS


# ---------------------------------------------------------------------------------------- atomic


def test_atomic_writes_leave_no_temp_files(tmp_path, dist):
    files.store_recogs(tmp_path / "recogs.txt", EXAMPLE)
    files.write_errs(tmp_path / "errs.txt", "t", EXAMPLE, enable_log=False)
    files.write_metrics_json(tmp_path / "m.json", ev.compute_metrics(EXAMPLE, distance=dist))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["errs.txt", "m.json", "recogs.txt"]
    # A failing write leaves the previous file as it was, and no temporary file.
    before = (tmp_path / "m.json").read_text()
    with pytest.raises(ValueError):
        files.write_metrics_json(tmp_path / "m.json", {"PER": math.nan})
    with pytest.raises(TypeError):
        files.store_recogs(tmp_path / "recogs.txt", [object()])
    assert (tmp_path / "m.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["errs.txt", "m.json", "recogs.txt"]
