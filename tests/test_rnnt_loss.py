"""The pure-PyTorch RNN-T losses (zipa.losses) against naive float64 dynamic programmes."""

import math

import pytest
import torch

from zipa.losses import (
    do_rnnt_pruning,
    get_rnnt_logprobs,
    get_rnnt_prune_ranges,
    mutual_information_recursion,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_loss_smoothed,
)

BLANK = 0
F64 = torch.float64


def _logadd(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def naive_transducer_logprob(scores, labels, blank=BLANK, delay_penalty=0.0) -> float:
    """log P(labels) for one utterance by plain loops over frames t and label positions u.

    scores[t][u][c]: log-prob of emitting c on frame t after u labels (T x (U+1) x C nested
    lists). A blank moves to frame t+1, label labels[u] moves to u+1 on the same frame; the
    path ends with a blank on the last frame. ``delay_penalty`` adds
    ``delay_penalty * ((T - 1) / 2 - t)`` to each label emitted on frame t.
    """
    T, U = len(scores), len(labels)
    alpha = [[-math.inf] * (U + 1) for _ in range(T)]
    for t in range(T):
        for u in range(U + 1):
            if t == 0 and u == 0:
                alpha[t][u] = 0.0
                continue
            a = -math.inf
            if t > 0:
                a = _logadd(a, alpha[t - 1][u] + scores[t - 1][u][blank])
            if u > 0:
                emit = scores[t][u - 1][labels[u - 1]] + delay_penalty * ((T - 1) / 2 - t)
                a = _logadd(a, alpha[t][u - 1] + emit)
            alpha[t][u] = a
    return alpha[T - 1][U] + scores[T - 1][U][blank]


def naive_losses(log_probs, symbols, s_lens, t_lens, delay_penalty=0.0):
    """Per-utterance -log P from a (B, T, S+1, C) tensor of log-probs (not renormalised)."""
    out = []
    for b in range(log_probs.shape[0]):
        T, U = int(t_lens[b]), int(s_lens[b])
        scores = log_probs[b, :T, : U + 1].tolist()
        out.append(-naive_transducer_logprob(scores, symbols[b, :U].tolist(), delay_penalty=delay_penalty))
    return torch.tensor(out, dtype=F64)


def make_batch(seed, t_lens, s_lens, C=6, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    B, T, S = len(t_lens), max(t_lens), max(s_lens)
    symbols = torch.randint(1, C, (B, S), generator=g)
    for b, s in enumerate(s_lens):
        symbols[b, s:] = 0
    boundary = torch.zeros(B, 4, dtype=torch.int64)
    boundary[:, 2] = torch.tensor(s_lens)
    boundary[:, 3] = torch.tensor(t_lens)
    lm = torch.randn(B, S + 1, C, generator=g, dtype=dtype)
    am = torch.randn(B, T, C, generator=g, dtype=dtype)
    logits = 1.5 * torch.randn(B, T, S + 1, C, generator=g, dtype=dtype)
    return symbols, boundary, lm, am, logits


CASES = [
    # (t_lens, s_lens): unequal lengths, an empty label sequence, more labels than frames
    ([7, 5, 3], [4, 2, 0]),
    ([2, 6], [4, 3]),
    ([4], [3]),
]


# --------------------------------------------------------------------------------------------
# the recursion itself


def naive_mutual_information(px, py, boundary):
    out = []
    for b in range(px.shape[0]):
        s0, t0, s1, t1 = boundary[b].tolist()
        x, y = px[b].tolist(), py[b].tolist()
        p = {}
        for s in range(s0, s1 + 1):
            for t in range(t0, t1 + 1):
                if (s, t) == (s0, t0):
                    p[s, t] = 0.0
                    continue
                a = -math.inf
                if s > s0:
                    a = _logadd(a, p[s - 1, t] + x[s - 1][t])
                if t > t0:
                    a = _logadd(a, p[s, t - 1] + y[s][t - 1])
                p[s, t] = a
        out.append(p[s1, t1])
    return torch.tensor(out, dtype=F64)


def test_mutual_information_matches_naive_recursion_and_autograd():
    g = torch.Generator().manual_seed(0)
    B, S, T = 4, 5, 7
    px = torch.randn(B, S, T + 1, generator=g, dtype=F64, requires_grad=True)
    py = torch.randn(B, S + 1, T, generator=g, dtype=F64, requires_grad=True)
    # full lattice, a shorter one, one starting off the origin, an empty one
    boundary = torch.tensor([[0, 0, S, T], [0, 0, 3, 4], [1, 2, 4, 6], [2, 3, 2, 3]])
    scores = mutual_information_recursion(px, py, boundary)
    torch.testing.assert_close(scores, naive_mutual_information(px.detach(), py.detach(), boundary))
    assert scores[3].item() == 0.0

    # return_grad gives d(scores.sum())/d(px, py), computed during the forward call
    _, (px_grad, py_grad) = mutual_information_recursion(px, py, boundary, return_grad=True)
    ref_px, ref_py = torch.autograd.grad(scores.sum(), [px, py])
    torch.testing.assert_close(px_grad, ref_px)
    torch.testing.assert_close(py_grad, ref_py)
    # occupation probabilities: every path crosses each anti-diagonal of its region once
    for b in range(B):
        s0, t0, s1, t1 = boundary[b].tolist()
        steps = px_grad[b].sum() + py_grad[b].sum()
        assert math.isclose(steps.item(), (s1 - s0) + (t1 - t0), rel_tol=1e-9)
    assert px_grad[1, 3:].abs().sum() == 0 and py_grad[1, :, 4:].abs().sum() == 0  # outside region


def test_mutual_information_gradcheck():
    g = torch.Generator().manual_seed(1)
    B, S, T = 3, 3, 4
    px = torch.randn(B, S, T + 1, generator=g, dtype=F64, requires_grad=True)
    py = torch.randn(B, S + 1, T, generator=g, dtype=F64, requires_grad=True)
    boundary = torch.tensor([[0, 0, 3, 4], [0, 0, 2, 3], [1, 1, 3, 4]])
    assert torch.autograd.gradcheck(lambda x, y: mutual_information_recursion(x, y, boundary), (px, py))
    assert torch.autograd.gradcheck(lambda x, y: mutual_information_recursion(x, y), (px, py))


def test_mutual_information_float32_close_to_float64():
    g = torch.Generator().manual_seed(2)
    B, S, T = 2, 30, 80
    px = torch.randn(B, S, T + 1, generator=g, dtype=F64) - 2
    py = torch.randn(B, S + 1, T, generator=g, dtype=F64) - 2
    s64, (gx64, gy64) = mutual_information_recursion(px, py, return_grad=True)
    s32, (gx32, gy32) = mutual_information_recursion(px.float(), py.float(), return_grad=True)
    torch.testing.assert_close(s32.double(), s64, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(gx32.double(), gx64, rtol=0, atol=1e-4)
    torch.testing.assert_close(gy32.double(), gy64, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------------
# full and simple losses


@pytest.mark.parametrize("t_lens,s_lens", CASES)
def test_full_loss_matches_naive(t_lens, s_lens):
    symbols, boundary, _, _, logits = make_batch(10, t_lens, s_lens)
    expected = naive_losses(logits.log_softmax(-1), symbols, s_lens, t_lens)
    loss = rnnt_loss(logits, symbols, BLANK, boundary, reduction="none")
    torch.testing.assert_close(loss, expected)
    if len(set(t_lens)) == 1 and len(set(s_lens)) == 1:
        torch.testing.assert_close(rnnt_loss(logits, symbols, BLANK, None, reduction="none"), expected)
    # reductions
    torch.testing.assert_close(rnnt_loss(logits, symbols, BLANK, boundary, reduction="sum"), expected.sum())
    torch.testing.assert_close(rnnt_loss(logits, symbols, BLANK, boundary, reduction="mean"), expected.mean())
    torch.testing.assert_close(rnnt_loss(logits, symbols, BLANK, boundary), expected.mean())


def test_delay_penalty_matches_naive():
    t_lens, s_lens = [6, 4], [3, 2]
    symbols, boundary, _, _, logits = make_batch(11, t_lens, s_lens)
    expected = naive_losses(logits.log_softmax(-1), symbols, s_lens, t_lens, delay_penalty=0.3)
    loss = rnnt_loss(logits, symbols, BLANK, boundary, delay_penalty=0.3, reduction="none")
    torch.testing.assert_close(loss, expected)


def test_full_loss_gradcheck():
    symbols, boundary, _, _, logits = make_batch(12, [3, 2], [2, 1], C=4)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: rnnt_loss(x, symbols, BLANK, boundary, reduction="none"), (logits,))
    # padded frames and label positions get no gradient
    rnnt_loss(logits, symbols, BLANK, boundary, reduction="sum").backward()
    assert logits.grad[1, 2:].abs().sum() == 0 and logits.grad[1, :, 2:].abs().sum() == 0


@pytest.mark.parametrize("t_lens,s_lens", CASES)
def test_simple_loss_is_full_loss_of_additive_joiner(t_lens, s_lens):
    symbols, boundary, lm, am, _ = make_batch(13, t_lens, s_lens)
    full = rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, BLANK, boundary, reduction="none")
    simple = rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="none")
    torch.testing.assert_close(simple, full)
    smoothed0 = rnnt_loss_smoothed(lm, am, symbols, BLANK, 0.0, 0.0, boundary, reduction="none")
    torch.testing.assert_close(smoothed0, full)


def smoothed_reference(lm, am, lm_only_scale, am_only_scale):
    """(B, T, S+1, C) interpolated log-probs of the smoothed simple loss, straight from its
    definition: joint softmax(lm + am), LM-only softmax(lm), and AM-only softmax(am + log u)
    with u the label model's softmax averaged over every (b, s) position."""
    joint = (lm.unsqueeze(1) + am.unsqueeze(2)).log_softmax(-1)  # (B, T, S+1, C)
    lm_only = lm.log_softmax(-1).unsqueeze(1)  # (B, 1, S+1, C)
    unigram = lm.softmax(-1).mean(dim=(0, 1))
    am_only = (am + unigram.log()).log_softmax(-1).unsqueeze(2)  # (B, T, 1, C)
    return (1 - lm_only_scale - am_only_scale) * joint + lm_only_scale * lm_only + am_only_scale * am_only


@pytest.mark.parametrize("t_lens,s_lens", CASES)
@pytest.mark.parametrize("scales", [(0.25, 0.0), (0.1, 0.2)])
def test_smoothed_loss_matches_definition(t_lens, s_lens, scales):
    symbols, boundary, lm, am, _ = make_batch(14, t_lens, s_lens)
    expected = naive_losses(smoothed_reference(lm, am, *scales), symbols, s_lens, t_lens)
    loss = rnnt_loss_smoothed(lm, am, symbols, BLANK, *scales, boundary=boundary, reduction="none")
    torch.testing.assert_close(loss, expected)


def test_smoothed_loss_gradcheck_and_return_grad():
    symbols, boundary, lm, am, _ = make_batch(15, [4, 3], [2, 1], C=4)
    lm.requires_grad_(True)
    am.requires_grad_(True)
    fn = lambda l, a: rnnt_loss_smoothed(l, a, symbols, BLANK, 0.2, 0.1, boundary, reduction="none")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (lm, am))

    # return_grad: the derivatives of -loss.sum() (reduction "none") w.r.t. the lattice
    loss, (px_grad, py_grad) = rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="sum", return_grad=True)
    px, py = get_rnnt_logprobs(lm.detach(), am.detach(), symbols, BLANK, boundary)
    px.requires_grad_(True)
    py.requires_grad_(True)
    scores = mutual_information_recursion(px, py, boundary)
    torch.testing.assert_close(-scores.sum(), loss)
    ref_px, ref_py = torch.autograd.grad(scores.sum(), [px, py])
    torch.testing.assert_close(px_grad, ref_px)
    torch.testing.assert_close(py_grad, ref_py)


