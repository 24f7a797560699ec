"""CR-CTC's two views and consistency loss, tested for what they do.

Facts from the original (icefall egs/librispeech/ASR/zipformer, which ZIPA's CR-CTC recipe
runs): `get_spec_augment` builds lhotse's SpecAugment with time_warp_factor=0 (warping is done
once, before the batch is duplicated), num_feature_masks=2, features_mask_size=27,
frames_mask_size=100, num_frame_masks=int(10 * time_mask_ratio) and
max_frames_mask_fraction=0.15 * time_mask_ratio (--time-mask-ratio 2.5 for CR-CTC);
`forward_cr_ctc` computes kl_div(input=log_probs, target=the other view's detached log_probs,
log_target=True, reduction="none"), zeroes padded frames and sums; `forward` halves both the
CTC and the CR loss (two views of each utterance).
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from zipa.model.asr_model import build_model
from zipa.model.config import preset
from zipa.model.spec_augment import SpecAugment
from zipa.train.loop import cr_ctc_spec_augment


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(preset("tiny")).train()


def _batch(n: int = 3, frames: int = 200, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, frames, 80, generator=g)
    x_lens = torch.tensor([frames - 20 * i for i in range(n)])
    for i, length in enumerate(x_lens.tolist()):
        x[i, length:] = math.log(1e-10)
    y = [[1 + (i + j) % 5 for j in range(4)] for i in range(n)]
    segments = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long), x_lens], dim=1)
    return x, x_lens, y, segments


def _views(model, time_mask_ratio: float = 2.5, seed: int = 0):
    """The encoder's input in a CR-CTC forward: (view 1, view 2) and the batch they came from."""
    x, x_lens, y, segments = _batch(seed=seed)
    seen = {}
    def grab(_module, args):
        seen.setdefault("x", args[0].detach().clone())

    hook = model.encoder_embed.register_forward_pre_hook(grab)
    try:
        random.seed(seed)
        torch.manual_seed(seed)
        model(x, x_lens, y, use_cr_ctc=True, use_spec_aug=True, spec_augment=cr_ctc_spec_augment(time_mask_ratio),
              supervision_segments=segments, time_warp_factor=0)
    finally:
        hook.remove()
    first, second = seen["x"].chunk(2, dim=0)
    return first, second, x, x_lens


def _check_views(first, second, x, x_lens):
    """The two views differ, each only where a mask fell (masked values are one per-utterance
    fill value), and agree wherever neither is masked."""
    assert first.shape == second.shape == x.shape
    assert not torch.equal(first, second), "the two views are identical: augmentation did nothing"
    for view in (first, second):
        changed = view != x
        assert changed.any()
        for i in range(x.shape[0]):
            fills = view[i][changed[i]].unique()
            if fills.numel() == 0:
                continue  # SpecAugment leaves an utterance alone with probability 1 - p = 0.1
            assert fills.numel() == 1, "masked values are the utterance's mean"
            assert torch.allclose(fills, x[i].mean(), atol=1e-5)
    untouched = (first == x) & (second == x)
    assert torch.equal(first[untouched], second[untouched])
    # Where the views differ, at least one of them is masked.
    differ = first != second
    assert ((first != x) | (second != x))[differ].all()


def test_cr_ctc_spec_augment_has_the_originals_parameters():
    for ratio, frame_masks, fraction in [(2.5, 25, 0.375), (1.0, 10, 0.15)]:
        aug = cr_ctc_spec_augment(ratio)
        assert aug.time_warp_factor == 0
        assert aug.num_feature_masks == 2 and aug.features_mask_size == 27
        assert aug.num_frame_masks == frame_masks and aug.frames_mask_size == 100
        assert aug.max_frames_mask_fraction == pytest.approx(fraction)


def test_two_views_differ_where_masks_fall_and_agree_elsewhere(model):
    _check_views(*_views(model))


