"""Building blocks of the Zipformer2 encoder: activations, normalisation and the training-time
regularisers (Balancer, Whiten, schedules) that icefall uses.

Everything here follows icefall's `scaling.py` in parameter names, formulas and constants, so
that released checkpoints load and compute the same values. The regularisers only touch
gradients; in eval mode (or with no gradient) they return their input untouched, so inference
pays nothing for them.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from zipa.model.kernels import Linear, cpu_inference, is_exporting, linear, linear_into


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------
class PiecewiseLinear:
    """A function of the batch count given by (x, y) points; constant outside them."""

    def __init__(self, *points: tuple[float, float]):
        if len(points) == 1 and isinstance(points[0], PiecewiseLinear):
            points = tuple(points[0].points)
        self.points = [(float(x), float(y)) for x, y in points]
        xs = [x for x, _ in self.points]
        if not xs or any(b <= a for a, b in zip(xs, xs[1:])):
            raise ValueError(f"x values must be non-empty and increasing: {xs}")

    def __call__(self, x: float) -> float:
        (x0, y0), (xn, yn) = self.points[0], self.points[-1]
        if x <= x0:
            return y0
        if x >= xn:
            return yn
        for (xa, ya), (xb, yb) in zip(self.points, self.points[1:]):
            if xa <= x <= xb:
                return ya + (yb - ya) * (x - xa) / (xb - xa)
        raise AssertionError("unreachable")

    def __repr__(self) -> str:
        return f"PiecewiseLinear({self.points})"


class ScheduledFloat(nn.Module):
    """A float that follows a piecewise-linear schedule of the training batch count.

    It is a module only so that `set_batch_count` can find it through `model.modules()`; it has
    no parameters. Outside training, or before a batch count is set, it is `default`.
    """

    def __init__(self, *points: tuple[float, float], default: float = 0.0):
        super().__init__()
        self.schedule = PiecewiseLinear(*points)
        self.default = default
        self.batch_count: float | None = None

    def __float__(self) -> float:
        if self.batch_count is None or not self.training:
            return float(self.default)
        return self.schedule(self.batch_count)

    def extra_repr(self) -> str:
        return f"batch_count={self.batch_count}, schedule={self.schedule.points}"


FloatLike = Union[float, ScheduledFloat]


def set_batch_count(model: nn.Module, batch_count: float) -> None:
    """Advance every schedule in `model` (icefall calls this once per training batch)."""
    for module in model.modules():
        if isinstance(module, ScheduledFloat):
            module.batch_count = batch_count


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------
def swoosh_l(x: Tensor) -> Tensor:
    """SwooshL(x) = log(1 + exp(x - 4)) - 0.08 x - 0.035."""
    return F.softplus(x - 4.0) - 0.08 * x - 0.035


def swoosh_r(x: Tensor) -> Tensor:
    """SwooshR(x) = log(1 + exp(x - 1)) - 0.08 x - 0.313261687."""
    return F.softplus(x - 1.0) - 0.08 * x - 0.313261687


class SwooshL(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return swoosh_l(x)


class SwooshR(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return swoosh_r(x)


_ACTIVATIONS = {"SwooshL": swoosh_l, "SwooshR": swoosh_r}

# Swoosh(h) = softplus(h - shift) - 0.08 h - offset = softplus(t) - 0.08 t - (0.08 shift + offset)
# with t = h - shift. Inference folds the shift into the bias of the layer that produces h and
# the constant into the bias of the layer that consumes the activation, leaving two passes.
SWOOSH_SHIFT = {"SwooshL": 4.0, "SwooshR": 1.0}
_SWOOSH_CONSTANT = {"SwooshL": 0.08 * 4.0 + 0.035, "SwooshR": 0.08 * 1.0 + 0.313261687}


def _softplus_for_export(x: Tensor) -> Tensor:
    """softplus as relu(x) + log(1 + exp(-|x|)): onnxruntime's Softplus kernel is scalar code,
    about twice as slow as these vectorised ops (it was a third of the encoder's time); the
    result differs by float rounding only (< 1e-7 absolute)."""
    return F.relu(x) + torch.log1p(torch.exp(-x.abs()))


# t is clamped to this range before exp in log(1 + exp(t)). Above it, log(1 + exp(69)) = 69.0 and
# max(., t) gives t (softplus(t) = t there to float32 precision; unclamped, exp would overflow to
# inf from t = 88.7 on). Below it, 1 + exp(t) rounds to 1 either way, but exp(t) would be
# subnormal from t = -87.3 on, which x86 CPUs compute about 200 times slower per element (17.7
# against 0.09 ns, Intel Xeon, 2 threads); a trained model's Swoosh inputs do go there (the demo
# model of ./run.sh on Festival speech: 0.06 % of them below -87, the lowest -223).
_EXP_INPUT_RANGE = (-87.0, 69.0)


def _softplus_by_exp_log(t: Tensor) -> Tensor:
    """softplus(t) of a float32 CPU tensor as log(1 + exp(t)) in passes of exp and log, which
    PyTorch vectorises 2-3x faster per element than its softplus kernel (Intel Xeon and AMD EPYC,
    torch 2.13). Where exp(t) is below float32's resolution at 1 the sum rounds to 1, an absolute
    error under 6e-8 (the same as rounding the result)."""
    y = torch.clamp(t, *_EXP_INPUT_RANGE)
    y.exp_().add_(1.0).log_()
    return torch.maximum(y, t, out=y)


def swoosh_from_shifted(shifted: Tensor, activation: str, add_constant: bool = True) -> Tensor:
    """Swoosh(h) given `shifted` = h - SWOOSH_SHIFT[activation]; without `add_constant` the
    result is Swoosh(h) + constant, for a consumer that subtracts the constant itself."""
    if is_exporting():
        y = _softplus_for_export(shifted)
    elif shifted.dtype == torch.float32 and cpu_inference(shifted, under_autocast=True):
        y = _softplus_by_exp_log(shifted)
    else:
        y = F.softplus(shifted)
    y.add_(shifted, alpha=-0.08)
    if add_constant:
        y.sub_(_SWOOSH_CONSTANT[activation])
    return y


def bias_absorbing_constant(weight: Tensor, bias: Tensor | None, constant: float) -> Tensor:
    """The bias b' with W (x - constant) + b = W x + b' (weight of any conv or linear layer)."""
    absorbed = constant * weight.sum(dim=tuple(range(1, weight.ndim)))
    return -absorbed if bias is None else bias - absorbed


def linear_after_swoosh(
    shifted: Tensor,
    activation: str,
    weight: Tensor,
    bias: Tensor | None,
    absorbed_bias: Tensor | None = None,
    residual: Tensor | None = None,
) -> Tensor:
    """linear(Swoosh(h)) (+ `residual`) on the last dimension, given `shifted` = h - shift
    (inference); `weight` may be a 1x1 convolution's. `absorbed_bias`: the bias with the
    constant absorbed, where the caller keeps it (else computed here)."""
    y = swoosh_from_shifted(shifted, activation, add_constant=False)
    if absorbed_bias is None:
        absorbed_bias = bias_absorbing_constant(weight, bias, _SWOOSH_CONSTANT[activation])
    return linear(y, weight.flatten(1), absorbed_bias, residual)


# Rows per band in `swoosh_feedforward`: a band's hidden activations take about this many bytes
# per thread, so that they stay in the core's L2 cache from the first product to the second.
_FEEDFORWARD_BAND_BYTES_PER_THREAD = 1 << 20
# Below this many rows the products would be too thin to run at full rate.
_MIN_FEEDFORWARD_BAND_ROWS = 64


def feedforward_band_rows(in_dim: int, hidden_dim: int, element_size: int) -> int:
    """Rows per band of `swoosh_feedforward`: hidden activations of about
    `_FEEDFORWARD_BAND_BYTES_PER_THREAD` per thread, and at least 2 x `in_dim` rows. Each band
    reads both weight matrices again (2 x in_dim x hidden_dim values, which a large model's do
    not leave in cache); from 2 x in_dim rows on, a band's hidden activations outnumber them,
    and the band saves more memory traffic than it costs (large model at 30 s, Intel Xeon:
    1.8-4 % less time for the whole encoder at batch 1 and 8; the small one's time unchanged at
    batch 8, and at batch 1 its bands are that tall already)."""
    by_cache = _FEEDFORWARD_BAND_BYTES_PER_THREAD * torch.get_num_threads() // (hidden_dim * element_size)
    return max(_MIN_FEEDFORWARD_BAND_ROWS, by_cache, 2 * in_dim)


def swoosh_feedforward(
    x: Tensor,
    in_weight: Tensor,
    in_bias: Tensor | None,
    activation: str,
    out_weight: Tensor,
    out_bias: Tensor | None,
    residual: Tensor | None = None,
    absorbed_bias: Tensor | None = None,
) -> Tensor:
    """linear(Swoosh(linear(x, in_weight, in_bias)), out_weight, out_bias) (+ `residual`) on
    the last dimension, at inference (weights of linear or 1x1 convolution layers).

    On a CPU the rows go through in bands whose hidden activations (several times wider than
    `x`) stay in cache from the first product through the activation to the second, instead of
    being written to memory and read back three times: the same sums per row. `absorbed_bias`:
    `out_bias` with the activation's constant absorbed, where the caller keeps it."""
    shifted_in_bias = shifted_bias(in_bias, activation)
    if absorbed_bias is None:
        absorbed_bias = bias_absorbing_constant(out_weight, out_bias, _SWOOSH_CONSTANT[activation])
    in_weight, out_weight = in_weight.flatten(1), out_weight.flatten(1)
    if not cpu_inference(x):
        shifted = linear(x, in_weight, shifted_in_bias)
        return linear_after_swoosh(shifted, activation, out_weight, out_bias, absorbed_bias, residual)
    hidden_dim, out_dim = in_weight.shape[0], out_weight.shape[0]
    rows_in = x.reshape(-1, x.shape[-1])
    rows_residual = None if residual is None else residual.reshape(-1, out_dim)
    out = x.new_empty(rows_in.shape[0], out_dim)
    band = feedforward_band_rows(in_weight.shape[1], hidden_dim, x.element_size())
    for start in range(0, rows_in.shape[0], band):
        rows = slice(start, start + band)
        shifted = linear(rows_in[rows], in_weight, shifted_in_bias)
        hidden = swoosh_from_shifted(shifted, activation, add_constant=False)
        linear_into(
            out[rows], hidden, out_weight, absorbed_bias, None if rows_residual is None else rows_residual[rows]
        )
    return out.view(x.shape[:-1] + (out_dim,))


def conv_after_swoosh(shifted: Tensor, activation: str, conv: nn.Conv2d, output_shift: float = 0.0) -> Tensor:
    """conv(Swoosh(h)) - output_shift given `shifted` = h - shift, for a conv without zero
    padding (padding would not see the constant)."""
    assert conv.padding in ((0, 0), 0), conv.padding
    y = swoosh_from_shifted(shifted, activation, add_constant=False)
    bias = bias_absorbing_constant(conv.weight, conv.bias, _SWOOSH_CONSTANT[activation]) - output_shift
    return F.conv2d(y, conv.weight, bias, stride=conv.stride, groups=conv.groups)


def shifted_bias(bias: Tensor | None, activation: str) -> Tensor:
    """The bias that makes a layer output h - shift instead of h (the layer must have a bias)."""
    if bias is None:
        raise ValueError("shifted_bias: the layer has no bias")
    return bias - SWOOSH_SHIFT[activation]


def scaled_linear(in_features: int, out_features: int, bias: bool = True, initial_scale: float = 1.0) -> Linear:
    """An nn.Linear whose initial weights (and bias range) are scaled by `initial_scale`."""
    layer = Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.mul_(initial_scale)
        if bias:
            nn.init.uniform_(layer.bias, -0.1 * initial_scale, 0.1 * initial_scale)
    return layer


class ActivationDropoutAndLinear(nn.Module):
    """activation -> dropout (mask shared along `dropout_shared_dim`) -> linear.

    Holds `weight` and `bias` directly (icefall's key layout).
    """

    bias: Tensor | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bias: bool = True,
        activation: str = "SwooshL",
        dropout_p: FloatLike = 0.0,
        dropout_shared_dim: int | None = -1,
        initial_scale: float = 1.0,
    ):
        super().__init__()
        layer = scaled_linear(in_channels, out_channels, bias=bias, initial_scale=initial_scale)
        self.weight = layer.weight
        self.register_parameter("bias", layer.bias)
        self.activation = activation
        self.activation_fn = _ACTIVATIONS[activation]
        self.dropout_p = dropout_p
        self.dropout_shared_dim = dropout_shared_dim

    def forward(self, x: Tensor) -> Tensor:
        x = self.activation_fn(x)
        if self.training:
            x = shared_dropout(x, float(self.dropout_p), self.dropout_shared_dim)
        return linear(x, self.weight, self.bias)

    def forward_shifted(self, shifted: Tensor, residual: Tensor | None = None) -> Tensor:
        """Inference: the same output (+ `residual`) from `shifted` = x - SWOOSH_SHIFT[activation]."""
        return linear_after_swoosh(shifted, self.activation, self.weight, self.bias, self.absorbed_bias(), residual)

    def absorbed_bias(self) -> Tensor | None:
        """`bias_absorbing_constant` of the current weights, kept between inference calls (a
        reduction over the whole weight matrix each call otherwise); None while exporting or
        recording gradients."""
        if torch.is_grad_enabled() or is_exporting():
            return None
        params = [p for p in (self.weight, self.bias) if p is not None]
        if any(p.is_inference() for p in params):  # no version counter to see changes by
            return None
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if getattr(self, "_absorbed", (None, None))[0] != key:
            self._absorbed = (key, bias_absorbing_constant(self.weight, self.bias, _SWOOSH_CONSTANT[self.activation]))
        return self._absorbed[1]


