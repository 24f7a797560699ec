"""Inventory restriction (`zipa.decoding.inventory`) and top-k alternatives (`zipa.decoding.topk`):
masks change nothing when they allow every phone, restricted searches never emit a token
outside the inventory and equal naive searches over the masked distributions, blank and ▁ stay
allowed, built-in inventories load by language code; top-k alternatives are sorted, start with
the greedy phone and equal a naive float64 computation from the model's distributions."""

import itertools
import json
import math

import pytest
import torch
from tiny_models import SPECIAL_IDS, speechlike, tiny_model_path, write_wav

from zipa.audio.features import compute_fbank
from zipa.cli import main
from zipa.decoding import ctc_greedy_search, ctc_prefix_beam_search, modified_beam_search, transducer_greedy_search
from zipa.decoding.inventory import (
    Inventory,
    available_languages,
    mask_log_probs,
    resolve_language,
    token_mask,
)
from zipa.decoding.topk import ctc_alternatives, top_alternatives
from zipa.decoding.timestamps import WORD_BOUNDARY, Alignment, Interval, is_modifier
from zipa.inference.transcriber import Transcriber
from zipa.inference.writers import Record, format_jsonl, format_tsv
from zipa.text.tokenizer import Tokenizer

BOUNDARY = 3  # ▁
# A restricted inventory for the tiny models: phones spelt with a few of the tokens.
SMALL = ["a", "i", "u", "m", "tʰ", "ç"]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.default()


@pytest.fixture(scope="module")
def ctc(tmp_path_factory):
    return Transcriber.from_checkpoint(tiny_model_path(tmp_path_factory, "ctc"), device="cpu")


@pytest.fixture(scope="module")
def transducer(tmp_path_factory):
    return Transcriber.from_checkpoint(tiny_model_path(tmp_path_factory, "transducer"), device="cpu")


@pytest.fixture(scope="module")
def feats():
    return compute_fbank([speechlike(3.0, 11), speechlike(2.2, 12)])


def _every_phone(tokenizer):
    """The full inventory: every IPA piece of the tokenizer."""
    return [tokenizer.id_to_piece(i) for i in range(4, tokenizer.vocab_size)]


def _ids(spans):
    return [[s.token for s in row] for row in spans]


# --------------------------------------------------------------------------------------- masks


def test_mask_keeps_blank_and_boundary_and_allows_each_character(tokenizer):
    mask = token_mask(Inventory.from_phones(["a", "tʰ"]), tokenizer)
    allowed = {i for i in range(tokenizer.vocab_size) if mask.allowed[i]}
    assert allowed == {0, BOUNDARY, tokenizer.piece_to_id("a"), tokenizer.piece_to_id("t"), tokenizer.piece_to_id("ʰ")}
    assert mask.missing == () and mask.warning() is None and not mask.full
    full = token_mask(_every_phone(tokenizer), tokenizer)
    assert [i for i in range(tokenizer.vocab_size) if not full.allowed[i]] == list(SPECIAL_IDS)


def test_symbols_outside_the_tokenizer_are_reported_not_dropped(tokenizer, ctc, feats):
    mask = token_mask(["a", "ɡ", "t͡ʃ", "ʘ̰"], tokenizer)
    assert dict(mask.missing) == {"ɡ": "g", "t͡ʃ": "tʃ", "ʘ̰": "ʘ"}
    assert all(mask.allowed[tokenizer.piece_to_id(c)] for c in "agtʃʘ")
    assert "ɡ -> g" in mask.warning() and "t͡ʃ -> tʃ" in mask.warning()
    with pytest.warns(UserWarning, match="not in the model's tokenizer.*ɡ -> g"):
        ctc.token_ids(*feats, inventory=["a", "ɡ"])
    with pytest.raises(ValueError, match="none of its 1 phones"):
        token_mask(["\u2193"], tokenizer)


