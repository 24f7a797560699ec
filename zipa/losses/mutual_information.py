"""The mutual-information recursion over a monotonic (s, t) lattice, in plain PyTorch.

This is the dynamic programme under every RNN-T loss in this package (the same quantity as
k2's ``mutual_information_recursion``, regular transducer topology).  Given log-weights

    px[b, s, t]  (B, S, T+1)   for the step (s, t) -> (s+1, t)
    py[b, s, t]  (B, S+1, T)   for the step (s, t) -> (s, t+1)

it computes, for every batch item, over the cells of the region given by
``boundary[b] = [s_begin, t_begin, s_end, t_end]`` (default ``[0, 0, S, T]``)::

    p[b, s_begin, t_begin] = 0
    p[b, s, t] = logaddexp(p[b, s-1, t] + px[b, s-1, t], p[b, s, t-1] + py[b, s, t-1])

with out-of-region terms treated as -inf, and returns ``p[b, s_end, t_end]``.

How it is computed
------------------
Cell (s, t) depends only on cells of the previous anti-diagonal ``d - 1`` (``d = s + t``).  The
inputs are re-laid out ("skewed") once so that anti-diagonal ``d`` is a contiguous ``(B, S+1)``
slab indexed by ``s``; then the forward pass is a single Python loop over the ``S + T``
diagonals, each step a few element-wise ops on all cells of the diagonal and all batch items.

The backward pass does not differentiate through that loop.  After the forward sweep the local
edge posteriors ``exp(p[pred] + edge - p[cell])`` of every edge are formed for the whole lattice
at once; a second single loop over diagonals (in reverse) accumulates the occupation
probabilities ``g`` of every cell (the derivative of the total w.r.t. ``p``) in linear space,
and the derivatives w.r.t. ``px``/``py`` are edge posterior times occupation of the edge's
destination.  The code is device-agnostic and works in float32 or float64 (the dtype of
``px``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["mutual_information_recursion"]

_NEG_INF = float("-inf")


def _skew(x: Tensor, num_diags: int) -> Tensor:
    """(B, R, C) -> (D, B, R) with ``out[d, b, r] = x[b, r, d - r]``; -inf where ``d - r``
    falls outside ``[0, C)`` (requires ``D >= C``).

    Pads each row with R -inf on the left and ``D - C`` on the right (width W = R + D), so that
    ``out[d, b, r]`` is the padded element at ``(b, r, d - r + R)``: flat offset
    ``b*R*W + r*(W-1) + d + R``, i.e. a strided view with row stride W - 1."""
    B, R, C = x.shape
    W = R + num_diags
    padded = F.pad(x, (R, num_diags - C), value=_NEG_INF).contiguous()
    view = padded.as_strided((B, R, num_diags), (R * W, W - 1, 1), padded.storage_offset() + R)
    return view.permute(2, 0, 1).contiguous()


def _unskew(y: Tensor, num_cols: int) -> Tensor:
    """Inverse of :func:`_skew`: (D, B, R) -> (B, R, C) with ``out[b, r, t] = y[r + t, b, r]``
    (requires ``D >= R + C - 1``): in the (B, R, D) layout that is a strided view with row
    stride D + 1."""
    D, B, R = y.shape
    rows = y.permute(1, 2, 0).contiguous()
    return rows.as_strided((B, R, num_cols), (R * D, D + 1, 1), rows.storage_offset()).contiguous()


def _check_boundary(boundary: Tensor, B: int, S: int, T: int) -> Tensor:
    if boundary.shape != (B, 4):
        raise ValueError(f"boundary must have shape ({B}, 4), got {tuple(boundary.shape)}")
    if boundary.dtype != torch.int64:
        raise TypeError(f"boundary must be int64, got {boundary.dtype}")
    b = boundary.detach().cpu()
    s_begin, t_begin, s_end, t_end = b.unbind(1)
    if not (
        bool((s_begin >= 0).all())
        and bool((s_begin <= s_end).all())
        and bool((s_end <= S).all())
        and bool((t_begin >= 0).all())
        and bool((t_begin <= t_end).all())
        and bool((t_end <= T).all())
    ):
        raise ValueError(
            f"boundary rows must satisfy 0 <= s_begin <= s_end <= S={S} and 0 <= t_begin <= t_end <= T={T}; "
            f"got {b.tolist()}"
        )
    return b


class _Lattice:
    """Forward quantities of one recursion, kept for the backward sweep."""

    def __init__(self, px: Tensor, py: Tensor, boundary: Tensor | None):
        B, S, T1 = px.shape
        T = T1 - 1
        D = S + T + 1
        device, dtype = px.device, px.dtype
        self.shape = (B, S, T)
        batch = torch.arange(B, device=device)
        # ex[d, b, s] = px[b, s-1, d-s]: weight of the step into cell (s, d-s) from (s-1, d-s).
        # ey[d, b, s] = py[b, s, d-s-1]: weight of the step into cell (s, d-s) from (s, d-s-1).
        self.ex = _skew(F.pad(px, (0, 0, 1, 0), value=_NEG_INF), D)
        self.ey = _skew(F.pad(py, (1, 0), value=_NEG_INF), D)
        # q[d, b, 1 + s] = p[b, s, d - s]; column 0 is a permanent -inf pad (no cell at s = -1).
        q = torch.full((D, B, S + 2), _NEG_INF, device=device, dtype=dtype)
        start = None
        if boundary is None:
            q[0, :, 1] = 0.0
            self.end_diag = torch.full((B,), S + T, device=device, dtype=torch.int64)
            self.end_s = torch.full((B,), S, device=device, dtype=torch.int64)
        else:
            b_cpu = _check_boundary(boundary, B, S, T)
            boundary = boundary.to(device)
            s_begin, t_begin, s_end, t_end = boundary.unbind(1)
            if bool((b_cpu[:, :2] != 0).any()):
                # Starts off the origin: re-impose p = 0 at each start cell after its diagonal is
                # computed (all its predecessors are -inf, so max() with 0 sets it exactly).
                start = torch.full((D, B, S + 1), _NEG_INF, device=device, dtype=dtype)
                start[s_begin + t_begin, batch, s_begin] = 0.0
                q[0, :, 1:] = start[0]
            else:
                q[0, :, 1] = 0.0
            self.end_diag = s_end + t_end
            self.end_s = s_end
        ex, ey = self.ex, self.ey
        for d in range(1, D):
            prev = q[d - 1]
            out = q[d, :, 1:]
            torch.logaddexp(prev[:, :-1] + ex[d], prev[:, 1:] + ey[d], out=out)
            if start is not None:
                torch.maximum(out, start[d], out=out)
        self.q = q
        self.scores = q[self.end_diag, batch, self.end_s + 1]

    def occupation_grads(self) -> tuple[Tensor, Tensor]:
        """Derivatives of ``scores.sum()`` w.r.t. px and py (edge occupation probabilities)."""
        B, S, T = self.shape
        q, ex, ey = self.q, self.ex, self.ey
        D = q.shape[0]
        cell = q[1:, :, 1:]
        # Posterior of each incoming edge of each cell on diagonals 1..D-1 given the cell;
        # 0/0 (unreachable cell, -inf - -inf) becomes 0.
        wx = torch.exp(q[:-1, :, :-1] + ex[1:] - cell)
        wy = torch.exp(q[:-1, :, 1:] + ey[1:] - cell)
        wx = wx.masked_fill_(torch.isnan(wx), 0.0)
        wy = wy.masked_fill_(torch.isnan(wy), 0.0)
        g = torch.zeros((D, B, S + 1), device=q.device, dtype=q.dtype)
        g[self.end_diag, torch.arange(B, device=q.device), self.end_s] = 1.0
        for d in range(D - 2, -1, -1):
            nxt = g[d + 1]
            # successor (s, t+1) sits at the same index s on diagonal d+1 ...
            g[d].addcmul_(wy[d], nxt)
            # ... and successor (s+1, t) at index s+1.
            g[d, :, :-1].addcmul_(wx[d, :, 1:], nxt[:, 1:])
        zero = torch.zeros((1, B, S + 1), device=q.device, dtype=q.dtype)
        ox = torch.cat((zero, wx * g[1:]), dim=0)  # ox[d, b, s]: occupation of px[b, s-1, d-s]
        oy = torch.cat((zero, wy * g[1:]), dim=0)  # oy[d, b, s]: occupation of py[b, s, d-s-1]
        px_grad = _unskew(ox, T + 1)[:, 1:, :].contiguous()
        py_grad = _unskew(oy, T + 1)[:, :, 1:].contiguous()
        return px_grad, py_grad


class _MutualInformationFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, px: Tensor, py: Tensor, boundary: Tensor | None, return_grad: bool, grads_out: list[Tensor | None]
    ) -> Tensor:
        lattice = _Lattice(px.detach(), py.detach(), boundary)
        ctx.grads = None
        ctx.lattice = None
        if return_grad:
            ctx.grads = lattice.occupation_grads()
            grads_out[0], grads_out[1] = ctx.grads
        elif ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            ctx.lattice = lattice
        return lattice.scores.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, ans_grad: Tensor):
        if ctx.grads is None:
            ctx.grads = ctx.lattice.occupation_grads()
            ctx.lattice = None
        px_grad, py_grad = ctx.grads
        scale = ans_grad.to(px_grad.dtype).view(-1, 1, 1)
        return px_grad * scale, py_grad * scale, None, None, None


def import_k2():
    """The optional k2 package (backend="k2"), with a clear error where it is not importable."""
    try:
        import k2
    except ImportError as e:  # pragma: no cover - k2 is optional
        raise ImportError("backend='k2' needs the k2 package, which is not importable") from e
    return k2


def mutual_information_recursion(
    px: Tensor,
    py: Tensor,
    boundary: Tensor | None = None,
    return_grad: bool = False,
    backend: str = "torch",
) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
    """Total log-weight of all monotonic paths through the (S+1) x (T+1) lattice.

    Args:
      px: (B, S, T+1) float32/float64 log-weights of the steps (s, t) -> (s+1, t).
      py: (B, S+1, T), same dtype, log-weights of the steps (s, t) -> (s, t+1).
      boundary: optional int64 (B, 4) rows ``[s_begin, t_begin, s_end, t_end]`` with
        ``0 <= s_begin <= s_end <= S`` and ``0 <= t_begin <= t_end <= T``; default
        ``[0, 0, S, T]`` for every item.
      return_grad: also return ``(px_grad, py_grad)``, the derivatives of ``scores.sum()``
        w.r.t. px and py, i.e. the occupation probabilities of the steps (zero outside each
        item's region). They are computed during the forward call.
      backend: "torch" (this implementation) or "k2" (dispatch to k2 if importable).

    Returns:
      ``scores`` of shape (B,), or ``(scores, (px_grad, py_grad))`` if ``return_grad``.
      ``scores`` is differentiable w.r.t. px and py through a custom backward.
    """
    if backend == "k2":
        return import_k2().mutual_information_recursion(px, py, boundary=boundary, return_grad=return_grad)
    if backend != "torch":
        raise ValueError(f"backend must be 'torch' or 'k2', got {backend!r}")
    if px.ndim != 3 or py.ndim != 3:
        raise ValueError(f"px and py must be 3-D, got {tuple(px.shape)} and {tuple(py.shape)}")
    B, S, T1 = px.shape
    T = T1 - 1
    if py.shape[2] == T1:
        raise NotImplementedError("only the regular topology (px of shape (B, S, T+1)) is supported")
    if tuple(py.shape) != (B, S + 1, T):
        raise ValueError(f"py must have shape {(B, S + 1, T)} for px of shape {tuple(px.shape)}, got {tuple(py.shape)}")
    if px.dtype != py.dtype or px.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"px and py must both be float32 or both float64, got {px.dtype} and {py.dtype}")
    grads: list[Tensor | None] = [None, None]
    scores = _MutualInformationFunction.apply(px, py, boundary, return_grad, grads)
    if return_grad:
        px_grad, py_grad = grads
        assert px_grad is not None and py_grad is not None  # set by the forward pass
        return scores, (px_grad, py_grad)
    return scores
