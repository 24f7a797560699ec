"""RNN-T losses in plain PyTorch: full, "simple" (additive joiner), smoothed, and pruned.

A pure-PyTorch counterpart of k2's ``rnnt_loss`` module for the regular transducer topology
(a blank advances one frame, a symbol advances one label position and stays on the frame),
with k2's function names, arguments and semantics, so icefall-style training code can call it
unchanged (see ``AsrModel.forward_transducer``).

Conventions (as in k2):

- ``symbols`` (B, S): padded label sequences; ``termination_symbol`` is the blank.
- ``boundary`` (B, 4) int64 rows ``[0, 0, S_b, T_b]`` (label and frame counts of each item);
  ``None`` means ``[0, 0, S, T]`` for every item.
- Every loss reduces to a lattice of log-probabilities for :func:`mutual_information_recursion`:
  ``px[b, s, t]`` (B, S, T+1) emits ``symbols[b, s]`` at frame ``t`` from label position ``s``;
  ``py[b, s, t]`` (B, S+1, T) emits blank there. ``px[b, :, T_b]`` is -inf: no symbol can be
  emitted after the last frame, so every path ends with a blank on frame ``T_b - 1``.
- ``reduction`` is "none" (per-item losses, shape (B,)), "mean" or "sum" over the batch.

Pruned training (``rnnt_loss_smoothed(..., return_grad=True)`` -> :func:`get_rnnt_prune_ranges`
-> :func:`do_rnnt_pruning` -> joiner -> :func:`rnnt_loss_pruned`) evaluates the joiner only on
``s_range`` label positions per frame instead of all ``S + 1``.

``backend="k2"`` on any loss dispatches to k2's function of the same name when ``k2`` can be
imported (it is never required).
"""

from __future__ import annotations

import logging
from typing import cast

import torch
from torch import Tensor

from zipa.losses.mutual_information import import_k2, mutual_information_recursion

__all__ = [
    "get_rnnt_logprobs",
    "get_rnnt_logprobs_joint",
    "get_rnnt_logprobs_pruned",
    "get_rnnt_logprobs_smoothed",
    "rnnt_loss_simple",
    "rnnt_loss_smoothed",
    "rnnt_loss",
    "get_rnnt_prune_ranges",
    "do_rnnt_pruning",
    "rnnt_loss_pruned",
]

_NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------
# helpers


def _check_type(rnnt_type: str) -> None:
    if rnnt_type != "regular":
        raise NotImplementedError(f"only rnnt_type='regular' is implemented, got {rnnt_type!r}")


def _check_backend(backend: str) -> bool:
    """True when the call should go to k2."""
    if backend not in ("torch", "k2"):
        raise ValueError(f"backend must be 'torch' or 'k2', got {backend!r}")
    return backend == "k2"


def _k2_kwargs(boundary, delay_penalty, reduction, **extra):
    kwargs = dict(boundary=boundary, reduction=reduction, **extra)
    if delay_penalty > 0.0:
        kwargs["delay_penalty"] = delay_penalty
    return kwargs


def _no_emission_after_last_frame(px: Tensor, boundary: Tensor | None) -> Tensor:
    """Append the frame-T column of -inf to px (B, S, T) -> (B, S, T+1) and, with a boundary,
    also set ``px[b, :, T_b]`` to -inf."""
    B, S, T = px.shape
    px = torch.cat((px, px.new_full((B, S, 1), _NEG_INF)), dim=2)
    if boundary is not None:
        t_end = boundary[:, 3].to(px.device).view(B, 1, 1).expand(B, S, 1)
        px = px.scatter(2, t_end, _NEG_INF)
    return px


def _add_delay_penalty(px: Tensor, boundary: Tensor | None, delay_penalty: float) -> Tensor:
    """Reward early and penalise late symbol emissions, linearly in the frame index around
    the middle frame ``(T_b - 1) / 2`` (the total over a path is zero-mean in time)."""
    if delay_penalty <= 0.0:
        return px
    B, S, T1 = px.shape
    if boundary is None:
        middle = px.new_full((B,), (T1 - 2) / 2)
    else:
        middle = (boundary[:, 3].to(px.device, px.dtype) - 1) / 2
    frames = torch.arange(T1, device=px.device, dtype=px.dtype)
    return px + delay_penalty * (middle.view(B, 1, 1) - frames.view(1, 1, T1))


def _reduce(negated_loss: Tensor, reduction: str | None) -> Tensor:
    if reduction == "none":
        return -negated_loss
    if reduction == "mean":
        return -negated_loss.mean()
    if reduction == "sum":
        return -negated_loss.sum()
    raise ValueError(f"reduction should be 'none', 'mean' or 'sum', got {reduction!r}")


