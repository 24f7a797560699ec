"""CTC prefix beam search and transducer modified beam search against known answers.

The references are brute-force enumerations of every alignment in float64 on tiny problems:
- CTC: a label sequence's probability sums over all frame paths collapsing to it;
- transducer (at most one symbol per frame): a sequence's probability sums over all choices of
  blank-or-token per frame that spell it, each token conditioned on the previous one.
"""

import itertools
import math
from collections import defaultdict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import PARITY, needs_parity

from zipa.decoding import ctc_greedy_search, ctc_prefix_beam_search, modified_beam_search, transducer_greedy_search
from zipa.model.decoder import Decoder, Joiner


@pytest.fixture(autouse=True)
def one_thread():
    """The searches run many tiny ops; thread hand-offs would dominate them on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _logsumexp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


# ---------------------------------------------------------------- CTC


def ctc_sequence_log_probs(log_probs):
    """{label sequence: log P} for one utterance (T, V), blank 0, summing over all V**T paths."""
    lp = log_probs.double().tolist()
    paths = defaultdict(list)
    for path in itertools.product(range(len(lp[0])), repeat=len(lp)):
        labels = [v for i, v in enumerate(path) if v != 0 and (i == 0 or path[i - 1] != v)]
        paths[tuple(labels)].append(sum(lp[t][v] for t, v in enumerate(path)))
    return {labels: _logsumexp(scores) for labels, scores in paths.items()}


def test_ctc_prefix_beam_agrees_with_greedy_when_one_path_dominates():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 20, 6, generator=g)
    logits.scatter_add_(-1, torch.randint(0, 6, (3, 20, 1), generator=g), torch.full((3, 20, 1), 10.0))
    log_probs, lengths = logits.log_softmax(-1), torch.tensor([20, 17, 9])
    assert ctc_prefix_beam_search(log_probs, lengths) == ctc_greedy_search(log_probs, lengths)


def test_ctc_prefix_beam_finds_the_most_probable_labelling_not_the_best_path():
    # Best path: blank x3 -> "". But P("a") sums 6 paths (a--, -a-, --a, aa-, -aa, aaa) = 0.31.
    log_probs = torch.tensor([[0.4, 0.35, 0.25]] * 3).log()
    exact = ctc_sequence_log_probs(log_probs)
    assert max(exact, key=exact.get) == (1,)
    assert exact[(1,)] > exact[()]
    lengths = torch.tensor([3])
    assert ctc_greedy_search(log_probs[None], lengths) == [[]]
    assert ctc_prefix_beam_search(log_probs[None], lengths, beam=4) == [[1]]


def test_ctc_prefix_beam_equals_brute_force_on_random_cases():
    """With a beam holding every possible prefix (31 for T=4, two labels) the search is exact."""
    g = torch.Generator().manual_seed(1)
    greedy_was_wrong = 0
    for _ in range(30):
        log_probs = (1.5 * torch.randn(4, 3, generator=g)).log_softmax(-1)
        exact = ctc_sequence_log_probs(log_probs)
        best = list(max(exact, key=exact.get))
        assert ctc_prefix_beam_search(log_probs[None], torch.tensor([4]), beam=32, tokens_per_frame=3) == [best]
        greedy_was_wrong += ctc_greedy_search(log_probs[None], torch.tensor([4])) != [best]
    assert greedy_was_wrong > 0  # the cases do separate the two searches


def _logaddexp(a, b):
    return _logsumexp([a, b]) if max(a, b) > -math.inf else -math.inf


def ctc_prefix_reference(log_probs, beam):
    """A plain dict-of-prefixes prefix beam search with icefall's pruning: the `beam` best
    tokens per frame, then the `beam` best prefixes (by P(blank end) + P(token end))."""
    hyps = {(): (0.0, -math.inf)}
    for frame in log_probs.double().tolist():
        tokens = sorted(range(len(frame)), key=lambda v: -frame[v])[:beam]
        new = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (pb, pnb) in hyps.items():
            total = _logaddexp(pb, pnb)
            for c in tokens:
                if c == 0:
                    new[prefix][0] = _logaddexp(new[prefix][0], total + frame[c])
                elif prefix and prefix[-1] == c:
                    new[prefix][1] = _logaddexp(new[prefix][1], pnb + frame[c])
                    new[prefix + (c,)][1] = _logaddexp(new[prefix + (c,)][1], pb + frame[c])
                else:
                    new[prefix + (c,)][1] = _logaddexp(new[prefix + (c,)][1], total + frame[c])
        hyps = dict(sorted(new.items(), key=lambda kv: -_logaddexp(*kv[1]))[:beam])
    return list(max(hyps, key=lambda prefix: _logaddexp(*hyps[prefix])))


def test_ctc_prefix_beam_equals_a_dict_reference_at_a_narrow_beam():
    """Pruning (tokens per frame, prefixes per frame) as icefall's, on longer random inputs."""
    g = torch.Generator().manual_seed(7)
    log_probs = torch.randn(6, 30, 6, generator=g).mul(1.5).log_softmax(-1)
    lengths = torch.tensor([30, 25, 30, 12, 18, 30])
    for beam in (2, 3, 4):
        expected = [ctc_prefix_reference(log_probs[i, :n], beam) for i, n in enumerate(lengths.tolist())]
        assert ctc_prefix_beam_search(log_probs, lengths, beam=beam) == expected