def shared_dropout(x: Tensor, p: float, shared_dim: int | None) -> Tensor:
    """Dropout whose mask is shared along `shared_dim` (plain dropout when None)."""
    if p == 0.0:
        return x
    if shared_dim is None:
        return F.dropout(x, p=p, training=True)
    shape = list(x.shape)
    shape[shared_dim] = 1
    mask = torch.rand(shape, device=x.device) > p
    return x * mask.to(x.dtype) * (1.0 / (1.0 - p))


class Dropout2(nn.Module):
    """nn.Dropout with a schedulable rate."""

    def __init__(self, p: FloatLike):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return F.dropout(x, p=float(self.p), training=True)


class Dropout3(nn.Module):
    """Dropout with a schedulable rate and a mask shared along `shared_dim`."""

    def __init__(self, p: FloatLike, shared_dim: int):
        super().__init__()
        self.p = p
        self.shared_dim = shared_dim

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return shared_dropout(x, float(self.p), self.shared_dim)


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------
class BiasNorm(nn.Module):
    """x * exp(log_scale) / rms(x - bias): LayerNorm's cheaper cousin, with the bias used only
    to compute the scale."""

    def __init__(
        self,
        num_channels: int,
        channel_dim: int = -1,
        log_scale: float = 1.0,
        log_scale_min: float = -1.5,
        log_scale_max: float = 1.5,
    ):
        super().__init__()
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.log_scale = nn.Parameter(torch.tensor(log_scale))
        self.bias = nn.Parameter(torch.empty(num_channels).normal_(mean=0, std=1e-4))
        self.log_scale_min = log_scale_min
        self.log_scale_max = log_scale_max

    def forward(self, x: Tensor) -> Tensor:
        channel_dim = self.channel_dim % x.ndim
        bias = self.bias.reshape((-1,) + (1,) * (x.ndim - channel_dim - 1))
        log_scale: Tensor = self.log_scale
        if self.training:
            log_scale = limit_param_value(log_scale, self.log_scale_min, self.log_scale_max)
        scales = torch.mean((x - bias) ** 2, dim=channel_dim, keepdim=True) ** -0.5
        return x * (scales * log_scale.exp())


