"""Unit tests of zipa.model.scaling (and a smoke test of the tiny Zipformer2 built from it).

Every expected value is computed independently: with math/numpy in float64 from the published
formulas, or worked out by hand in the comments.
"""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zipa.model.scaling import (
    SWOOSH_SHIFT,
    ActivationDropoutAndLinear,
    Balancer,
    BiasNorm,
    ChunkCausalDepthwiseConv1d,
    PiecewiseLinear,
    ScaleGrad,
    ScheduledFloat,
    SwooshL,
    SwooshR,
    Whiten,
    bias_absorbing_constant,
    conv_after_swoosh,
    convert_num_channels,
    limit_param_value,
    linear_after_swoosh,
    penalize_abs_values_gt,
    set_batch_count,
    shifted_bias,
    swoosh_from_shifted,
    swoosh_l,
    swoosh_r,
    whitening_metric,
)
from zipa.model.zipformer import Zipformer2

# (shift, offset) of Swoosh(x) = log(1 + exp(x - shift)) - 0.08 x - offset
SWOOSH = {"SwooshL": (4.0, 0.035), "SwooshR": (1.0, 0.313261687)}
FUNCTIONS = {"SwooshL": swoosh_l, "SwooshR": swoosh_r}
MODULES = {"SwooshL": SwooshL, "SwooshR": SwooshR}
# float64 absolute tolerance of anything built on softplus: torch's softplus returns z itself
# for z > 20 (its threshold), an error of at most log1p(e^-20) ~ 2e-9, far below float32 resolution.
SOFTPLUS64_ATOL = 3e-9


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)
    yield


def _swoosh_ref(x, name):
    """float64 reference; log(1 + e^z) written as max(z, 0) + log1p(e^-|z|) so that huge |x|
    does not overflow (identical to the textbook formula wherever that is finite)."""
    shift, offset = SWOOSH[name]
    out = []
    for v in np.asarray(x, dtype=np.float64).ravel():
        z = v - shift
        out.append(max(z, 0.0) + math.log1p(math.exp(-abs(z))) - 0.08 * v - offset)
    return np.array(out).reshape(np.shape(x))


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


# --------------------------------------------------------------------------------------------
# Swoosh activations
# --------------------------------------------------------------------------------------------
def test_swoosh_ref_matches_textbook_formula():
    # The reference itself, against log(1 + exp(.)) written literally, where that is finite.
    for name, (shift, offset) in SWOOSH.items():
        for v in (-100.0, -3.0, 0.0, 0.5, 4.0, 30.0, 100.0):
            literal = math.log(1.0 + math.exp(v - shift)) - 0.08 * v - offset
            assert _swoosh_ref([v], name)[0] == pytest.approx(literal, rel=1e-12, abs=1e-12)
    # Hand values: SwooshR(1) = log 2 - 0.08 - 0.313261687; SwooshL(4) = log 2 - 0.32 - 0.035.
    assert _swoosh_ref([1.0], "SwooshR")[0] == pytest.approx(math.log(2) - 0.393261687, abs=1e-12)
    assert _swoosh_ref([4.0], "SwooshL")[0] == pytest.approx(math.log(2) - 0.355, abs=1e-12)
    # SwooshR's offset makes SwooshR(0) = 0 (to ~1e-9).
    assert abs(_swoosh_ref([0.0], "SwooshR")[0]) < 1e-8


