"""Frame alignment and times: CTC runs, transducer emission frames, the frame -> seconds
convention, grouping tokens into phones and words, TextGrid tiers."""

import itertools

import pytest
import torch
from conftest import PARITY
from tiny_models import speechlike, tiny_model_path

from zipa.audio.features import compute_fbank
from zipa.decoding import ctc_greedy_search, transducer_greedy_search
from zipa.decoding.alignment import ctc_forced_align, ctc_greedy_spans, transducer_forced_align
from zipa.decoding.timestamps import (
    FRAME_OFFSET,
    FRAME_START,
    SPIKE_LAG,
    Interval,
    TimedToken,
    build_alignment,
    frame_shift,
    frame_time,
)
from zipa.inference.writers import fill_tier, format_textgrid
from zipa.model.io import load_model
from zipa.text.tokenizer import Tokenizer


def _log_probs(best_path, vocab=6, confident=0.9):
    """(1, T, vocab) log-probs whose argmax follows `best_path`."""
    probs = torch.full((len(best_path), vocab), (1 - confident) / (vocab - 1))
    probs[torch.arange(len(best_path)), torch.tensor(best_path)] = confident
    return probs.log().unsqueeze(0)


def test_ctc_spans_are_the_runs_of_the_greedy_path():
    path = [0, 4, 4, 0, 4, 5, 5, 5, 0, 0, 5]
    log_probs = _log_probs(path)
    (spans,) = ctc_greedy_spans(log_probs, torch.tensor([len(path)]))
    assert [(s.token, s.start, s.end) for s in spans] == [(4, 1, 3), (4, 4, 5), (5, 5, 8), (5, 10, 11)]
    assert all(s.confidence == pytest.approx(0.9) for s in spans)
    assert [s.token for s in spans] == ctc_greedy_search(log_probs, torch.tensor([len(path)]))[0]


def test_ctc_spans_respect_lengths_and_average_the_posterior():
    log_probs = torch.cat([_log_probs([4, 4, 0, 5], confident=0.6), _log_probs([4, 4, 0, 5], confident=0.6)])
    log_probs[0, 1, 4] = torch.tensor(0.8).log()
    spans = ctc_greedy_spans(log_probs, torch.tensor([4, 2]))
    assert [(s.token, s.start, s.end) for s in spans[1]] == [(4, 0, 2)]
    assert spans[0][0].confidence == pytest.approx(0.7)


@pytest.mark.skipif(not (PARITY / "ctc_tiny").is_dir(), reason="../shared/reference/parity is absent")
def test_ctc_spans_give_the_original_greedy_ids():
    e = torch.load(PARITY / "ctc_tiny" / "expected.pt", weights_only=True)
    spans = ctc_greedy_spans(e["ctc_log_probs"], e["encoder_out_lens"])
    assert [[s.token for s in row] for row in spans] == e["token_ids"]


def test_transducer_frames_do_not_change_the_hypotheses(tmp_path_factory):
    model, _ = load_model(tiny_model_path(tmp_path_factory, "transducer"))
    feats, lens = compute_fbank([speechlike(3.0, 1), speechlike(1.7, 2)])
    with torch.inference_mode():
        encoder_out, encoder_out_lens = model.forward_encoder(feats, lens)
        plain = transducer_greedy_search(model, encoder_out, encoder_out_lens)
        hyps, frames, probs = transducer_greedy_search(model, encoder_out, encoder_out_lens, return_frames=True)
    assert hyps == plain and any(hyps)
    for hyp, frame, prob, n in zip(hyps, frames, probs, encoder_out_lens.tolist()):
        assert len(hyp) == len(frame) == len(prob)
        assert frame == sorted(set(frame)) and all(0 <= f < n for f in frame)  # one symbol per frame
        assert all(0 < p <= 1 for p in prob)


def test_frame_times():
    assert frame_shift(1) == pytest.approx(0.02) and frame_shift(2) == pytest.approx(0.04)
    assert frame_time(0, 0.02) == pytest.approx(FRAME_OFFSET) == pytest.approx(FRAME_START - SPIKE_LAG)
    assert FRAME_START == 0.035 and SPIKE_LAG == 0.016  # geometry; lag measured (benchmarks/timestamps.py)
    assert frame_time(10, 0.04) == pytest.approx(0.419)