def test_the_check_fails_when_augmentation_does_nothing(model, monkeypatch):
    monkeypatch.setattr(SpecAugment, "forward", lambda self, x, supervision_segments=None: (x, torch.zeros(x.shape[:2], dtype=torch.bool)))
    with pytest.raises(AssertionError, match="identical"):
        _check_views(*_views(model))


def test_time_masks_follow_count_width_and_ratio():
    """Per utterance: at most min(num_frame_masks, ceil(fraction * T / 100)) masks, each
    narrower than min(100, fraction * T // count), so at most fraction * T frames masked; more
    is masked with time_mask_ratio 2.5 than with 1."""
    T = 1000
    masked = {}
    for ratio in (1.0, 2.5):
        aug = cr_ctc_spec_augment(ratio)
        aug.p = 1.0
        aug.num_feature_masks = 0
        fraction = 0.15 * ratio
        count = min(int(10 * ratio), math.ceil(fraction * T / 100))
        width = min(100, fraction * T // count)
        random.seed(0)
        x = torch.randn(64, T, 80)
        out, mask = aug(x)
        assert torch.equal(mask, (out != x).all(dim=-1)), "the returned mask is where frames were masked"
        totals = mask.sum(dim=1)
        assert (totals <= count * (width - 1)).all() and (totals <= fraction * T).all()
        for row in mask:
            edges = torch.diff(torch.cat([torch.zeros(1), row.float(), torch.zeros(1)]))
            starts = (edges == 1).nonzero().flatten()
            assert len(starts) <= count  # overlapping masks merge into one run
        masked[ratio] = totals.float().mean().item()
    assert masked[2.5] > 1.5 * masked[1.0]


def _reference_cr_loss(log_probs: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """icefall's formula in float64: sum over both views of KL(stop_grad(p_other) || p_this)
    on valid frames."""
    lp = log_probs.double()
    first, second = lp.detach().chunk(2, dim=0)
    target = torch.cat([second, first], dim=0)
    kl = (target.exp() * (target - lp)).sum(dim=-1)
    valid = torch.arange(lp.shape[1])[None, :] < lens[:, None]
    return (kl * valid).sum()


def test_consistency_loss_detaches_the_other_view(model):
    torch.manual_seed(1)
    n, t = 2, 30
    model.eval()  # no dropout in ctc_output: both computations see the same function
    encoder_out = torch.randn(2 * n, t, model.ctc_output[1].in_features)
    lens = torch.tensor([30, 25, 30, 25])
    targets = torch.tensor([1, 2, 3, 2, 3, 1, 2, 3, 2, 3])
    target_lengths = torch.tensor([3, 2, 3, 2])

    leaf = encoder_out.clone().requires_grad_(True)
    _, cr = model.forward_cr_ctc(leaf, lens, targets, target_lengths)
    (grad,) = torch.autograd.grad(cr, leaf)

    leaf_ref = encoder_out.clone().requires_grad_(True)
    log_probs = model.ctc_output(leaf_ref)
    reference = _reference_cr_loss(log_probs, lens)
    (grad_ref,) = torch.autograd.grad(reference, leaf_ref)
    assert cr.item() == pytest.approx(reference.item(), rel=1e-4)
    assert torch.allclose(grad.double(), grad_ref.double(), rtol=1e-3, atol=1e-6)

    # Without the stop-gradient the gradient would be a different one: the test can tell.
    leaf_nd = encoder_out.clone().requires_grad_(True)
    lp = model.ctc_output(leaf_nd).double()
    first, second = lp.chunk(2, dim=0)
    target = torch.cat([second, first], dim=0)
    valid = torch.arange(t)[None, :] < lens[:, None]
    undetached = ((target.exp() * (target - lp)).sum(-1) * valid).sum()
    (grad_nd,) = torch.autograd.grad(undetached, leaf_nd)
    assert not torch.allclose(grad_nd, grad_ref, rtol=1e-3, atol=1e-6)
    model.train()