def _check_lm_am(lm: Tensor, am: Tensor, symbols: Tensor) -> tuple[int, int, int, int]:
    if lm.ndim != 3 or am.ndim != 3:
        raise ValueError(f"lm and am must be 3-D, got {tuple(lm.shape)} and {tuple(am.shape)}")
    B, T, C = am.shape
    S = lm.shape[1] - 1
    if lm.shape[0] != B or lm.shape[2] != C:
        raise ValueError(f"lm {tuple(lm.shape)} and am {tuple(am.shape)} disagree on batch or vocabulary")
    if tuple(symbols.shape) != (B, S):
        raise ValueError(f"symbols must have shape {(B, S)}, got {tuple(symbols.shape)}")
    return B, S, T, C


# ---------------------------------------------------------------------------------------------
# lattices


def get_rnnt_logprobs(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
) -> tuple[Tensor, Tensor]:
    """Lattice (px, py) of the "simple" transducer whose joiner is ``lm[b, s] + am[b, t]``.

    Args:
      lm: (B, S+1, C) label-context part of the unnormalised log-probs.
      am: (B, T, C) acoustic part of the unnormalised log-probs.
      symbols, termination_symbol, boundary, rnnt_type: see the module docstring.

    Returns:
      px (B, S, T+1) and py (B, S+1, T), log-softmax(lm[s] + am[t]) of the label / blank,
      computed without materialising the (B, S+1, T, C) sum: the normaliser
      ``log sum_c exp(lm[s, c] + am[t, c])`` is one batched matrix product of the exponentials
      (each shifted by its max for range).
    """
    _check_type(rnnt_type)
    B, S, T, C = _check_lm_am(lm, am, symbols)
    log_norm = _log_normalisers(lm, am)  # (B, S+1, T)
    px = _gather_am(am, symbols) + torch.gather(lm[:, :S], 2, symbols.unsqueeze(-1)) - log_norm[:, :S]
    py = am[:, :, termination_symbol].unsqueeze(1) + lm[:, :, termination_symbol].unsqueeze(2) - log_norm
    return _no_emission_after_last_frame(px, boundary), py


def _log_normalisers(lm: Tensor, am: Tensor) -> Tensor:
    """log sum_c exp(lm[b, s, c] + am[b, t, c]) as (B, S+1, T)."""
    lm_max = lm.amax(dim=2, keepdim=True)
    am_max = am.amax(dim=2, keepdim=True)
    prod = torch.matmul((lm - lm_max).exp(), (am - am_max).exp().transpose(1, 2))
    return (prod + torch.finfo(prod.dtype).tiny).log() + lm_max + am_max.transpose(1, 2)


def _gather_am(am: Tensor, symbols: Tensor) -> Tensor:
    """am[b, t, symbols[b, s]] as (B, S, T)."""
    B, T, _ = am.shape
    S = symbols.shape[1]
    return torch.gather(am.transpose(1, 2), 1, symbols.unsqueeze(2).expand(B, S, T))


def get_rnnt_logprobs_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
) -> tuple[Tensor, Tensor]:
    """Lattice of the smoothed simple transducer: every transition log-prob is the interpolation

        (1 - lm_only_scale - am_only_scale) * log softmax(lm[s] + am[t])
        + lm_only_scale * log softmax(lm[s])
        + am_only_scale * log( u * exp(am[t]) / sum_c u_c exp(am[t, c]) )

    of the joint, the label-context-only and the acoustic-only distributions, where the
    acoustic-only one uses ``u = mean over all (b, s) of softmax(lm[b, s])`` (a "unigram" of
    the label model, padded positions included) as its prior.
    """
    _check_type(rnnt_type)
    B, S, T, C = _check_lm_am(lm, am, symbols)
    tiny = torch.finfo(lm.dtype).tiny
    lm_max = lm.amax(dim=2, keepdim=True)  # (B, S+1, 1)
    am_max = am.amax(dim=2, keepdim=True)  # (B, T, 1)
    lm_exp = (lm - lm_max).exp()
    am_exp = (am - am_max).exp()
    log_norm = (torch.matmul(lm_exp, am_exp.transpose(1, 2)) + tiny).log() + lm_max + am_max.transpose(1, 2)
    lm_sum = lm_exp.sum(dim=2, keepdim=True)  # (B, S+1, 1)
    unigram = (lm_exp / lm_sum).mean(dim=(0, 1)) + tiny  # (C,)
    am_only_norm = ((am_exp @ unigram).log() + am_max.squeeze(2)).unsqueeze(1)  # (B, 1, T)
    lm_only_norm = lm_sum.log() + lm_max  # (B, S+1, 1)
    log_unigram = unigram.log()

    px_am = _gather_am(am, symbols)  # (B, S, T)
    px_lm = torch.gather(lm[:, :S], 2, symbols.unsqueeze(-1))  # (B, S, 1)
    px_joint = px_am + px_lm - log_norm[:, :S]
    px_lm_only = px_lm - lm_only_norm[:, :S]
    px_am_only = px_am + log_unigram[symbols].unsqueeze(-1) - am_only_norm

    py_am = am[:, :, termination_symbol].unsqueeze(1)  # (B, 1, T)
    py_lm = lm[:, :, termination_symbol].unsqueeze(2)  # (B, S+1, 1)
    py_joint = py_am + py_lm - log_norm
    py_lm_only = py_lm - lm_only_norm
    py_am_only = py_am + log_unigram[termination_symbol] - am_only_norm

    joint_scale = 1.0 - lm_only_scale - am_only_scale
    px = joint_scale * px_joint + lm_only_scale * px_lm_only + am_only_scale * px_am_only
    py = joint_scale * py_joint + lm_only_scale * py_lm_only + am_only_scale * py_am_only
    return _no_emission_after_last_frame(px, boundary), py


