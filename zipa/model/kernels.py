"""Which kernels the model's dense products use, by context: oneDNN for float32 inference on
x86 CPUs; PyTorch's default ops while training and while exporting (`is_exporting`).

PyTorch sends float32 CPU matrix products to MKL, which on AMD processors runs its AVX2 code
path; oneDNN's float32 kernels use AVX-512 there. On the 2-core AMD EPYC these numbers were
measured on, oneDNN multiplied a (1500 x 768) by a (768 x 256) matrix at about 470 GFLOP/s
against MKL's 210 (`benchmarks/vs_original.py` measures both rates in each run). Both are float32
products summed in float32; only the order of the sums differs (results agree to ~1e-7 relative),
so this is exact inference in the sense of the parity tests.

oneDNN's `mkldnn::_linear_pointwise` has no autograd formula, so it is used only where no
gradient is recorded (`torch.no_grad()` / `torch.inference_mode()`, i.e. decoding), on CPU
float32 tensors of an x86-64 build with oneDNN, outside CPU autocast (which must see the
product to cast it), and never while exporting. Everything else, and
`ZIPA_ONEDNN_MATMUL=0` in the environment, takes PyTorch's default path.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _onednn_available() -> bool:
    return (
        platform.machine().lower() in ("x86_64", "amd64")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and os.environ.get("ZIPA_ONEDNN_MATMUL", "1") != "0"
    )


_use_onednn = _onednn_available()


def onednn_in_use() -> bool:
    """Whether float32 CPU inference products go to oneDNN in this process now."""
    return _use_onednn


@contextlib.contextmanager
def default_kernels():
    """PyTorch's default kernels only, inside the block (benchmarks time and count the encoder
    both ways; FlopCounterMode does not see oneDNN's op)."""
    global _use_onednn
    previous, _use_onednn = _use_onednn, False
    try:
        yield
    finally:
        _use_onednn = previous


def is_exporting() -> bool:
    """True while the model is traced for ONNX (either exporter) or torch.export: a few eval
    steps then take a path that traces well (see `zipa.onnx.export`)."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting()


def _takes_onednn(*tensors: Tensor) -> bool:
    return (
        _use_onednn
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and not is_exporting()
    )


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """`F.linear(x, weight, bias)`, through oneDNN where that is exact and faster (see above)."""
    if _takes_onednn(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


# Below this many multiply-adds per product, one batched MKL call beats a loop of oneDNN calls
# (each costs ~15 us to set up): attention over fewer than ~300 frames.
_MIN_MACS_PER_LOOPED_PRODUCT = 1 << 20


def batched_matmul(a: Tensor, b: Tensor) -> Tensor:
    """`torch.matmul(a, b)` for a (..., M, K) and b (..., K, N) of the same leading shape.

    On the oneDNN path each (M, K) @ (K, N) product is a `linear` against b's transpose: for
    attention weights times values (K = time, N = a head's few channels) this ran 2-4x faster
    than MKL's batched product at 30 s, and slower below `_MIN_MACS_PER_LOOPED_PRODUCT`."""
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if m * k * n < _MIN_MACS_PER_LOOPED_PRODUCT or not _takes_onednn(a, b):
        return torch.matmul(a, b)
    lead = a.shape[:-2]
    a_flat = a.reshape((-1,) + a.shape[-2:])
    b_t = b.transpose(-1, -2).reshape((-1,) + (b.shape[-1], b.shape[-2])).contiguous()
    out = torch.stack([linear(a_i, b_i) for a_i, b_i in zip(a_flat, b_t)])
    return out.reshape(lead + out.shape[-2:])


class Linear(nn.Linear):
    """nn.Linear (same parameters and state_dict keys) whose forward uses `linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