def test_inventory_files(tmp_path):
    path = tmp_path / "inv.txt"
    path.write_text("# my language\na e i\ntʰ\n\nkʷ  # labialised\n", encoding="utf-8")
    assert Inventory.from_file(path).phones == ("a", "e", "i", "tʰ", "kʷ")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no phones"):
        Inventory.from_file(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="cannot read"):
        Inventory.from_file(tmp_path / "absent.txt")


def test_full_mask_is_the_identity():
    log_probs = torch.randn(2, 5, 7).log_softmax(-1)
    assert mask_log_probs(log_probs, torch.ones(7, dtype=torch.bool)) is log_probs
    assert mask_log_probs(log_probs, None) is log_probs


@pytest.mark.parametrize("decoding", ["greedy", "beam"])
@pytest.mark.parametrize("kind", ["ctc", "transducer"])
def test_the_full_inventory_changes_nothing(kind, decoding, ctc, transducer, feats, tokenizer):
    model = ctc if kind == "ctc" else transducer
    plain = model.token_spans(*feats, decoding=decoding, beam=3)
    masked = model.token_spans(*feats, decoding=decoding, beam=3, inventory=_every_phone(tokenizer))
    assert any(_ids(plain)) and _ids(masked) == _ids(plain)
    assert [[(s.start, s.end) for s in row] for row in masked] == [[(s.start, s.end) for s in row] for row in plain]
    for a, b in zip(plain, masked):
        assert [s.confidence for s in b] == pytest.approx([s.confidence for s in a], rel=1e-6)


@pytest.mark.parametrize("decoding", ["greedy", "beam"])
@pytest.mark.parametrize("kind", ["ctc", "transducer"])
def test_tokens_outside_the_inventory_never_appear(kind, decoding, ctc, transducer, feats, tokenizer):
    model = ctc if kind == "ctc" else transducer
    allowed = {tokenizer.piece_to_id(c) for phone in SMALL for c in phone} | {BOUNDARY}
    hyps = _ids(model.token_spans(*feats, decoding=decoding, beam=3, inventory=SMALL))
    emitted = {t for row in hyps for t in row}
    assert emitted <= allowed and len(emitted) > 2
    assert BOUNDARY in emitted  # the word boundary stays allowed
    assert emitted != {t for row in _ids(model.token_spans(*feats, decoding=decoding, beam=3)) for t in row}
    text = model.transcribe([speechlike(2.0, 13)], inventory=SMALL)[0]
    assert set("".join(text)) <= set("".join(SMALL))


def test_ctc_greedy_with_a_mask_is_the_argmax_over_allowed_tokens(ctc, feats, tokenizer):
    with torch.inference_mode():
        encoder_out, lens = ctc.model.forward_encoder(*feats)
        log_probs = ctc.model.ctc_output(encoder_out).double()
    allowed = [i for i in range(tokenizer.vocab_size) if token_mask(SMALL, tokenizer).allowed[i]]
    naive = []
    for row, n in zip(log_probs, lens.tolist()):
        best = [max(allowed, key=lambda v: float(row[t, v])) for t in range(n)]
        naive.append([b for k, b in enumerate(best) if b != 0 and (k == 0 or best[k - 1] != b)])
    assert ctc.token_ids(*feats, inventory=SMALL) == naive
    assert ctc_greedy_search(mask_log_probs(log_probs, token_mask(SMALL, tokenizer)), lens) == naive


def test_ctc_prefix_beam_with_a_mask_finds_the_best_allowed_label_sequence():
    # 5 frames, tokens blank + 5; only {blank, 2, 4} allowed. Exhaustive: sum every allowed path's
    # probability into the label sequence it collapses to.
    g = torch.Generator().manual_seed(3)
    log_probs = (torch.randn(1, 5, 6, generator=g) * 2).log_softmax(-1).double()
    allowed = torch.tensor([True, False, True, False, True, False])
    totals = {}
    for path in itertools.product([0, 2, 4], repeat=5):
        p = math.exp(sum(float(log_probs[0, t, v]) for t, v in enumerate(path)))
        labels = tuple(v for k, v in enumerate(path) if v != 0 and (k == 0 or path[k - 1] != v))
        totals[labels] = totals.get(labels, 0.0) + p
    best = max(totals, key=totals.get)
    masked = mask_log_probs(log_probs, allowed)
    got = ctc_prefix_beam_search(masked, torch.tensor([5]), beam=64, tokens_per_frame=6)
    assert got == [list(best)]
    # the unmasked search prefers a sequence with a forbidden token
    unmasked = ctc_prefix_beam_search(log_probs, torch.tensor([5]), beam=64, tokens_per_frame=6)[0]
    assert unmasked != list(best) and set(unmasked) - {2, 4}