def get_rnnt_logprobs_joint(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
) -> tuple[Tensor, Tensor]:
    """Lattice (px, py) from full joiner output ``logits`` (B, T, S+1, C)."""
    _check_type(rnnt_type)
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, T, S+1, C), got {tuple(logits.shape)}")
    B, T, S1, C = logits.shape
    S = S1 - 1
    if tuple(symbols.shape) != (B, S):
        raise ValueError(f"symbols must have shape {(B, S)}, got {tuple(symbols.shape)}")
    log_norm = torch.logsumexp(logits, dim=3)  # (B, T, S+1)
    px = torch.gather(logits[:, :, :S], 3, symbols.view(B, 1, S, 1).expand(B, T, S, 1)).squeeze(3)
    px = (px - log_norm[:, :, :S]).transpose(1, 2)  # (B, S, T)
    py = (logits[..., termination_symbol] - log_norm).transpose(1, 2).contiguous()  # (B, S+1, T)
    return _no_emission_after_last_frame(px, boundary), py


def get_rnnt_logprobs_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
) -> tuple[Tensor, Tensor]:
    """Lattice (px, py) from pruned joiner output ``logits`` (B, T, s_range, C), where
    ``logits[b, t, k]`` belongs to label position ``ranges[b, t, k]``; lattice cells outside
    the ranges get -inf."""
    _check_type(rnnt_type)
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, T, s_range, C), got {tuple(logits.shape)}")
    B, T, R, C = logits.shape
    if tuple(ranges.shape) != (B, T, R):
        raise ValueError(f"ranges must have shape {(B, T, R)}, got {tuple(ranges.shape)}")
    S = symbols.shape[1]
    log_norm = torch.logsumexp(logits, dim=3)  # (B, T, R)
    # The label that would be emitted at each kept position (blank at position S, never used).
    with_final = torch.cat((symbols, symbols.new_full((B, 1), termination_symbol)), dim=1)
    kept_symbols = torch.gather(with_final, 1, ranges.reshape(B, T * R)).view(B, T, R, 1)
    px_kept = torch.gather(logits, 3, kept_symbols).squeeze(3) - log_norm
    py_kept = logits[..., termination_symbol] - log_norm
    # Scatter the kept positions into full-width (B, T, S+1) rows of -inf.
    empty = logits.new_full((B, T, S + 1), _NEG_INF)
    px = empty.scatter(2, ranges, px_kept)[:, :, :S].transpose(1, 2)  # (B, S, T)
    py = empty.scatter(2, ranges, py_kept).transpose(1, 2).contiguous()  # (B, S+1, T)
    return _no_emission_after_last_frame(px, boundary), py


# ---------------------------------------------------------------------------------------------
# losses


def rnnt_loss_simple(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str | None = "mean",
    return_grad: bool = False,
    backend: str = "torch",
) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
    """RNN-T loss of the additive joiner ``lm[b, s] + am[b, t]`` (see :func:`get_rnnt_logprobs`).

    With ``return_grad`` also returns ``(px_grad, py_grad)``: the derivatives of the total
    log-probability (``-loss`` with reduction "none", summed) w.r.t. px and py, i.e. the
    occupation probabilities that :func:`get_rnnt_prune_ranges` consumes.
    """
    if _check_backend(backend):
        return import_k2().rnnt_loss_simple(
            lm=lm,
            am=am,
            symbols=symbols,
            termination_symbol=termination_symbol,
            **_k2_kwargs(boundary, delay_penalty, reduction, return_grad=return_grad),
        )
    px, py = get_rnnt_logprobs(lm, am, symbols, termination_symbol, boundary, rnnt_type)
    px = _add_delay_penalty(px, boundary, delay_penalty)
    return _finish(px, py, boundary, reduction, return_grad)