# --------------------------------------------------------------------------------------------
# Gradient-only regularisers (identity in the forward pass)
# --------------------------------------------------------------------------------------------
class _LimitParamValue(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, min_value: float, max_value: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.limits = (min_value, max_value)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        min_value, max_value = ctx.limits
        # Below the minimum, flip positive gradients (so SGD pushes x up); above the maximum,
        # flip negative ones.
        flip = ((grad > 0) & (x < min_value)) | ((grad < 0) & (x > max_value))
        return torch.where(flip, -grad, grad), None, None


def limit_param_value(x: Tensor, min_value: float, max_value: float, prob: float = 0.6) -> Tensor:
    """During training, steer a parameter back into [min, max] through its gradient."""
    if random.random() < prob:
        return _LimitParamValue.apply(x, min_value, max_value)
    return x


class _WithLoss(torch.autograd.Function):
    """Returns x; in backward, acts as if y.sum() had been added to the loss."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor) -> Tensor:
        ctx.y_shape = y.shape
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, torch.ones(ctx.y_shape, dtype=grad.dtype, device=grad.device)


def penalize_abs_values_gt(x: Tensor, limit: float, penalty: float) -> Tensor:
    """Adds penalty * relu(|x| - limit) to the loss (through the gradient only)."""
    over_limit = (x.abs() > limit).to(torch.int8)
    aux_loss = penalty * ((x.sign() * over_limit).to(torch.int8) * x)
    return _WithLoss.apply(x, aux_loss)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.alpha, None


class ScaleGrad(nn.Module):
    """Identity whose gradient is multiplied by `alpha` in training."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return _ScaleGrad.apply(x, self.alpha)


def _atanh(x: float) -> float:
    eps = 1.0e-10  # keeps x = +-1 finite
    return (math.log(1 + x + eps) - math.log(1 - x + eps)) / 2.0


def _proportion_positive_to_mean(p: float) -> float:
    """For a Gaussian, the mean/stddev ratio at which a proportion p of values is positive
    (with icefall's crude inverse-erf approximation)."""
    return 0.8139535143 * _atanh(2 * p - 1)


def _abs_to_rms(x: float) -> float:
    """For a Gaussian, rms = sqrt(pi / 2) * mean absolute value."""
    return 1.25331413732 * x


class _BalancerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, limits: tuple[float, ...], channel_dim: int) -> Tensor:
        ctx.save_for_backward(x)
        ctx.limits = limits
        ctx.channel_dim = channel_dim
        return x.view_as(x)

    @staticmethod
    def backward(ctx, x_grad: Tensor):
        (x,) = ctx.saved_tensors
        min_mean, max_mean, min_rms, max_rms, grad_scale = ctx.limits
        try:
            with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
                x = x.detach().float().requires_grad_(True)
                dims = [d for d in range(x.ndim) if d != ctx.channel_dim]
                uncentered_var = (x**2).mean(dim=dims, keepdim=True)
                mean = x.mean(dim=dims, keepdim=True)
                stddev = (uncentered_var - mean * mean).clamp(min=1.0e-20).sqrt()
                rms = uncentered_var.clamp(min=1.0e-20).sqrt()
                m = mean / stddev
                mean_loss = (m - m.clamp(min=min_mean, max=max_mean)).abs()
                rms_loss = (rms.clamp(min=min_rms, max=max_rms) / rms).log().abs()
                loss = mean_loss + rms_loss
                (loss_grad,) = torch.autograd.grad(loss, x, torch.ones_like(loss))
                loss_grad_rms = (loss_grad**2).mean(dim=dims, keepdim=True).sqrt().clamp(min=1.0e-20)
                loss_grad = loss_grad * (grad_scale / loss_grad_rms)
                grad_float = x_grad.float()
                x_grad = (grad_float + grad_float.abs() * loss_grad).to(x_grad.dtype)
        except RuntimeError as error:  # e.g. out of memory: skip the correction this time
            logging.info(f"Balancer backward skipped: {error}")
        return x_grad, None, None