def test_ctc_prefix_beam_respects_lengths_in_a_batch():
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([12, 5, 0, 9])
    log_probs = torch.randn(4, 12, 7, generator=g).mul(2).log_softmax(-1)
    # Padding frames confidently say token 3: they must not leak into the results.
    for i, n in enumerate(lengths.tolist()):
        log_probs[i, n:] = F.one_hot(torch.tensor(3), 7).mul(20.0).log_softmax(-1)
    batched = ctc_prefix_beam_search(log_probs, lengths, beam=3)
    alone = [ctc_prefix_beam_search(log_probs[i : i + 1, :n], torch.tensor([n]), beam=3)[0] for i, n in enumerate(lengths.tolist())]
    assert batched == alone
    assert batched[2] == []


# ---------------------------------------------------------------- transducer


class TableDecoder(nn.Module):
    """Stateless decoder of context 1: the one-hot of the previous token."""

    blank_id = 0
    context_size = 1

    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, y, need_pad=False):
        return F.one_hot(y[:, -1:].clamp(min=0), self.vocab_size).double()


class TableJoiner(nn.Module):
    """logits = table[frame, previous token]; the encoder output is the one-hot frame id."""

    def __init__(self, table):
        super().__init__()
        self.table = table.double()  # (frames, vocab, vocab)
        self.encoder_proj = nn.Identity()
        self.decoder_proj = nn.Identity()

    def forward(self, encoder_out, decoder_out, project_input=False):
        return torch.einsum("...f,...u,fuv->...v", encoder_out.double(), decoder_out.double(), self.table)