# --------------------------------------------------------------------------------------------
# pruning


def _pipeline(seed, t_lens, s_lens, s_range, C=6, dim=5):
    """icefall's pruned-loss steps on random projections; returns the pruned loss, the full
    loss of the same joiner and the ranges."""
    symbols, boundary, lm, am, _ = make_batch(seed, t_lens, s_lens, C=C)
    g = torch.Generator().manual_seed(seed + 100)
    enc = torch.randn(len(t_lens), max(t_lens), dim, generator=g, dtype=F64)
    dec = torch.randn(len(t_lens), max(s_lens) + 1, dim, generator=g, dtype=F64)
    out = torch.randn(dim, C, generator=g, dtype=F64)

    def joiner(a, b):
        return torch.tanh(a + b) @ out

    _, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm, am, symbols, BLANK, 0.25, 0.0, boundary, reduction="sum", return_grad=True
    )
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    am_pruned, lm_pruned = do_rnnt_pruning(enc, dec, ranges)
    pruned = rnnt_loss_pruned(joiner(am_pruned, lm_pruned), symbols, ranges, BLANK, boundary, reduction="none")
    full_logits = joiner(enc.unsqueeze(2), dec.unsqueeze(1))
    full = rnnt_loss(full_logits, symbols, BLANK, boundary, reduction="none")
    return pruned, full, full_logits, ranges, symbols, boundary