class Balancer(nn.Module):
    """Identity in the forward pass; in training, nudges gradients so that each channel keeps
    its proportion of positive values within [min_positive, max_positive] and its mean absolute
    value within [min_abs, max_abs]. Applied on a random fraction `prob` of calls."""

    def __init__(
        self,
        num_channels: int,
        channel_dim: int,
        min_positive: FloatLike = 0.05,
        max_positive: FloatLike = 0.95,
        min_abs: FloatLike = 0.2,
        max_abs: FloatLike = 100.0,
        grad_scale: FloatLike = 0.04,
        prob: FloatLike | None = None,
    ):
        super().__init__()
        if prob is None:
            prob = ScheduledFloat((0.0, 0.5), (8000.0, 0.125), default=0.4)
        self.prob = prob
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.min_positive = min_positive
        self.max_positive = max_positive
        self.min_abs = min_abs
        self.max_abs = max_abs
        self.grad_scale = grad_scale

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and x.requires_grad) or random.random() >= float(self.prob):
            return x
        limits = (
            _proportion_positive_to_mean(float(self.min_positive)),
            _proportion_positive_to_mean(float(self.max_positive)),
            _abs_to_rms(float(self.min_abs)),
            _abs_to_rms(float(self.max_abs)),
            float(self.grad_scale),
        )
        return _BalancerFunction.apply(x, limits, self.channel_dim % x.ndim)