def test_transducer_greedy_with_a_mask_is_the_naive_masked_argmax(transducer, feats, tokenizer):
    model = transducer.model
    mask = token_mask(SMALL, tokenizer)
    allowed = [i for i in range(tokenizer.vocab_size) if mask.allowed[i]]
    with torch.inference_mode():
        encoder_out, lens = model.forward_encoder(*feats)
        got = transducer_greedy_search(model, encoder_out, lens, token_mask=mask)
        assert modified_beam_search(model, encoder_out, lens, beam=1, token_mask=mask) == got
        for i, n in enumerate(lens.tolist()):
            hyp = [-1, 0]
            for t in range(n):
                context = torch.tensor([hyp[-2:]])
                logits = model.joiner(model.joiner.encoder_proj(encoder_out[i, t : t + 1]).unsqueeze(1),
                                      model.joiner.decoder_proj(model.decoder(context, need_pad=False)),
                                      project_input=False)[0, 0].double()
                best = max(allowed, key=lambda v: float(logits[v]))
                if best != 0:
                    hyp.append(best)
            assert got[i] == hyp[2:]


# ------------------------------------------------------------------------- built-in inventories


def test_builtin_inventories_load_by_code():
    languages = available_languages()
    assert len(languages) > 2000 and languages["eng"][0] == "English"
    eng = Inventory.for_language("eng")
    assert {"p", "b", "t", "d", "k", "ʃ", "θ", "ð", "ə"} <= set(eng.phones) and "eng" in eng.name
    assert resolve_language("en-us") == resolve_language("en") == resolve_language("ENG") == "eng"
    assert resolve_language("cmn") == resolve_language("zh") == "cmn"
    assert resolve_language("es") == "spa" and resolve_language("ara") == "arb"
    assert "ʈʂʰ" in Inventory.for_language("cmn").phones
    with pytest.raises(ValueError, match=r"no built-in phone inventory for language 'xx'.*`zipa inventories`"):
        Inventory.for_language("xx")


def test_builtin_inventories_are_in_the_tokenizer(tokenizer):
    for code in ("eng", "cmn", "yor", "fin", "hin"):
        assert token_mask(Inventory.for_language(code), tokenizer).missing == ()


def test_language_code_as_python_inventory(ctc, feats, tokenizer):
    allowed = token_mask(Inventory.for_language("fin"), tokenizer).allowed
    for row in ctc.token_ids(*feats, inventory="fin"):
        assert all(allowed[t] for t in row)


# -------------------------------------------------------------------------------------- top-k


def test_top_alternatives_renormalise_over_non_blank():
    probs = torch.tensor([0.5, 0.1, 0.0, 0.3, 0.1], dtype=torch.float64)
    alts = top_alternatives(probs, 10, blank_id=0)
    assert [t for t, _ in alts] in ([3, 1, 4], [3, 4, 1])  # the zero-probability token is left out
    assert [p for _, p in alts] == pytest.approx([0.6, 0.2, 0.2])


def test_ctc_alternatives_equal_a_naive_average():
    g = torch.Generator().manual_seed(5)
    log_probs = (torch.randn(6, 5, generator=g) * 2).log_softmax(-1)
    got = ctc_alternatives(log_probs, [(1, 4), (5, 6)], k=3)
    for (start, end), alts in zip([(1, 4), (5, 6)], got):
        mean = [sum(math.exp(float(log_probs[t, v])) for t in range(start, end)) / (end - start) for v in range(5)]
        total = sum(mean[1:])
        naive = sorted(((v, mean[v] / total) for v in range(1, 5)), key=lambda x: -x[1])[:3]
        assert [t for t, _ in alts] == [t for t, _ in naive]
        assert [p for _, p in alts] == pytest.approx([p for _, p in naive], rel=1e-12)