@pytest.mark.parametrize("name", ["SwooshL", "SwooshR"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_swoosh_values(name, dtype):
    x = np.concatenate([np.linspace(-100.0, 100.0, 2001), [-1e4, -1e3, 1e3, 1e4]])
    expected = _swoosh_ref(x, name)
    xt = torch.tensor(x, dtype=dtype)
    rtol, atol = (1e-12, SOFTPLUS64_ATOL) if dtype == torch.float64 else (2e-6, 2e-6)
    for got in (FUNCTIONS[name](xt), MODULES[name]()(xt)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got.double().numpy(), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["SwooshL", "SwooshR"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_swoosh_gradient_finite_and_exact(name, dtype):
    shift, _ = SWOOSH[name]
    values = [-1e4, -100.0, -5.0, 0.0, 1.0, 4.0, 10.0, 100.0, 1e4]
    for fn in (FUNCTIONS[name], MODULES[name]()):
        x = torch.tensor(values, dtype=dtype, requires_grad=True)
        y = fn(x)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all(), (y, x.grad)
        expected = np.array([_sigmoid(v - shift) - 0.08 for v in values])
        np.testing.assert_allclose(x.grad.double().numpy(), expected, rtol=1e-6, atol=1e-7)
    # The derivative's range: -0.08 far left, 0.92 far right.
    assert expected[0] == pytest.approx(-0.08) and expected[-1] == pytest.approx(0.92)


def test_swoosh_same_values_with_and_without_grad():
    # The original's inference runs with autograd on: the two paths must agree bit for bit.
    x = torch.randn(1000) * 20
    for fn in FUNCTIONS.values():
        with torch.no_grad():
            a = fn(x)
        b = fn(x.clone().requires_grad_(True)).detach()
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# Folding the Swoosh shift/constant into neighbouring layers (inference path)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["SwooshL", "SwooshR"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_swoosh_from_shifted(name, dtype):
    shift, offset = SWOOSH[name]
    h = torch.linspace(-30, 30, 601, dtype=dtype)
    expected = _swoosh_ref(h.double().numpy(), name)
    tol = SOFTPLUS64_ATOL if dtype == torch.float64 else 1e-5
    got = swoosh_from_shifted(h - shift, name)
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=tol, atol=tol)
    # Without the constant: Swoosh(h) + 0.08 * shift + offset (0.355 for L, 0.393261687 for R).
    got = swoosh_from_shifted(h - shift, name, add_constant=False)
    np.testing.assert_allclose(got.double().numpy(), expected + 0.08 * shift + offset, rtol=tol, atol=tol)
    assert SWOOSH_SHIFT[name] == shift


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bias_absorbing_constant(dtype):
    c = 0.7
    x = torch.randn(5, 6, dtype=dtype)
    w = torch.randn(4, 6, dtype=dtype)
    b = torch.randn(4, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(F.linear(x, w, bias_absorbing_constant(w, b, c)), F.linear(x - c, w, b), rtol=tol, atol=tol)
    torch.testing.assert_close(F.linear(x, w, bias_absorbing_constant(w, None, c)), F.linear(x - c, w), rtol=tol, atol=tol)
    # A conv weight: the constant is summed over the input channels and the kernel.
    cw = torch.randn(3, 2, 3, 3, dtype=dtype)
    img = torch.randn(1, 2, 6, 7, dtype=dtype)
    torch.testing.assert_close(
        F.conv2d(img, cw, bias_absorbing_constant(cw, b[:3], c)), F.conv2d(img - c, cw, b[:3]), rtol=tol, atol=tol
    )
    # Hand case: W = [[1, 2], [3, 4]], b = [10, 20], c = 0.5 -> b' = b - c * row sums = [8.5, 16.5].
    got = bias_absorbing_constant(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([10.0, 20.0]), 0.5)
    assert got.tolist() == [8.5, 16.5]


@pytest.mark.parametrize("name", ["SwooshL", "SwooshR"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_after_swoosh(name, dtype):
    shift, _ = SWOOSH[name]
    h = torch.randn(3, 7, 10, dtype=dtype) * 5
    w = torch.randn(6, 10, dtype=dtype)
    b = torch.randn(6, dtype=dtype)
    act = torch.tensor(_swoosh_ref(h.double().numpy(), name), dtype=dtype)
    tol = 1e-8 if dtype == torch.float64 else 1e-5
    for bias in (b, None):
        torch.testing.assert_close(linear_after_swoosh(h - shift, name, w, bias), F.linear(act, w, bias), rtol=tol, atol=tol)
    # A 1x1 convolution's weight (out, in, 1, 1) is accepted as well.
    torch.testing.assert_close(
        linear_after_swoosh(h - shift, name, w[:, :, None, None], b), F.linear(act, w, b), rtol=tol, atol=tol
    )


@pytest.mark.parametrize("name", ["SwooshL", "SwooshR"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv_after_swoosh(name, dtype):
    shift, _ = SWOOSH[name]
    h = torch.randn(2, 4, 9, 11, dtype=dtype) * 4
    act = torch.tensor(_swoosh_ref(h.double().numpy(), name), dtype=dtype)
    tol = 1e-8 if dtype == torch.float64 else 1e-5
    for conv in (
        nn.Conv2d(4, 6, kernel_size=3, stride=2),
        nn.Conv2d(4, 8, kernel_size=(3, 1), stride=(1, 2), groups=2),
        nn.Conv2d(4, 5, kernel_size=3, bias=False),
    ):
        conv = conv.to(dtype)
        with torch.no_grad():
            for output_shift in (0.0, 1.0):
                got = conv_after_swoosh(h - shift, name, conv, output_shift=output_shift)
                torch.testing.assert_close(got, conv(act) - output_shift, rtol=tol, atol=tol)
    with pytest.raises(AssertionError):
        conv_after_swoosh(h - shift, name, nn.Conv2d(4, 4, 3, padding=1).to(dtype), 0.0)


@pytest.mark.parametrize("name", ["SwooshL", "SwooshR"])
def test_shifted_bias(name):
    b = torch.tensor([0.0, 1.5, -2.0], dtype=torch.float64)
    assert shifted_bias(b, name).tolist() == [v - SWOOSH[name][0] for v in b.tolist()]
    x = torch.randn(4, 5, dtype=torch.float64)
    w = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(F.linear(x, w, shifted_bias(b, name)), F.linear(x, w, b) - SWOOSH[name][0])


@pytest.mark.parametrize("name", ["SwooshL", "SwooshR"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_activation_dropout_and_linear(name, dtype):
    shift, _ = SWOOSH[name]
    m = ActivationDropoutAndLinear(10, 6, activation=name, dropout_p=0.5, initial_scale=0.5).to(dtype)
    m.eval()
    x = torch.randn(4, 3, 10, dtype=dtype) * 5
    act = torch.tensor(_swoosh_ref(x.double().numpy(), name), dtype=dtype)
    tol = 1e-8 if dtype == torch.float64 else 1e-5
    with torch.no_grad():
        expected = F.linear(act, m.weight, m.bias)
        torch.testing.assert_close(m(x), expected, rtol=tol, atol=tol)  # eval: no dropout
        torch.testing.assert_close(m.forward_shifted(x - shift), m(x), rtol=tol, atol=tol)
    # Training without dropout computes the same function (and has gradients).
    m0 = ActivationDropoutAndLinear(10, 6, activation=name, dropout_p=0.0).to(dtype).train()
    with torch.no_grad():
        expected0 = F.linear(act, m0.weight, m0.bias)
    out = m0(x)
    torch.testing.assert_close(out.detach(), expected0, rtol=tol, atol=tol)
    out.sum().backward()
    assert m0.weight.grad is not None and torch.isfinite(m0.weight.grad).all()


def test_activation_dropout_and_linear_dropout_is_shared_and_scaled():
    m = ActivationDropoutAndLinear(16, 4, dropout_p=0.5, dropout_shared_dim=0, bias=False).train()
    with torch.no_grad():
        m.weight.copy_(torch.eye(4, 16))  # output = the first 4 activations (after dropout)
    x = torch.randn(50, 2, 16) + 6.0  # SwooshL(x) > 0 here
    y = m(x).detach()
    act = swoosh_l(x)[..., :4]
    ratio = y / act
    # Each element is either dropped (0) or scaled by 1 / (1 - p) = 2 ...
    assert torch.all((ratio.abs() < 1e-6) | ((ratio - 2.0).abs() < 1e-5))
    # ... with one mask shared along dim 0.
    assert torch.equal(ratio[0:1].expand_as(ratio).round(), ratio.round())


# --------------------------------------------------------------------------------------------
# BiasNorm
# --------------------------------------------------------------------------------------------
def _bias_norm_ref(x, bias, log_scale, channel_dim):
    x = x.astype(np.float64)
    shape = [1] * x.ndim
    shape[channel_dim] = -1
    b = bias.astype(np.float64).reshape(shape)
    rms = np.sqrt(np.mean((x - b) ** 2, axis=channel_dim, keepdims=True))
    return x * math.exp(log_scale) / rms


@pytest.mark.parametrize("channel_dim, shape", [(-1, (3, 7, 12)), (1, (2, 12, 5, 6)), (-1, (2, 3, 4, 12))])
@pytest.mark.parametrize("training", [False, True])
def test_bias_norm(channel_dim, shape, training):
    m = BiasNorm(12, channel_dim=channel_dim)
    with torch.no_grad():
        m.bias.copy_(torch.randn(12))
        m.log_scale.fill_(0.3)
    m.train(training)
    x = torch.randn(*shape) * 3 + 1
    got = m(x)
    # (log_scale as stored: 0.3 rounded to float32)
    expected = _bias_norm_ref(x.numpy(), m.bias.detach().numpy(), m.log_scale.item(), channel_dim % len(shape))
    np.testing.assert_allclose(got.detach().double().numpy(), expected, rtol=1e-5, atol=1e-6)
    # float64 module on float64 input: exact to rounding.
    m64 = m.double()
    got64 = m64(x.double()).detach().numpy()
    np.testing.assert_allclose(got64, expected, rtol=1e-12, atol=1e-12)


def test_bias_norm_default_init():
    m = BiasNorm(8)
    assert m.log_scale.item() == 1.0 and m.bias.shape == (8,) and m.bias.abs().max() < 1e-2
    # With a (near-)zero bias the output rms over channels is exp(log_scale) = e.
    x = torch.randn(4, 8)
    rms = m(x).detach().pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full((4,), math.e), rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------------------
# PiecewiseLinear / ScheduledFloat
# --------------------------------------------------------------------------------------------
def test_piecewise_linear_hand_values():
    f = PiecewiseLinear((0.0, 10.0), (100.0, 0.0), (200.0, 5.0))
    cases = {
        -50.0: 10.0,  # before the first point: the first y
        0.0: 10.0,
        25.0: 7.5,  # 10 + (0 - 10) * 25 / 100
        50.0: 5.0,
        100.0: 0.0,
        150.0: 2.5,  # 0 + (5 - 0) * 50 / 100
        190.0: 4.5,
        200.0: 5.0,
        1e9: 5.0,  # after the last point: the last y
    }
    for x, y in cases.items():
        assert f(x) == pytest.approx(y, abs=1e-12), x
    assert PiecewiseLinear((3, 7))(-1) == 7.0 and PiecewiseLinear((3, 7))(100) == 7.0
    g = PiecewiseLinear(f)  # copy constructor
    assert [g(x) for x in cases] == [f(x) for x in cases]
    with pytest.raises(ValueError):
        PiecewiseLinear((1.0, 0.0), (1.0, 2.0))
    with pytest.raises(ValueError):
        PiecewiseLinear((2.0, 0.0), (1.0, 2.0))


def test_scheduled_float():
    s = ScheduledFloat((0.0, 0.3), (20000.0, 0.1), default=0.5)
    s.train()
    assert float(s) == 0.5  # no batch count yet: the default
    s.batch_count = 0
    assert float(s) == pytest.approx(0.3)
    s.batch_count = 5000
    assert float(s) == pytest.approx(0.25)  # 0.3 - 0.2 * 5000 / 20000
    s.batch_count = 10000
    assert float(s) == pytest.approx(0.2)
    s.batch_count = 1e6
    assert float(s) == pytest.approx(0.1)
    s.eval()
    assert float(s) == 0.5  # not training: the default
    assert float(ScheduledFloat((0.0, 1.0), (1.0, 2.0))) == 0.0  # default default


def test_set_batch_count_reaches_nested_modules():
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.rate = ScheduledFloat((0.0, 1.0), (100.0, 0.0), default=9.0)

    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(Inner(), nn.ReLU()), Balancer(4, channel_dim=-1))
    model.train()
    inner_rate = model[1][0].rate
    balancer_prob = model[2].prob  # the default ScheduledFloat((0, 0.5), (8000, 0.125), default=0.4)
    assert float(inner_rate) == 9.0 and float(balancer_prob) == 0.4
    set_batch_count(model, 25.0)
    assert inner_rate.batch_count == 25.0 and balancer_prob.batch_count == 25.0
    assert float(inner_rate) == pytest.approx(0.75)
    set_batch_count(model, 4000.0)
    assert float(balancer_prob) == pytest.approx(0.3125)  # halfway from 0.5 to 0.125
    model.eval()
    assert float(inner_rate) == 9.0 and float(balancer_prob) == 0.4


# --------------------------------------------------------------------------------------------
# Balancer
# --------------------------------------------------------------------------------------------
def _atanh(v):
    return 0.5 * math.log((1 + v) / (1 - v))


def _balancer_expected_grad(x, g, channel_dim, min_mean, max_mean, min_rms, max_rms, grad_scale):
    """float64, by hand: per channel, over the n values x_i of the other dims,
        mu = sum x / n, u = sum x^2 / n, sigma = sqrt(u - mu^2), r = sqrt(u), m = mu / sigma,
        loss = |m - clamp(m, min_mean, max_mean)| + |log(clamp(r, min_rms, max_rms) / r)|,
        dm/dx_i = (1 - m (x_i - mu) / sigma) / (n sigma),  dr/dx_i = x_i / (n r),
    so dloss/dx_i = s_m dm/dx_i + s_r dr/dx_i / r, with s_m = +1 above max_mean, -1 below
    min_mean (else 0) and s_r = +1 above max_rms, -1 below min_rms (else 0). The modified
    gradient is g + |g| * grad_scale * dloss/dx / rms(dloss/dx)."""
    x = np.moveaxis(x.astype(np.float64), channel_dim, -1).reshape(-1, x.shape[channel_dim])
    g64 = np.moveaxis(g.astype(np.float64), channel_dim, -1).reshape(x.shape)
    n = x.shape[0]
    out = g64.copy()
    for c in range(x.shape[1]):
        xc = x[:, c]
        mu, u = xc.mean(), (xc**2).mean()
        sigma, r = math.sqrt(u - mu * mu), math.sqrt(u)
        m = mu / sigma
        s_m = 1.0 if m > max_mean else (-1.0 if m < min_mean else 0.0)
        s_r = 1.0 if r > max_rms else (-1.0 if r < min_rms else 0.0)
        dloss = s_m * (1 - m * (xc - mu) / sigma) / (n * sigma) + s_r * xc / (n * r * r)
        rms = math.sqrt((dloss**2).mean())
        if rms > 0:
            out[:, c] += np.abs(g64[:, c]) * grad_scale * dloss / rms
    shape = list(np.moveaxis(g, channel_dim, -1).shape)
    return np.moveaxis(out.reshape(shape), -1, channel_dim)


def _balancer_input(n=400):
    """Columns: 0 all positive (mean/std ~ 10), 1 zero-mean unit (within all limits),
    2 all negative, 3 far too large (rms ~ 300), 4 far too small (rms ~ 0.01)."""
    cols = [
        1.0 + 0.1 * torch.randn(n),
        torch.randn(n),
        -1.0 - 0.1 * torch.randn(n).abs(),
        300.0 * torch.randn(n),
        0.01 * torch.randn(n),
    ]
    return torch.stack(cols, dim=-1)


@pytest.mark.parametrize("channel_dim", [-1, 1])
def test_balancer_gradient(channel_dim):
    min_positive, max_positive, min_abs, max_abs, grad_scale = 0.05, 0.95, 0.2, 100.0, 0.04
    x2 = _balancer_input()  # (n, 5)
    # channel_dim=1: lay the data out as (batch=4, channels=5, time=100).
    x = x2 if channel_dim == -1 else x2.reshape(4, 100, 5).transpose(1, 2).contiguous()
    cd = channel_dim % x.ndim
    m = Balancer(5, channel_dim=channel_dim, min_positive=min_positive, max_positive=max_positive,
                 min_abs=min_abs, max_abs=max_abs, grad_scale=grad_scale, prob=1.0)
    m.train()
    xr = x.clone().requires_grad_(True)
    y = m(xr)
    assert torch.equal(y, x)  # identity forward
    g = torch.randn_like(x)
    y.backward(g)
    got = xr.grad

    # The limits: mean/std in +-0.8139535143 * atanh(0.9) = +-1.19833, rms in 1.2533 * [0.2, 100].
    max_mean = 0.8139535143 * _atanh(2 * max_positive - 1)
    min_mean = 0.8139535143 * _atanh(2 * min_positive - 1)
    assert max_mean == pytest.approx(1.19833, abs=1e-4) and min_mean == pytest.approx(-max_mean)
    min_rms, max_rms = 1.25331413732 * min_abs, 1.25331413732 * max_abs
    expected = _balancer_expected_grad(x.numpy(), g.numpy(), cd, min_mean, max_mean, min_rms, max_rms, grad_scale)
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-4, atol=1e-5)

    # Hand-reasoned directions, per channel (values in channel-last layout):
    delta = torch.movedim(got - g, cd, -1).reshape(-1, 5).double()
    absg = torch.movedim(g, cd, -1).reshape(-1, 5).abs().double()
    xs = torch.movedim(x, cd, -1).reshape(-1, 5)
    # 1: within limits: the loss is 0 there, so the gradient is untouched (exactly).
    assert torch.equal(delta[:, 1], torch.zeros_like(delta[:, 1]))
    # 0: mean/std above max_mean. sum_i dm/dx_i = 1 / sigma > 0, so the added term, per unit of
    # |g|, sums to a positive number: gradient descent lowers this channel's mean.
    assert (delta[:, 0] / absg[:, 0]).sum() > 0
    # 2: mean/std below min_mean: the opposite.
    assert (delta[:, 2] / absg[:, 2]).sum() < 0
    # 3: rms above the max: the added term has the sign of x (descent shrinks |x|) ...
    assert torch.equal(torch.sign(delta[:, 3]), torch.sign(xs[:, 3]).double())
    # 4: rms below the min: ... and the opposite sign (descent grows |x|).
    assert torch.equal(torch.sign(delta[:, 4]), -torch.sign(xs[:, 4]).double())
    # Its size: |added| = |g| * grad_scale * |dloss| / rms(dloss) -> rms(added / |g|) = grad_scale.
    for c in (0, 2, 3, 4):
        assert (delta[:, c] / absg[:, c]).pow(2).mean().sqrt().item() == pytest.approx(grad_scale, rel=1e-4)


def test_balancer_inactive():
    x = _balancer_input(50)
    g = torch.randn_like(x)
    # eval mode, or prob 0, or no grad: the gradient passes through unchanged.
    for training, prob in ((False, 1.0), (True, 0.0)):
        m = Balancer(5, channel_dim=-1, prob=prob).train(training)
        xr = x.clone().requires_grad_(True)
        y = m(xr)
        assert torch.equal(y, x)
        y.backward(g)
        assert torch.equal(xr.grad, g)
    with torch.no_grad():
        assert torch.equal(Balancer(5, channel_dim=-1, prob=1.0).train()(x), x)


# --------------------------------------------------------------------------------------------
# Whitening
# --------------------------------------------------------------------------------------------
def _metric_ref(x, num_groups):
    """float64 via eigenvalues: with lambda_gi the eigenvalues of group g's centred covariance,
    metric = mean_gi(lambda^2) / mean_gi(lambda)^2 (= trace(C^2) d / trace(C)^2 for one group)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    eig = []
    for part in np.split(x, num_groups, axis=1):
        part = part - part.mean(axis=0)
        eig.append(np.linalg.eigvalsh(part.T @ part))
    eig = np.concatenate(eig)
    return float((eig**2).mean() / eig.mean() ** 2)


def test_whitening_metric_hand_cases():
    # 2 channels, already centred. White: covariance diag(2, 2) -> (4 + 4) / 2 / 2^2 = 1.
    white = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert whitening_metric(white, 1).item() == pytest.approx(1.0, abs=1e-6)
    # Perfectly correlated: covariance [[2, 2], [2, 2]] -> (4 * 4) / 2 / 2^2 = 2 (= d).
    corr = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    assert whitening_metric(corr, 1).item() == pytest.approx(2.0, abs=1e-6)
    # Unequal variances: covariance diag(8, 2) -> (64 + 4) / 2 / 5^2 = 1.36.
    skew = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert whitening_metric(skew, 1).item() == pytest.approx(1.36, abs=1e-6)
    # The mean is removed first: an offset changes nothing.
    assert whitening_metric(skew + torch.tensor([5.0, -3.0]), 1).item() == pytest.approx(1.36, abs=1e-5)
    # Two groups of two: white within each group but with traces 16 vs 4 (variances 8 and 2):
    # mean(lambda^2) = (64 + 64 + 4 + 4) / 4 = 34, mean(lambda) = 5 -> 1.36 again.
    groups = torch.cat([2 * white, white], dim=1)
    assert whitening_metric(groups, 2).item() == pytest.approx(1.36, abs=1e-6)
    assert whitening_metric(torch.cat([white, white], dim=1), 2).item() == pytest.approx(1.0, abs=1e-6)


def test_whitening_metric_white_and_random():
    # Sylvester-Hadamard columns 1..7: centred, orthogonal, equal norms -> exactly white.
    h = np.array([[1.0]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    x = torch.tensor(h[:, 1:], dtype=torch.float32)
    assert whitening_metric(x, 1).item() == pytest.approx(1.0, abs=1e-6)
    # Orthonormal columns of a centred random matrix (also centred), in 1, 2 and 4 groups.
    a = torch.randn(300, 16, dtype=torch.float64)
    q, _ = torch.linalg.qr(a - a.mean(0))
    for groups in (1, 2, 4):
        assert whitening_metric(q * 3.0, groups).item() == pytest.approx(1.0, abs=1e-9)
    # Arbitrary data, 3-D input (flattened over the leading dims), against the eigenvalue form.
    x = torch.randn(4, 50, 12) @ torch.randn(12, 12)
    for groups in (1, 3):
        assert whitening_metric(x, groups).item() == pytest.approx(_metric_ref(x.numpy(), groups), rel=1e-4)
        assert whitening_metric(x.double(), groups).item() == pytest.approx(_metric_ref(x.numpy(), groups), rel=1e-10)


def _metric_torch64(x):
    """The one-group metric d * trace(C^2) / trace(C)^2 written independently (for its gradient)."""
    x = x - x.mean(0)
    c = x.T @ x
    return x.shape[1] * (c * c).sum() / torch.trace(c) ** 2


def test_whiten_backward():
    limit, grad_scale = 5.0, 0.1
    # White enough (metric ~ 1 < 5): the gradient is untouched and prob drops to min_prob.
    w = Whiten(num_groups=1, whitening_limit=limit, prob=(0.5, 1.0), grad_scale=grad_scale).train()
    x = torch.randn(400, 16, requires_grad=True)
    g = torch.randn(400, 16)
    y = w(x)
    assert torch.equal(y, x)
    y.backward(g)
    assert torch.equal(x.grad, g) and w.prob == 0.5

    # Nearly rank one (metric ~ 16 > 5): a penalty gradient is added, along d metric / dx, with
    # norm grad_scale * |g|; prob goes back to max_prob.
    w = Whiten(num_groups=1, whitening_limit=limit, prob=(0.5, 1.0), grad_scale=grad_scale).train()
    base = torch.randn(400, 1) * torch.randn(1, 16) + 0.05 * torch.randn(400, 16)
    assert _metric_ref(base.numpy(), 1) > limit
    x = base.clone().requires_grad_(True)
    w(x).backward(g)
    assert w.prob == 1.0
    added = (x.grad - g).double()
    assert added.norm().item() == pytest.approx(grad_scale * g.norm().item(), rel=1e-4)
    x64 = base.double().requires_grad_(True)
    (direction,) = torch.autograd.grad(_metric_torch64(x64), x64)
    cos = (added * direction).sum() / (added.norm() * direction.norm())
    assert cos.item() == pytest.approx(1.0, abs=1e-4)

    # Eval mode: nothing happens even with a non-white input.
    w.eval()
    x = base.clone().requires_grad_(True)
    w(x).backward(g)
    assert torch.equal(x.grad, g)


def test_whiten_scheduled_limit():
    limit = ScheduledFloat((0.0, 2.0), (100.0, 50.0), default=2.0)
    w = Whiten(num_groups=1, whitening_limit=limit, prob=1.0, grad_scale=0.1).train()
    base = torch.randn(200, 1) * torch.randn(1, 8) + 0.05 * torch.randn(200, 8)  # metric ~ 8
    g = torch.randn(200, 8)
    for batch_count, changed in ((0.0, True), (100.0, False)):
        set_batch_count(w, batch_count)
        x = base.clone().requires_grad_(True)
        w(x).backward(g)
        assert (not torch.equal(x.grad, g)) == changed


# --------------------------------------------------------------------------------------------
# limit_param_value
# --------------------------------------------------------------------------------------------
def test_limit_param_value():
    values = torch.tensor([-2.0, -2.0, 0.0, 0.0, 2.0, 2.0])
    g = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    x = values.clone().requires_grad_(True)
    y = limit_param_value(x, -1.0, 1.0, prob=1.0)
    assert torch.equal(y, values)
    (y * g).sum().backward()
    # Below min (x = -2): a positive grad would push x further down under SGD -> flipped; a
    # negative one already pushes it up -> kept. Above max (x = 2): the mirror image. Inside: kept.
    assert x.grad.tolist() == [-1.0, -1.0, 1.0, -1.0, 1.0, 1.0]
    x = values.clone().requires_grad_(True)
    (limit_param_value(x, -1.0, 1.0, prob=0.0) * g).sum().backward()
    assert torch.equal(x.grad, g)


def test_bias_norm_limits_log_scale_in_training():
    m = BiasNorm(6).train()
    with torch.no_grad():
        m.log_scale.fill_(2.0)  # above log_scale_max = 1.5
    x = torch.randn(10, 6)
    random.seed(1)  # limit_param_value applies with probability 0.6: try until it does
    signs = set()
    for _ in range(20):
        m.zero_grad()
        (-m(x).sum().abs()).backward()  # pushes log_scale up (grad < 0)
        signs.add(math.copysign(1.0, m.log_scale.grad.item()))
    assert signs == {1.0, -1.0}  # sometimes flipped (limit applied), sometimes not
    m.eval()
    m.zero_grad()
    (-m(x).sum().abs()).backward()
    assert m.log_scale.grad.item() < 0  # never in eval


def test_penalize_abs_values_gt():
    # Adds penalty * relu(|x| - limit) to the loss: its gradient penalty * sign(x) where |x| > limit.
    x = torch.tensor([-30.0, -10.0, 0.0, 24.0, 26.0, 100.0], requires_grad=True)
    y = penalize_abs_values_gt(x, limit=25.0, penalty=0.5)
    assert torch.equal(y, x.detach())
    y.sum().backward()
    assert x.grad.tolist() == [1.0 - 0.5, 1.0, 1.0, 1.0, 1.0 + 0.5, 1.0 + 0.5]


def test_scale_grad_and_convert_num_channels():
    m = ScaleGrad(0.2).train()
    x = torch.ones(3, requires_grad=True)
    y = m(x)
    assert torch.equal(y, x.detach())
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), 0.2))
    x = torch.ones(3, requires_grad=True)
    m.eval()(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(3))
    z = torch.arange(6.0).reshape(2, 3)
    assert convert_num_channels(z, 2).tolist() == [[0.0, 1.0], [3.0, 4.0]]
    assert convert_num_channels(z, 5).tolist() == [[0.0, 1.0, 2.0, 0.0, 0.0], [3.0, 4.0, 5.0, 0.0, 0.0]]


# --------------------------------------------------------------------------------------------
# ChunkCausalDepthwiseConv1d
# --------------------------------------------------------------------------------------------
def _chunk_conv_ref(x, conv, chunk_size):
    """float64 loops: causal_conv over the left-padded sequence, plus, inside each chunk (the
    last zero-padded to full size), the zero-padded full conv scaled by 1 + left_edge + right_edge
    aligned with the chunk's two ends."""
    x = x.astype(np.float64)
    batch, channels, seq_len = x.shape
    k = conv.kernel_size
    half = (k + 1) // 2
    cw = conv.causal_conv.weight.detach().double().numpy()[:, 0]  # (C, half)
    cb = conv.causal_conv.bias.detach().double().numpy()
    kw = conv.chunkwise_conv.weight.detach().double().numpy()[:, 0]  # (C, k)
    kb = conv.chunkwise_conv.bias.detach().double().numpy()
    left, right = conv.chunkwise_conv_scale.detach().double().numpy()  # (C, k) each
    if chunk_size < 0 or chunk_size > seq_len:
        chunk_size = seq_len
    out = np.zeros_like(x)
    for b in range(batch):
        for c in range(channels):
            for t in range(seq_len):
                causal = cb[c]
                for j in range(half):
                    src = t - (half - 1) + j
                    if src >= 0:
                        causal += cw[c, j] * x[b, c, src]
                start = (t // chunk_size) * chunk_size
                pos = t - start
                full = kb[c]
                for j in range(k):
                    src = t - k // 2 + j
                    if start <= src < start + chunk_size and src < seq_len:
                        full += kw[c, j] * x[b, c, src]
                scale = 1.0
                if pos < k:
                    scale += left[c, pos]
                offset = k - chunk_size + pos  # right-edge index aligned with the chunk's end
                if 0 <= offset < k:
                    scale += right[c, offset]
                out[b, c, t] = causal + full * scale
    return out


def _chunk_conv(channels=3, kernel_size=5):
    m = ChunkCausalDepthwiseConv1d(channels, kernel_size)
    with torch.no_grad():
        m.chunkwise_conv_scale.normal_(0.0, 0.5)
        m.chunkwise_conv.bias.normal_()
    return m


@pytest.mark.parametrize("seq_len, chunk_size", [(12, -1), (3, -1), (20, 8), (20, 3), (16, 16), (9, 100)])
def test_chunk_causal_conv_matches_direct_computation(seq_len, chunk_size):
    m = _chunk_conv()
    x = torch.randn(2, 3, seq_len)
    expected = _chunk_conv_ref(x.numpy(), m, chunk_size)
    with torch.no_grad():
        np.testing.assert_allclose(m(x, chunk_size=chunk_size).double().numpy(), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(m.double()(x.double(), chunk_size=chunk_size).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_chunk_causal_conv_is_chunk_causal():
    m = _chunk_conv(channels=4, kernel_size=7)
    seq_len, chunk = 30, 8  # chunks [0, 8) [8, 16) [16, 24) [24, 30)
    x = torch.randn(2, 4, seq_len)
    with torch.no_grad():
        y = m(x, chunk_size=chunk)
        for first_changed in (8, 16, 24, 29):
            x2 = x.clone()
            x2[..., first_changed:] = torch.randn_like(x2[..., first_changed:]) * 10
            y2 = m(x2, chunk_size=chunk)
            end = (first_changed // chunk) * chunk  # outputs of earlier chunks: unchanged
            assert torch.equal(y2[..., :end], y[..., :end])
            assert not torch.allclose(y2[..., first_changed:], y[..., first_changed:])
        # Without chunking, a frame does change the outputs up to k // 2 frames before it.
        x2 = x.clone()
        x2[..., 10] += 5.0
        y_full, y2_full = m(x, chunk_size=-1), m(x2, chunk_size=-1)
        assert torch.equal(y_full[..., :7], y2_full[..., :7])
        assert not torch.allclose(y_full[..., 7], y2_full[..., 7])
        # ... and within a chunk an earlier chunk's frame still reaches later outputs (causal part).
        x2 = x.clone()
        x2[..., 7] += 5.0
        assert not torch.allclose(m(x2, chunk_size=chunk)[..., 8], y[..., 8])


# --------------------------------------------------------------------------------------------
# Zipformer2 on a tiny configuration
# --------------------------------------------------------------------------------------------
def _tiny_zipformer(**overrides):
    kwargs = dict(
        output_downsampling_factor=1,
        downsampling_factor=(1, 2),
        num_encoder_layers=(1, 1),
        encoder_dim=(32, 48),
        encoder_unmasked_dim=(24, 24),
        query_head_dim=8,
        pos_head_dim=4,
        value_head_dim=4,
        num_heads=(2, 2),
        feedforward_dim=(64, 96),
        cnn_module_kernel=(31, 15),
        pos_dim=16,
    )
    kwargs.update(overrides)
    return Zipformer2(**kwargs)


# Parameters that legitimately get no gradient: the layers' unused `bypass_scale` (kept for
# checkpoint compatibility) and the output downsampler's weight when its factor is 1.
_NO_GRAD = ("layers.0.bypass_scale", "downsample_output.bias")


@pytest.mark.parametrize("causal", [False, True])
def test_zipformer_training_forward_backward(causal):
    extra = dict(causal=True, chunk_size=(16, -1), left_context_frames=(64, -1)) if causal else {}
    model = _tiny_zipformer(**extra).train()
    seq_len, lens = 48, torch.tensor([48, 40, 29])
    mask = torch.arange(seq_len)[None, :] >= lens[:, None]
    # Batch counts past the positional-encoding skip warm-up (4000), so every used parameter
    # gets a gradient; the layer-skip and dropout schedules are still non-zero at 5000.
    for batch_count in (5000.0, 30000.0):
        set_batch_count(model, batch_count)
        model.zero_grad()
        x = torch.randn(seq_len, 3, 32, requires_grad=True)
        y, y_lens = model(x, lens, mask)
        assert y.shape == (seq_len, 3, 48) and y_lens.tolist() == lens.tolist()
        assert torch.isfinite(y).all()
        (y**2).mean().backward()
        assert torch.isfinite(x.grad).all()
        for name, p in model.named_parameters():
            if name.endswith(_NO_GRAD):
                continue
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
        assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)


def test_zipformer_eval_deterministic_and_grad_mode_independent():
    model = _tiny_zipformer().eval()
    x = torch.randn(40, 2, 32)
    lens = torch.tensor([40, 33])
    mask = torch.arange(40)[None, :] >= lens[:, None]
    y1, l1 = model(x, lens, mask)
    y2, _ = model(x, lens, mask)
    assert torch.equal(y1, y2) and l1.tolist() == [40, 33]
    with torch.no_grad():
        y3, _ = model(x, lens, mask)
    with torch.inference_mode():
        y4, _ = model(x, lens, mask)
    y5, _ = model(x.clone().requires_grad_(True), lens, mask)
    for other in (y3, y4, y5.detach()):
        torch.testing.assert_close(other, y1.detach(), rtol=0, atol=1e-6)
    # eval is not the same function as one training step (training adds dropout, masks, skips).
    model.train()
    set_batch_count(model, 0.0)
    y_train, _ = model(x, lens, mask)
    assert not torch.allclose(y_train, y1)


def test_zipformer_causal_first_chunk_ignores_the_future():
    model = _tiny_zipformer(causal=True, chunk_size=(16,), left_context_frames=(64,)).eval()
    seq_len = 64
    x = torch.randn(seq_len, 2, 32)
    lens = torch.tensor([seq_len, seq_len])
    with torch.no_grad():
        y, _ = model(x, lens)
        for first_changed in (16, 40):
            x2 = x.clone()
            x2[first_changed:] = torch.randn_like(x2[first_changed:]) * 3
            y2, _ = model(x2, lens)
            end = (first_changed // 16) * 16
            torch.testing.assert_close(y2[:end], y[:end], rtol=0, atol=1e-5)
            assert not torch.allclose(y2[first_changed:], y[first_changed:], atol=1e-3)
        # The non-causal model, by contrast, lets the future in.
        full = _tiny_zipformer().eval()
        x2 = x.clone()
        x2[16:] += 3.0
        assert not torch.allclose(full(x2, lens)[0][:16], full(x, lens)[0][:16], atol=1e-3)