@pytest.mark.parametrize("t_lens,s_lens", CASES)
def test_pruned_loss_without_pruning_matches_naive(t_lens, s_lens):
    S = max(s_lens)
    pruned, full, full_logits, ranges, symbols, _ = _pipeline(20, t_lens, s_lens, s_range=S + 3)
    assert ranges.shape[-1] == S + 1
    assert (ranges == torch.arange(S + 1)).all()
    expected = naive_losses(full_logits.log_softmax(-1), symbols, s_lens, t_lens)
    torch.testing.assert_close(pruned, expected)
    torch.testing.assert_close(full, expected)


def test_pruned_loss_gradients_without_pruning_equal_full_loss_gradients():
    symbols, boundary, _, _, logits = make_batch(21, [5, 3], [3, 1])
    S = symbols.shape[1]
    ranges = torch.arange(S + 1).expand(2, 5, S + 1)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    rnnt_loss(a, symbols, BLANK, boundary, reduction="sum").backward()
    rnnt_loss_pruned(b, symbols, ranges, BLANK, boundary, reduction="sum").backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("s_range", [2, 3])
def test_prune_ranges_are_valid_and_pruned_loss_bounds_full_loss(s_range):
    t_lens, s_lens = [12, 9, 5, 3], [6, 4, 5, 0]
    pruned, full, _, ranges, _, _ = _pipeline(22, t_lens, s_lens, s_range)
    B, T, R = ranges.shape
    S = max(s_lens)
    assert (B, T) == (4, 12) and R >= s_range
    assert ranges.dtype == torch.int64
    assert (ranges >= 0).all() and (ranges <= S).all()
    assert (ranges[:, :, 1:] - ranges[:, :, :-1] == 1).all()  # consecutive positions
    starts = ranges[:, :, 0]
    assert (starts[:, 0] == 0).all()
    assert (starts[:, 1:] >= starts[:, :-1]).all()  # monotone non-decreasing in t
    assert (starts[:, 1:] - starts[:, :-1] < R).all()  # no label position skipped
    for b in range(B):  # the last label position is reachable on the last frame
        last = ranges[b, t_lens[b] - 1]
        assert last[0] <= s_lens[b] <= last[-1]
    # pruning only removes paths: the pruned loss is finite and never below the full loss
    assert torch.isfinite(pruned).all()
    assert (pruned >= full - 1e-9).all()