class TableTransducer(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.decoder = TableDecoder(table.shape[-1])
        self.joiner = TableJoiner(table)


def table_encoder_out(frame_ids, num_frames):
    """(batch, T, num_frames) one-hot frame ids from a list of per-utterance id lists."""
    width = max(len(ids) for ids in frame_ids)
    out = torch.zeros(len(frame_ids), width, num_frames, dtype=torch.float64)
    for i, ids in enumerate(frame_ids):
        out[i, : len(ids)] = F.one_hot(torch.tensor(ids), num_frames).double()
    return out, torch.tensor([len(ids) for ids in frame_ids])


def transducer_sequence_log_probs(table, frame_ids, blank_id=0):
    """{sequence: log P} summing over every blank-or-token choice per frame (V**T alignments)."""
    lp = table.double().log_softmax(-1).tolist()
    paths = defaultdict(list)
    for path in itertools.product(range(len(lp[0][0])), repeat=len(frame_ids)):
        previous, sequence, score = blank_id, [], 0.0
        for frame, token in zip(frame_ids, path):
            score += lp[frame][previous][token]
            if token != blank_id:
                sequence.append(token)
                previous = token
        paths[tuple(sequence)].append(score)
    return {sequence: _logsumexp(scores) for sequence, scores in paths.items()}


def test_transducer_beam_equals_greedy_when_one_path_dominates():
    g = torch.Generator().manual_seed(3)
    table = torch.randn(30, 1, 6, generator=g).expand(30, 6, 6).clone()  # ignores the decoder
    table.scatter_add_(-1, torch.randint(0, 6, (30, 6, 1), generator=g), torch.full((30, 6, 1), 12.0))
    model = TableTransducer(table)
    encoder_out, lengths = table_encoder_out([list(range(0, 12)), list(range(12, 30)), list(range(20, 25))], 30)
    greedy = transducer_greedy_search(model, encoder_out, lengths)
    assert modified_beam_search(model, encoder_out, lengths, beam=4) == greedy
    assert modified_beam_search(model, encoder_out, lengths, beam=4, length_norm=False) == greedy


def test_transducer_beam_beats_greedy_on_a_hand_built_joiner():
    # Frame 0: a (0.5) narrowly beats b (0.45). Frame 1: after a, everything is uncertain;
    # after b, blank is certain. Greedy commits to a: P("a") ~ 0.17; the beam finds "b" ~ 0.45.
    p = torch.full((2, 3, 3), 1 / 3)
    p[0, 0] = torch.tensor([0.05, 0.5, 0.45])
    p[1, 1] = torch.tensor([0.34, 0.33, 0.33])
    p[1, 2] = torch.tensor([0.98, 0.01, 0.01])
    table = p.log()
    exact = transducer_sequence_log_probs(table, [0, 1])
    assert max(exact, key=exact.get) == (2,)
    model = TableTransducer(table)
    encoder_out, lengths = table_encoder_out([[0, 1]], 2)
    greedy = transducer_greedy_search(model, encoder_out, lengths)
    assert greedy == [[1]] and exact[(1,)] < exact[(2,)] - 0.5
    assert modified_beam_search(model, encoder_out, lengths, beam=4, length_norm=False) == [[2]]
    assert modified_beam_search(model, encoder_out, lengths, beam=4) == [[2]]


def test_transducer_beam_equals_brute_force_on_random_cases():
    """A beam holding every (hypothesis, token) pair (at most 7 x 3 for T=3) is exact."""
    g = torch.Generator().manual_seed(4)
    greedy_was_wrong = 0
    for _ in range(30):
        table = 1.5 * torch.randn(3, 3, 3, generator=g)
        exact = transducer_sequence_log_probs(table, [0, 1, 2])
        model = TableTransducer(table)
        encoder_out, lengths = table_encoder_out([[0, 1, 2]], 3)
        best = max(exact, key=exact.get)
        assert modified_beam_search(model, encoder_out, lengths, beam=32, length_norm=False) == [list(best)]
        # icefall's final choice normalises by len(ys), which counts the context (1 here).
        best_normalised = max(exact, key=lambda s: exact[s] / (1 + len(s)))
        assert modified_beam_search(model, encoder_out, lengths, beam=32) == [list(best_normalised)]
        greedy_was_wrong += transducer_greedy_search(model, encoder_out, lengths) != [list(best)]
    assert greedy_was_wrong > 0


def modified_beam_reference(table, frame_ids, beam, blank_id=0):
    """icefall's modified beam search written with dicts: the `beam` best (hypothesis, token)
    pairs, then merging of equal sequences, and the final length-normalised choice."""
    lp = table.double().log_softmax(-1).tolist()
    hyps = {(): 0.0}
    for frame in frame_ids:
        pairs = [
            (score + lp[frame][sequence[-1] if sequence else blank_id][token], sequence, token)
            for sequence, score in hyps.items()
            for token in range(len(lp[0][0]))
        ]
        hyps = {}
        for score, sequence, token in sorted(pairs, key=lambda pair: -pair[0])[:beam]:
            key = sequence + (token,) if token != blank_id else sequence
            hyps[key] = _logaddexp(hyps.get(key, -math.inf), score)
    return list(max(hyps, key=lambda sequence: hyps[sequence] / (1 + len(sequence))))


def test_transducer_beam_equals_a_dict_reference_at_a_narrow_beam():
    g = torch.Generator().manual_seed(8)
    table = 1.5 * torch.randn(60, 5, 5, generator=g)
    model = TableTransducer(table)
    frame_ids = [list(range(0, 20)), list(range(20, 32)), list(range(32, 60))]
    encoder_out, lengths = table_encoder_out(frame_ids, 60)
    for beam in (2, 3, 4):
        expected = [modified_beam_reference(table, ids, beam) for ids in frame_ids]
        assert modified_beam_search(model, encoder_out, lengths, beam=beam) == expected


def test_transducer_batch_with_unequal_lengths_equals_one_by_one():
    g = torch.Generator().manual_seed(5)
    table = 2 * torch.randn(40, 5, 5, generator=g)
    model = TableTransducer(table)
    frame_ids = [list(range(0, 9)), list(range(9, 30)), list(range(30, 33)), list(range(33, 40))]
    encoder_out, lengths = table_encoder_out(frame_ids, 40)
    encoder_out[0, 9:, 5] = 1.0  # padding frames that would emit if they were read
    for beam in (1, 4):
        batched = modified_beam_search(model, encoder_out, lengths, beam=beam)
        alone = [modified_beam_search(model, *table_encoder_out([ids], 40), beam=beam)[0] for ids in frame_ids]
        assert batched == alone
    assert modified_beam_search(model, encoder_out, lengths, beam=1) == transducer_greedy_search(model, encoder_out, lengths)


def test_transducer_beam_with_the_real_decoder_and_joiner():
    """Context size 2 (with its -1 start slot), projections applied once: beam=1 is greedy."""
    torch.manual_seed(6)
    model = nn.Module()
    model.decoder = Decoder(vocab_size=9, decoder_dim=16, blank_id=0, context_size=2)
    model.joiner = Joiner(encoder_dim=12, decoder_dim=16, joiner_dim=16, vocab_size=9)
    with torch.no_grad():
        model.joiner.output_linear.weight.mul_(8.0)
    model.eval()
    encoder_out, lengths = torch.randn(3, 25, 12), torch.tensor([25, 11, 18])
    greedy = transducer_greedy_search(model, encoder_out, lengths)
    assert modified_beam_search(model, encoder_out, lengths, beam=1) == greedy
    assert sum(map(len, greedy)) > 0
    batched = modified_beam_search(model, encoder_out, lengths, beam=4)
    alone = [modified_beam_search(model, encoder_out[i : i + 1, :n], lengths[i : i + 1], beam=4)[0] for i, n in enumerate(lengths.tolist())]
    assert batched == alone


@needs_parity
def test_transducer_fixture_beam_one_is_greedy():
    from zipa.inference.zipa_api import initialize_model

    folder = PARITY / "transducer_tiny"
    model = initialize_model(folder / "model.pth", device="cpu").model
    expected = torch.load(folder / "expected.pt", weights_only=True)
    with torch.inference_mode():
        encoder_out, lengths = model.forward_encoder(expected["feats"], expected["feat_lens"])
        assert modified_beam_search(model, encoder_out, lengths, beam=1) == expected["token_ids"]
        beam4 = modified_beam_search(model, encoder_out, lengths, beam=4)
    assert all(len(hyp) > 0 for hyp in beam4)