def test_encoder_frame_j_is_centred_on_fbank_frame_2j_plus_4(tmp_path_factory):
    """The geometry in zipa.decoding.timestamps: the conv front end's output j is centred on fbank
    frame 2j + 4, i.e. (2j + 4.5) * 10 ms = FRAME_START + (j + 0.5) * 20 ms."""
    model, _ = load_model(tiny_model_path(tmp_path_factory, "ctc"))
    x = torch.randn(1, 200, 80, generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([200])
    with torch.no_grad():
        base, _ = model.encoder_embed(x, lens)
        for k in (100, 102, 120):
            bumped = x.clone()
            bumped[0, k] += 5.0
            out, _ = model.encoder_embed(bumped, lens)
            changed = torch.nonzero((out - base).abs().sum(-1)[0] > 1e-6).flatten().tolist()
            centre = (changed[0] + changed[-1]) / 2
            assert centre == (k - 4) / 2
            assert FRAME_START + (centre + 0.5) * 0.02 == pytest.approx((k + 0.5) * 0.01)
            assert frame_time(centre + 0.5, 0.02) == pytest.approx((k + 0.5) * 0.01 - SPIKE_LAG)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.default()


def _tokens(tokenizer, pieces, step=0.1):
    return [
        TimedToken(tokenizer.piece_to_id(p), round(i * step, 3), round(i * step + step / 2, 3), 0.5 + i / 100)
        for i, p in enumerate(pieces)
    ]


def test_modifiers_join_their_phone_and_boundaries_split_words(tokenizer):
    tokens = _tokens(tokenizer, ["▁", "t", "ʰ", "a", "▁", "▁", "k", "ː", "̃", "▁", "ʰ", "i"])
    alignment = build_alignment(tokens, tokenizer.id_to_piece)
    assert [p.label for p in alignment.phones] == ["tʰ", "a", "kː̃", "ʰ", "i"]
    assert [w.label for w in alignment.words] == ["tʰa", "kː̃", "ʰi"]
    assert alignment.text == "tʰa kː̃ ʰi"
    th = alignment.phones[0]
    assert (th.start, th.end) == (tokens[1].start, tokens[2].end)
    assert th.confidence == pytest.approx((tokens[1].confidence + tokens[2].confidence) / 2)
    word = alignment.words[1]
    assert (word.start, word.end) == (tokens[6].start, tokens[8].end)


def test_normalizer_and_clipping(tokenizer):
    tokens = [
        TimedToken(tokenizer.piece_to_id("a"), 0.0, 0.5, 1.0),
        TimedToken(tokenizer.piece_to_id("ʰ"), 0.3, 0.4, 1.0),  # joins "a"
        TimedToken(tokenizer.piece_to_id("b"), 0.45, 0.7, 1.0),
        TimedToken(tokenizer.piece_to_id("c"), 0.9, 1.3, 1.0),
    ]
    alignment = build_alignment(tokens, tokenizer.id_to_piece, duration=1.2, normalize=lambda s: s.replace("ʰ", ""))
    assert [(p.label, p.start, p.end) for p in alignment.phones] == [("a", 0.0, 0.4), ("b", 0.45, 0.7), ("c", 0.9, 1.2)]
    dropped = build_alignment(tokens, tokenizer.id_to_piece, normalize=lambda s: "" if s == "b" else s)
    assert dropped.text == "aʰc"


def test_fill_tier_covers_the_file():
    tier = fill_tier([Interval("a", 0.1, 0.2, 1), Interval("b", 0.2, 0.3, 1), Interval("c", 0.5, 0.9, 1)], 1.0)
    assert [(i.label, i.start, i.end) for i in tier] == [
        ("", 0.0, 0.1), ("a", 0.1, 0.2), ("b", 0.2, 0.3), ("", 0.3, 0.5), ("c", 0.5, 0.9), ("", 0.9, 1.0)
    ]
    assert [(i.label, i.start, i.end) for i in fill_tier([], 2.0)] == [("", 0.0, 2.0)]


def test_textgrid_quotes_labels():
    text = format_textgrid(1.0, {"phones": [Interval('a"b', 0.2, 0.4, 1.0)]})
    assert 'text = "a""b"' in text and "intervals: size = 3" in text


# --- forced alignment of beam-search hypotheses ------------------------------------------------


def test_ctc_forced_align_of_the_greedy_hypothesis_is_the_greedy_path(tmp_path_factory):
    model, _ = load_model(tiny_model_path(tmp_path_factory, "ctc"))
    feats, lens = compute_fbank([speechlike(4.0, 3), speechlike(2.5, 4)])
    with torch.inference_mode():
        encoder_out, encoder_out_lens = model.forward_encoder(feats, lens)
        log_probs = model.ctc_output(encoder_out)
    greedy = ctc_greedy_spans(log_probs, encoder_out_lens)
    for i, n in enumerate(encoder_out_lens.tolist()):
        forced = ctc_forced_align(log_probs[i, :n], [s.token for s in greedy[i]])
        assert [(s.token, s.start, s.end) for s in forced] == [(s.token, s.start, s.end) for s in greedy[i]]
        assert [s.confidence for s in forced] == pytest.approx([s.confidence for s in greedy[i]], rel=1e-5)
        assert forced


def test_ctc_forced_align_puts_a_blank_between_repeats():
    # argmax says "a" over 4 frames, but the hypothesis "a a" needs a blank between the two.
    log_probs = _log_probs([4, 4, 4, 4], confident=0.6)[0]
    spans = ctc_forced_align(log_probs, [4, 4])
    assert [(s.token, s.start, s.end) for s in spans] in ([(4, 0, 1), (4, 2, 4)], [(4, 0, 2), (4, 3, 4)])
    with pytest.raises(ValueError, match="cannot be aligned"):
        ctc_forced_align(log_probs[:2], [4, 4])


def test_transducer_forced_align_is_the_best_alignment(tmp_path_factory):
    model, _ = load_model(tiny_model_path(tmp_path_factory, "transducer"))
    feats, lens = compute_fbank([speechlike(1.0, 5)])
    with torch.inference_mode():
        encoder_out, _ = model.forward_encoder(feats, lens)
        encoder_out = encoder_out[0, :7]
        tokens = [9, 51, 9]
        spans = transducer_forced_align(model, encoder_out, tokens)

        def score(frames):
            total, u = 0.0, 0
            history = [-1, 0] + tokens
            for t in range(encoder_out.shape[0]):
                context = torch.tensor([history[u : u + 2]])
                logits = model.joiner(model.joiner.encoder_proj(encoder_out[t : t + 1]).unsqueeze(1),
                                      model.joiner.decoder_proj(model.decoder(context, need_pad=False)),
                                      project_input=False)
                lp = logits.log_softmax(-1)[0, 0]
                if u < len(tokens) and t in frames and frames.index(t) == u:
                    total += float(lp[tokens[u]])
                    u += 1
                else:
                    total += float(lp[0])
            return total

        best = max(itertools.combinations(range(7), 3), key=lambda f: score(list(f)))
    assert [s.token for s in spans] == tokens
    assert tuple(s.start for s in spans) == best
    assert all(s.end == s.start + 1 and 0 < s.confidence <= 1 for s in spans)