def rnnt_loss_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str | None = "mean",
    return_grad: bool = False,
    backend: str = "torch",
) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
    """Simple RNN-T loss on the smoothed lattice of :func:`get_rnnt_logprobs_smoothed`
    (``lm_only_scale = am_only_scale = 0`` gives :func:`rnnt_loss_simple`). ``return_grad``
    as in :func:`rnnt_loss_simple`."""
    if _check_backend(backend):
        return import_k2().rnnt_loss_smoothed(
            lm=lm,
            am=am,
            symbols=symbols,
            termination_symbol=termination_symbol,
            lm_only_scale=lm_only_scale,
            am_only_scale=am_only_scale,
            **_k2_kwargs(boundary, delay_penalty, reduction, return_grad=return_grad),
        )
    px, py = get_rnnt_logprobs_smoothed(
        lm, am, symbols, termination_symbol, lm_only_scale, am_only_scale, boundary, rnnt_type
    )
    px = _add_delay_penalty(px, boundary, delay_penalty)
    return _finish(px, py, boundary, reduction, return_grad)


def rnnt_loss(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str | None = "mean",
    backend: str = "torch",
) -> Tensor:
    """Full (unpruned) RNN-T loss of joiner output ``logits`` (B, T, S+1, C)."""
    if _check_backend(backend):
        return import_k2().rnnt_loss(
            logits=logits,
            symbols=symbols,
            termination_symbol=termination_symbol,
            **_k2_kwargs(boundary, delay_penalty, reduction),
        )
    px, py = get_rnnt_logprobs_joint(logits, symbols, termination_symbol, boundary, rnnt_type)
    px = _add_delay_penalty(px, boundary, delay_penalty)
    return _finish(px, py, boundary, reduction, False)


def rnnt_loss_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str | None = "mean",
    backend: str = "torch",
) -> Tensor:
    """RNN-T loss of pruned joiner output ``logits`` (B, T, s_range, C) whose positions are
    given by ``ranges`` (B, T, s_range) from :func:`get_rnnt_prune_ranges`: paths leaving the
    kept positions are excluded. With ``s_range = S + 1`` it equals :func:`rnnt_loss`."""
    if _check_backend(backend):
        return import_k2().rnnt_loss_pruned(
            logits=logits,
            symbols=symbols,
            ranges=ranges,
            termination_symbol=termination_symbol,
            **_k2_kwargs(boundary, delay_penalty, reduction),
        )
    px, py = get_rnnt_logprobs_pruned(logits, symbols, ranges, termination_symbol, boundary, rnnt_type)
    px = _add_delay_penalty(px, boundary, delay_penalty)
    return _finish(px, py, boundary, reduction, False)


def _finish(px, py, boundary, reduction, return_grad):
    if return_grad:
        scores, grads = mutual_information_recursion(px, py, boundary=boundary, return_grad=True)
        return _reduce(scores, reduction), grads
    return _reduce(cast(Tensor, mutual_information_recursion(px, py, boundary=boundary)), reduction)


# ---------------------------------------------------------------------------------------------
# pruning


def _monotonic_lower_bound(x: Tensor) -> Tensor:
    """Largest sequence that is non-decreasing along the last dim and <= x elementwise
    (a reversed running minimum)."""
    return torch.flip(torch.cummin(torch.flip(x, dims=(-1,)), dim=-1).values, dims=(-1,))


def _adjust_pruning_lower_bound(s_begin: Tensor, s_range: int) -> Tensor:
    """Make the per-frame window starts (B, T) usable: non-decreasing in t, starting at 0 on
    frame 0 (more generally ``s_begin[t] <= (s_range - 1) * t``), and never advancing by
    ``s_range`` or more between frames (so no label position is skipped).

    The last constraint, ``s_begin[t+1] - s_begin[t] <= s_range - 1``, says that
    ``(s_range - 1) * t - s_begin[t]`` is non-decreasing; it is imposed by taking the monotonic
    lower bound of that transformed sequence (clamped at 0 for the second constraint) and
    transforming back.
    """
    T = s_begin.shape[-1]
    s_begin = _monotonic_lower_bound(s_begin)
    slope = (s_range - 1) * torch.arange(T, device=s_begin.device)
    transformed = _monotonic_lower_bound(slope - s_begin).clamp(min=0)
    return slope - transformed