def test_prune_range_raised_to_minimum():
    # 8 labels in 3 frames need windows of >= 4 positions
    pruned, full, _, ranges, _, _ = _pipeline(23, [3], [8], s_range=2)
    assert ranges.shape[-1] == 4
    assert torch.isfinite(pruned).all() and (pruned >= full - 1e-9).all()


def test_do_rnnt_pruning():
    am = torch.randn(2, 4, 3)
    lm = torch.randn(2, 5, 7)
    ranges = torch.tensor([[0, 0, 1, 2], [0, 1, 1, 3]]).unsqueeze(-1) + torch.arange(2)
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    assert am_p.shape == (2, 4, 2, 3) and lm_p.shape == (2, 4, 2, 7)
    for b in range(2):
        for t in range(4):
            for k in range(2):
                assert torch.equal(am_p[b, t, k], am[b, t])
                assert torch.equal(lm_p[b, t, k], lm[b, ranges[b, t, k]])


# --------------------------------------------------------------------------------------------
# API details


def test_bad_arguments():
    symbols, boundary, lm, am, logits = make_batch(30, [3], [2])
    with pytest.raises(ValueError, match="reduction"):
        rnnt_loss(logits, symbols, BLANK, boundary, reduction="avg")
    with pytest.raises(NotImplementedError):
        rnnt_loss(logits, symbols, BLANK, boundary, rnnt_type="modified")
    with pytest.raises(ValueError, match="boundary"):
        rnnt_loss(logits, symbols, BLANK, torch.tensor([[0, 0, 3, 3]]))
    try:
        import k2  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="k2"):
            rnnt_loss(logits, symbols, BLANK, boundary, backend="k2")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    symbols_c, boundary_c, lm, am, logits = make_batch(40, [9, 6, 4], [5, 3, 0])
    dev = torch.device("cuda")
    for dtype in (torch.float32, F64):
        x = logits.to(dev, dtype).requires_grad_(True)
        loss = rnnt_loss(x, symbols_c.to(dev), BLANK, boundary_c.to(dev), reduction="sum")
        loss.backward()
        y = logits.clone().requires_grad_(True)
        ref = rnnt_loss(y, symbols_c, BLANK, boundary_c, reduction="sum")
        ref.backward()
        torch.testing.assert_close(loss.cpu().double(), ref, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(x.grad.cpu().double(), y.grad, rtol=1e-4, atol=1e-5)
    _, (pxg, pyg) = rnnt_loss_smoothed(lm.to(dev), am.to(dev), symbols_c.to(dev), BLANK, 0.25, 0.0,
                                       boundary_c.to(dev), return_grad=True)
    _, (pxg_c, pyg_c) = rnnt_loss_smoothed(lm, am, symbols_c, BLANK, 0.25, 0.0, boundary_c, return_grad=True)
    torch.testing.assert_close(pxg.cpu(), pxg_c)
    torch.testing.assert_close(pyg.cpu(), pyg_c)
    r = get_rnnt_prune_ranges(pxg, pyg, boundary_c.to(dev), 3)
    assert torch.equal(r.cpu(), get_rnnt_prune_ranges(pxg_c, pyg_c, boundary_c, 3))