def whitening_metric(x: Tensor, num_groups: int) -> Tensor:
    """1.0 when the centred covariance of each channel group is a multiple of the identity (the
    same multiple for all groups); larger the less 'white' x is."""
    x = x.reshape(-1, x.shape[-1])
    num_frames, num_channels = x.shape
    group_size = num_channels // num_groups
    x = x.reshape(num_frames, num_groups, group_size).transpose(0, 1)
    x = x - x.mean(dim=1, keepdim=True)
    covar = torch.matmul(x.transpose(1, 2), x)
    mean_diag = torch.diagonal(covar, dim1=1, dim2=2).mean()
    mean_diag_of_square = (covar**2).sum() / (num_groups * group_size)
    return mean_diag_of_square / (mean_diag**2 + 1.0e-20)


class _WhiteningPenaltyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, module: Whiten) -> Tensor:
        ctx.save_for_backward(x)
        ctx.module = module
        return x.view_as(x)

    @staticmethod
    def backward(ctx, x_grad: Tensor):
        (x,) = ctx.saved_tensors
        w = ctx.module
        try:
            with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
                x = x.detach().float().requires_grad_(True)
                metric = whitening_metric(x, w.num_groups)
                if metric < float(w.whitening_limit):
                    w.prob = w.min_prob
                    return x_grad, None
                w.prob = w.max_prob
                (penalty_grad,) = torch.autograd.grad(metric, x)
                scale = float(w.grad_scale) * (x_grad.float().norm() / (penalty_grad.norm() + 1.0e-20))
                return x_grad + (penalty_grad * scale).to(x_grad.dtype), None
        except RuntimeError as error:
            logging.info(f"Whiten backward skipped: {error}")
        return x_grad, None