def _groups(model, spans):
    groups, open_phone = [], False
    for k, s in enumerate(spans):
        label = model.token_label(s.token)
        if label == WORD_BOUNDARY:
            open_phone = False
        elif is_modifier(label) and open_phone:
            groups[-1].append(k)
        else:
            groups.append([k])
            open_phone = True
    return groups


@pytest.mark.parametrize("inventory", [None, SMALL])
def test_ctc_topk_of_the_model_matches_a_naive_float64_computation(ctc, feats, inventory, tokenizer):
    spans = ctc.token_spans(*feats, topk=4, inventory=inventory)
    assert _ids(spans) == _ids(ctc.token_spans(*feats, inventory=inventory))  # top-k changes no hypothesis
    with torch.inference_mode():
        encoder_out, lens = ctc.model.forward_encoder(*feats)
        log_probs = ctc.model.ctc_output(encoder_out).double()
    allowed = token_mask(inventory or _every_phone(tokenizer), tokenizer).allowed if inventory else None
    checked = 0
    for i, row in enumerate(spans):
        for group in _groups(ctc, row):
            first, last = row[group[0]], row[group[-1]]
            assert all(row[k].alternatives is None for k in group[1:])
            alts = first.alternatives
            probs = log_probs[i].exp()
            if allowed is not None:
                probs = probs * allowed  # the masked, renormalised distribution is proportional
                probs = probs / probs.sum(-1, keepdim=True)
            mean = probs[first.start : last.end].mean(0).tolist()
            non_blank = sum(mean[1:])
            expected = sorted(((v, mean[v] / non_blank) for v in range(1, len(mean)) if mean[v] > 0),
                              key=lambda x: -x[1])[:4]
            # float64 from the model's log-probs; a mask renormalises them in float32 first
            rel = 1e-9 if inventory is None else 1e-6
            assert [p for _, p in alts] == pytest.approx([p for _, p in expected], rel=rel, abs=1e-12)
            assert [p for _, p in alts] == sorted((p for _, p in alts), reverse=True)
            if len(group) == 1:  # one argmax run: the phone itself comes first
                assert alts[0][0] == first.token
            if allowed is not None:
                assert all(allowed[t] for t, _ in alts)
            checked += 1
    assert checked > 5


def test_transducer_topk_is_the_joiner_distribution_at_the_emission(transducer, feats):
    model = transducer.model
    spans = transducer.token_spans(*feats, topk=3)
    with torch.inference_mode():
        encoder_out, _ = model.forward_encoder(*feats)
        for i, row in enumerate(spans):
            history = [-1, 0] + [s.token for s in row]
            for group in _groups(transducer, row):
                u = group[0]
                context = torch.tensor([history[u : u + 2]])
                frame = encoder_out[i, row[u].start : row[u].start + 1]
                logits = model.joiner(model.joiner.encoder_proj(frame).unsqueeze(1),
                                      model.joiner.decoder_proj(model.decoder(context, need_pad=False)),
                                      project_input=False)[0, 0].double()
                probs = logits.softmax(-1).tolist()
                non_blank = 1.0 - probs[0]
                expected = sorted(((v, probs[v] / non_blank) for v in range(1, len(probs))), key=lambda x: -x[1])[:3]
                alts = row[u].alternatives
                assert [t for t, _ in alts] == [t for t, _ in expected]
                # the joiner runs in float32, batched there and one row here
                assert [p for _, p in alts] == pytest.approx([p for _, p in expected], rel=1e-5)
                assert alts[0][0] == row[u].token  # greedy emits the argmax
                assert row[u].confidence == pytest.approx(probs[row[u].token], rel=1e-5)