def get_rnnt_prune_ranges(
    px_grad: Tensor,
    py_grad: Tensor,
    boundary: Tensor,
    s_range: int,
) -> Tensor:
    """Per-frame windows of ``s_range`` consecutive label positions holding most of the
    occupation probability of the simple loss's lattice (the pruning bounds of the pruned
    RNN-T paper, arXiv:2206.13236, section 3.2).

    Args:
      px_grad: (B, S, T+1) occupation probabilities of px (``return_grad`` of the simple loss).
      py_grad: (B, S+1, T) occupation probabilities of py.
      boundary: (B, 4) int64 ``[0, 0, S_b, T_b]`` rows.
      s_range: window size (the ``--prune-range``). It is raised to the smallest size that can
        reach ``S_b`` in ``T_b`` frames and capped at ``S + 1`` (no pruning).

    Returns:
      ranges (B, T, s_range) int64: ``ranges[b, t] = s_begin[b, t] + arange(s_range)`` where
      ``s_begin`` starts at 0, is non-decreasing in t, never jumps by ``s_range`` or more, and
      on frames ``>= T_b - 1`` is ``max(S_b - s_range + 1, 0)`` so that the final label position
      is kept on the last frame. All values lie in ``[0, S]``.
    """
    B, S, T1 = px_grad.shape
    T = py_grad.shape[-1]
    if T1 != T + 1:
        raise NotImplementedError("only the regular topology (px_grad of shape (B, S, T+1)) is supported")
    if tuple(py_grad.shape) != (B, S + 1, T):
        raise ValueError(f"py_grad must have shape {(B, S + 1, T)}, got {tuple(py_grad.shape)}")
    if tuple(boundary.shape) != (B, 4):
        raise ValueError(f"boundary must have shape ({B}, 4), got {tuple(boundary.shape)}")
    boundary = boundary.to(px_grad.device)
    s_lens, t_lens = boundary[:, 2], boundary[:, 3]

    # A window must be able to advance from 0 to S_b over T_b frames: (s_range-1) * T_b >= S_b.
    s_range_min = int(((s_lens - 1).div(t_lens.clamp(min=1), rounding_mode="trunc") + 2).max().item())
    if s_range < s_range_min:
        logging.warning(
            "get_rnnt_prune_ranges: s_range=%d is too small for S=%s, T=%s; using %d",
            s_range,
            s_lens.tolist(),
            t_lens.tolist(),
            s_range_min,
        )
        s_range = s_range_min
    if s_range > S:
        s_range = S + 1  # keep everything
    if s_range < 2:
        raise ValueError(f"s_range must be >= 2 for the regular transducer, got {s_range}")

    n_windows = S + 2 - s_range
    # Score of the window starting at k on frame t: the blank occupation of positions
    # k..k+s_range-1 on that frame minus the occupation of the label step from k-1 into k on
    # it (paths that enter the window from below on this frame start outside it).
    blank_mass = py_grad.unfold(1, s_range, 1).sum(dim=-1)  # (B, n_windows, T)
    entering = torch.cat((px_grad.new_zeros(B, 1, T1), px_grad), dim=1)[:, :n_windows, :T]
    s_begin = torch.argmax(blank_mass - entering, dim=1)  # (B, T)

    frames = torch.arange(T, device=px_grad.device).view(1, T)
    last_start = (s_lens - s_range + 1).clamp(min=0).view(B, 1)
    s_begin = torch.where(frames < t_lens.view(B, 1) - 1, s_begin, last_start)
    s_begin = _adjust_pruning_lower_bound(s_begin, s_range)
    return s_begin.unsqueeze(2) + torch.arange(s_range, device=px_grad.device)


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor) -> tuple[Tensor, Tensor]:
    """Expand encoder-side ``am`` (B, T, D_am) and gather decoder-side ``lm`` (B, S+1, D_lm)
    onto the kept positions: returns (B, T, s_range, D_am) and (B, T, s_range, D_lm), to be
    combined by the joiner."""
    B, T, R = ranges.shape
    if am.shape[0] != B or lm.shape[0] != B or am.shape[1] != T:
        raise ValueError(f"ranges {tuple(ranges.shape)} does not match am {tuple(am.shape)} / lm {tuple(lm.shape)}")
    dim = lm.shape[-1]
    am_pruned = am.unsqueeze(2).expand(B, T, R, am.shape[-1])
    lm_pruned = torch.gather(lm, 1, ranges.reshape(B, T * R, 1).expand(B, T * R, dim)).view(B, T, R, dim)
    return am_pruned, lm_pruned