class Whiten(nn.Module):
    """Identity in the forward pass; in training, adds a gradient that pushes the feature
    covariance towards white whenever `whitening_metric` exceeds `whitening_limit`."""

    def __init__(
        self,
        num_groups: int,
        whitening_limit: FloatLike,
        prob: float | tuple[float, float],
        grad_scale: FloatLike,
    ):
        super().__init__()
        self.num_groups = num_groups
        self.whitening_limit = whitening_limit
        self.grad_scale = grad_scale
        if isinstance(prob, float):
            prob = (prob, prob)
        self.min_prob, self.max_prob = prob
        self.prob = self.max_prob

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and x.requires_grad) or random.random() > self.prob:
            return x
        if float(self.grad_scale) == 0:
            return x
        return _WhiteningPenaltyFunction.apply(x, self)


def whitening_schedule(x: float, ratio: float = 2.0) -> ScheduledFloat:
    return ScheduledFloat((0.0, x), (20000.0, ratio * x), default=x)


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------
class ChunkCausalDepthwiseConv1d(nn.Module):
    """A depthwise conv that sees no frame of a later chunk.

    It sums a causal conv of half the width (left-padded) and a full-width conv applied inside
    each chunk, whose output is scaled per position by learned corrections near the chunk edges.
    """

    def __init__(self, channels: int, kernel_size: int, initial_scale: float = 1.0, bias: bool = True):
        super().__init__()
        assert kernel_size % 2 == 1, kernel_size
        self.kernel_size = kernel_size
        self.causal_conv = nn.Conv1d(channels, channels, kernel_size=(kernel_size + 1) // 2, groups=channels, bias=True)
        self.chunkwise_conv = nn.Conv1d(
            channels, channels, kernel_size=kernel_size, padding=kernel_size // 2, groups=channels, bias=bias
        )
        # Row 0: corrections near a chunk's left edge; row 1: near its right edge.
        self.chunkwise_conv_scale = nn.Parameter(torch.zeros(2, channels, kernel_size))
        with torch.no_grad():
            self.causal_conv.weight.mul_(initial_scale)
            self.chunkwise_conv.weight.mul_(initial_scale)
            if bias and self.causal_conv.bias is not None:
                nn.init.uniform_(self.causal_conv.bias, -0.1 * initial_scale, 0.1 * initial_scale)

    def forward(self, x: Tensor, chunk_size: int = -1) -> Tensor:
        """x: (batch, channels, time)."""
        batch_size, channels, seq_len = x.shape
        left_pad = self.kernel_size // 2
        if chunk_size < 0 or chunk_size > seq_len:
            chunk_size = seq_len
        right_pad = -seq_len % chunk_size
        x = F.pad(x, (left_pad, right_pad))

        x_causal = self.causal_conv(x[..., : left_pad + seq_len])

        x_chunk = x[..., left_pad:]
        num_chunks = x_chunk.shape[2] // chunk_size
        x_chunk = (
            x_chunk.reshape(batch_size, channels, num_chunks, chunk_size)
            .permute(0, 2, 1, 3)
            .reshape(batch_size * num_chunks, channels, chunk_size)
        )
        x_chunk = self.chunkwise_conv(x_chunk) * self._chunk_scale(chunk_size)
        x_chunk = (
            x_chunk.reshape(batch_size, num_chunks, channels, chunk_size)
            .permute(0, 2, 1, 3)
            .reshape(batch_size, channels, num_chunks * chunk_size)[..., :seq_len]
        )
        return x_chunk + x_causal

    def _chunk_scale(self, chunk_size: int) -> Tensor:
        """(channels, chunk_size): 1 + the edge corrections aligned to the chunk's two ends."""
        left, right = self.chunkwise_conv_scale[0], self.chunkwise_conv_scale[1]
        if chunk_size < self.kernel_size:
            left, right = left[:, :chunk_size], right[:, -chunk_size:]
        else:
            pad = chunk_size - self.kernel_size
            left = F.pad(left, (0, pad))
            right = F.pad(right, (pad, 0))
        return 1.0 + (left + right)


def convert_num_channels(x: Tensor, num_channels: int) -> Tensor:
    """Truncate or zero-pad the last dimension to `num_channels`."""
    if num_channels <= x.shape[-1]:
        return x[..., :num_channels]
    return F.pad(x, (0, num_channels - x.shape[-1]))


def sequence_mask(batch_size: int, rate: float, like: Tensor) -> Tensor | None:
    """A (batch, 1) 0/1 mask dropping whole sequences with probability `rate` (None if 0)."""
    if rate == 0.0:
        return None
    return (torch.rand(batch_size, 1, device=like.device) > rate).to(like.dtype)


__all__: Sequence[str] = [
    "ActivationDropoutAndLinear",
    "Balancer",
    "BiasNorm",
    "ChunkCausalDepthwiseConv1d",
    "Dropout2",
    "Dropout3",
    "FloatLike",
    "PiecewiseLinear",
    "ScaleGrad",
    "ScheduledFloat",
    "SwooshL",
    "SWOOSH_SHIFT",
    "SwooshR",
    "Whiten",
    "bias_absorbing_constant",
    "conv_after_swoosh",
    "convert_num_channels",
    "limit_param_value",
    "linear_after_swoosh",
    "penalize_abs_values_gt",
    "scaled_linear",
    "sequence_mask",
    "set_batch_count",
    "shifted_bias",
    "swoosh_feedforward",
    "swoosh_from_shifted",
    "swoosh_l",
    "swoosh_r",
    "whitening_metric",
    "whitening_schedule",
]