def test_timestamps_api_carries_alternatives(ctc):
    audio = [speechlike(2.0, 14)]
    plain = ctc.timestamps(audio)[0]
    with_topk = ctc.timestamps(audio, topk=2)[0]
    assert all(p.alternatives is None for p in plain.phones)
    assert [p.label for p in with_topk.phones] == [p.label for p in plain.phones]
    for p in with_topk.phones:
        assert 1 <= len(p.alternatives) <= 2 and all(isinstance(label, str) for label, _ in p.alternatives)
    with pytest.raises(ValueError, match="topk"):
        ctc.timestamps(audio, topk=-1)


def test_writers_add_alternatives_only_when_asked():
    phone = Interval("a", 0.1, 0.2, 0.9, (("a", 0.71234), ("e", 0.2)))
    record = Record("x.wav", 1.0, Alignment("a", [phone], [Interval("a", 0.1, 0.2, 0.9)]))
    obj = json.loads(format_jsonl([record], timestamps=True, alternatives=True))
    assert obj["phones"][0]["alternatives"] == [{"phone": "a", "prob": 0.7123}, {"phone": "e", "prob": 0.2}]
    assert "alternatives" not in json.loads(format_jsonl([record], timestamps=True))["phones"][0]
    tsv = format_tsv([record], timestamps=True, alternatives=True).splitlines()
    assert tsv[0].split("\t")[-1] == "alternatives" and tsv[1].split("\t")[-1] == "a:0.7123 e:0.2000"
    assert format_tsv([record], timestamps=True).splitlines()[0] == "path\tstart\tend\tphone\tconfidence"


# ---------------------------------------------------------------------------------------- CLI


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_inventory_lang_and_topk(capsys, tmp_path, tmp_path_factory):
    wav = write_wav(tmp_path / "a.wav", speechlike(2.0, 15))
    inv = tmp_path / "inv.txt"
    inv.write_text("a i u\nm tʰ ç\nɡ\n", encoding="utf-8")
    model = tiny_model_path(tmp_path_factory, "ctc")
    code, out, err = _cli(capsys, "transcribe", wav, "--model", model, "--inventory", inv, "-q",
                          "-f", "jsonl", "--topk", 2)
    assert code == 0, err
    assert "warning" in err and "ɡ -> g" in err
    record = json.loads(out)
    assert set(record["text"].replace(" ", "")) <= set("aiumtʰçg")
    for phone in record["phones"]:
        probs = [a["prob"] for a in phone["alternatives"]]
        assert 1 <= len(probs) <= 2 and probs == sorted(probs, reverse=True)
    code, out, err = _cli(capsys, "transcribe", wav, "--model", model, "--lang", "fin", "-q", "-f", "tsv", "--topk", 3)
    assert code == 0, err
    assert out.splitlines()[0].endswith("\talternatives") and all(len(l.split("\t")) == 6 for l in out.splitlines())
    code, out, err = _cli(capsys, "transcribe", wav, "--model", model, "--lang", "xx", "-q")
    assert code == 2 and "--lang" in err and "zipa inventories" in err
    code, out, err = _cli(capsys, "transcribe", wav, "--model", model, "--topk", 2, "-q")
    assert code == 2 and "--topk" in err
    out_file = tmp_path / "out.jsonl"
    code, out, err = _cli(capsys, "transcribe", wav, "--model", model, "-q", "-f", "jsonl", "--timestamps",
                          "-o", out_file)
    assert code == 0, err
    code, out, err = _cli(capsys, "transcribe", wav, "--model", model, "-q", "-f", "jsonl", "--topk", 2,
                          "-o", out_file, "--resume")
    assert code == 2 and "--topk" in err
    code, out, err = _cli(capsys, "inventories", "en-us")
    assert code == 0 and out.startswith("eng\t") and " tʃ " in out
    code, out, err = _cli(capsys, "inventories")
    assert code == 0 and "eng\t" in out and len(out.splitlines()) > 2000

