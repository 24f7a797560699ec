"""Which kernels the model's dense products use at CPU inference: chosen by measurement, per
machine.

Two kernels can compute an inference product on an x86 CPU, both float32 (or bfloat16) products
summed in float32 that differ only in the order of the sums (results agree to ~1e-7 relative,
exact inference in the sense of the parity tests):

* "default": PyTorch's own op (`F.linear`, `torch.matmul`): MKL for float32, oneDNN's matmul
  (AMX / AVX512-BF16 where present) for bfloat16;
* "onednn": oneDNN's `mkldnn::_linear_pointwise` called directly.

Which is faster depends on the CPU. MKL takes its AVX2 path on AMD processors: on a 2-core AMD
EPYC oneDNN multiplied 2048^3 float32 at 454 GFLOP/s against MKL's 204; on a 2-core Intel Xeon
(Sapphire Rapids), where MKL runs AVX-512, MKL was the faster (327 against 294), and for
bfloat16 oneDNN's direct call beat the default by 10-40 % on the model's mid-sized products.
So nothing is assumed: for each product class and dtype,

* "linear": a projection, activations (frames x in) times a weight (out x in);
* "looped": attention weights times values, (T x T) @ (T x head_dim) per head and utterance:
  one batched `torch.matmul` against a loop of oneDNN products,
* "depthwise" (not a product, chosen the same way): the layout of the convolution module's
  depthwise convolution at batch 1 (`depthwise_over_time`),

the first product of that class in a process times both kernels on a few shapes the released
models run at 30 s (`SHAPES`; about 0.1-0.3 s in all; on one thread by the thread's CPU time,
which other jobs on the machine do not inflate) and keeps the faster; oneDNN (or the "height"
layout) must win by more than `MARGIN`, so the choice is never measurably slower than PyTorch's
default. The result
is stored in `cache_path()` (under $XDG_CACHE_HOME or ~/.cache, keyed by the CPU model and
flags, the torch version and the thread count), so later processes on the same machine reuse
it. `ZIPA_KERNELS=default` or `ZIPA_KERNELS=onednn` in the environment forces either kernel for
every product class, `ZIPA_KERNELS=measure` measures again (and replaces the cached choice: do it on a
quiet machine); `describe()` says what a process uses.

oneDNN's op has no autograd formula, so it is used only where no gradient is recorded
(`torch.no_grad()` / `torch.inference_mode()`, i.e. decoding), on CPU float32 or bfloat16
tensors of an x86-64 build with oneDNN, outside CPU autocast (which must see the product to
cast it), and never while exporting. Everything else takes PyTorch's default path.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KERNELS = ("default", "onednn")
# Each class's candidates, the reference first. "depthwise" is not a product: the layout of the
# convolution module's depthwise convolution at batch 1 (time as the width or the height of a
# channels-last 2-D convolution), whose faster side also depends on the CPU.
CANDIDATES = {"linear": KERNELS, "looped": KERNELS, "depthwise": ("width", "height")}
# oneDNN is chosen only when its time is below (1 - MARGIN) x the default's (see `fastest`).
MARGIN = 0.05
# Product shapes timed per class: linear (frames, in, out); looped (heads, frames, head_dim).
SHAPES = {
    "linear": [(1500, 192, 512), (750, 384, 1024), (188, 1024, 2048)],
    "looped": [(4, 750, 12), (4, 1500, 12), (6, 750, 48)],
    "depthwise": [(192, 1500, 31), (256, 750, 31), (512, 188, 15)],  # (channels, frames, kernel)
}
_DTYPES = (torch.float32, torch.bfloat16)
_CACHE_VERSION = 1


def onednn_available() -> bool:
    """Whether oneDNN's product can be used in this process at all (x86-64 build with oneDNN,
    and not forced off by ZIPA_KERNELS=default)."""
    return (
        platform.machine().lower() in ("x86_64", "amd64")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and _forced() != "default"
    )


def _forced() -> str | None:
    value = os.environ.get("ZIPA_KERNELS", "").strip().lower()
    if value in ("", "measure"):
        return None
    if value not in KERNELS:
        raise ValueError(f"ZIPA_KERNELS={value!r}: expected one of {', '.join(KERNELS)} or measure (or unset)")
    return value


# (class, dtype, threads) -> kernel, decided once per process; `_measured` keeps the timings.
_choices: dict[tuple[str, torch.dtype, int], str] = {}
_measured: dict[str, dict[str, float]] = {}
_enabled = True


def reset() -> None:
    """Forget this process's choices (the next product decides again, from the cache or by
    measuring)."""
    _choices.clear()
    _measured.clear()


@contextlib.contextmanager
def default_kernels():
    """PyTorch's default kernels only, inside the block (benchmarks time and count the encoder
    both ways; FlopCounterMode does not see oneDNN's op)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


# Set by `products_in` for its thread: the dtype CPU inference products of float32 tensors run in.
_low_precision = threading.local()


@contextlib.contextmanager
def products_in(dtype: torch.dtype):
    """Inside the block, CPU inference products (`linear`, `linear_into`) of float32 tensors run
    in `dtype` (bfloat16: on AMX or AVX512-BF16): activations cast to it before each product and
    the result back to float32, weights cast once (`_low_precision_weight`); bias, residual and
    everything between the products stay float32. Not exact, but about 50x closer to float32
    than the model converted to bfloat16 (encoder output rel. L2 ~8e-4 against 4e-2), whose
    elementwise operators run no faster than float32's on a CPU. Per thread: a float32 model
    running in another thread meanwhile is not affected."""
    previous, _low_precision.dtype = _product_dtype(), dtype
    try:
        yield
    finally:
        _low_precision.dtype = previous


def _product_dtype() -> torch.dtype | None:
    return getattr(_low_precision, "dtype", None)


def _low_precision_weight(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """`weight` in `dtype`: cast once per parameter (or view of one) and kept while the
    parameter lives and is unchanged; other tensors (weights rearranged per call) cast each
    time."""
    owner = weight if isinstance(weight, nn.Parameter) else weight._base
    if not isinstance(owner, nn.Parameter):
        return weight.to(dtype)
    key = (weight.storage_offset(), weight.shape, weight.stride(), dtype)
    copies = owner.__dict__.setdefault("_low_precision_copies", {})  # lives and dies with the parameter
    version, copy = copies.get(key, (None, None))
    if version != owner._version:  # new, or the parameter changed since: replaced, not kept beside
        copy = weight.to(dtype).contiguous()
        copies[key] = (owner._version, copy)
    return copy


def _in_low_precision(x: Tensor) -> bool:
    return _product_dtype() is not None and x.dtype == torch.float32 and cpu_inference(x, under_autocast=True)


def choice(cls: str, dtype: torch.dtype) -> str:
    """The kernel ("default" or "onednn") for products of class `cls` in `dtype` with the
    current thread count: forced, cached or measured (see the module docstring)."""
    key = _choice_key(cls, dtype)
    kernel = _choices.get(key)
    if kernel is None:
        kernel = _choices[key] = _decide(cls, dtype)
    return kernel


def _choice_key(cls: str, dtype: torch.dtype) -> tuple[str, torch.dtype, int]:
    return (cls, dtype, torch.get_num_threads())


def _decide(cls: str, dtype: torch.dtype) -> str:
    if cls not in CANDIDATES:
        raise ValueError(f"unknown product class {cls!r}: expected one of {tuple(CANDIDATES)}")
    forced = _forced()
    if cls != "depthwise" and (not onednn_available() or dtype not in _DTYPES):
        return "default"
    if dtype not in _DTYPES:
        return CANDIDATES[cls][0]
    if cls != "depthwise" and forced is not None:
        return forced
    entry = f"{cls}/{str(dtype).replace('torch.', '')}"
    cache = _read_cache()
    machine = machine_key()
    cached = cache.get(machine, {}).get(entry)
    if cached in CANDIDATES[cls] and os.environ.get("ZIPA_KERNELS", "").strip().lower() != "measure":
        return cached
    # One thread: its CPU time, which leaves out the waits for a core on a busy machine.
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    kernel, seconds = fastest(_candidates(cls, dtype), clock=clock)
    _measured[entry] = seconds
    cache.setdefault(machine, {})[entry] = kernel
    _write_cache(cache)
    return kernel


def fastest(
    candidates: dict[str, Callable[[], object]], rounds: int = 9, margin: float = MARGIN, clock=time.perf_counter
):
    """(name, {name: median seconds}) of the fastest of `candidates`, callables timed in
    alternating order over `rounds` rounds after one warm-up round. The first candidate is the
    reference; another one is chosen only if its median ratio to the reference over the
    rounds (both timed back to back in each, so that a machine whose load changes from round
    to round slows both alike) is below 1 - `margin`, the lowest such ratio winning. A
    candidate that raises is left out (the reference must run)."""
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for r in range(rounds + 1):
            for name in names if r % 2 == 0 else names[::-1]:
                if name not in times:
                    continue
                start = clock()
                try:
                    candidates[name]()
                except RuntimeError:
                    if name == names[0]:
                        raise
                    del times[name]
                    continue
                if r:
                    times[name].append(clock() - start)
    reference = times[names[0]]
    ratios = {name: statistics.median(a / b for a, b in zip(t, reference)) for name, t in times.items()}
    best = min(ratios, key=ratios.__getitem__)
    if ratios[best] >= 1.0 - margin:
        best = names[0]
    return best, {name: statistics.median(t) for name, t in times.items()}


def _candidates(cls: str, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    if cls == "linear":
        operands = [(rand(m, k), rand(n, k), rand(n)) for m, k, n in SHAPES["linear"]]
        return {
            "default": lambda: [F.linear(*o) for o in operands],
            "onednn": lambda: [_onednn_linear(*o) for o in operands],
        }
    if cls == "looped":
        pairs = [(rand(h, t, t).softmax(-1), rand(h, t, d)) for h, t, d in SHAPES["looped"]]
        return {
            "default": lambda: [torch.matmul(a, v) for a, v in pairs],
            "onednn": lambda: [_looped_matmul(a, v) for a, v in pairs],
        }
    convs = [(rand(1, t, c), rand(c, 1, k), rand(c), k // 2) for c, t, k in SHAPES["depthwise"]]

    def run(layout: str) -> Callable[[], object]:
        return lambda: [_depthwise(*o, layout) for o in convs]

    return {layout: run(layout) for layout in CANDIDATES[cls]}


def describe() -> str:
    """The kernels this process has chosen so far (and what they measured), for benchmarks."""
    forced = _forced()
    if not onednn_available():
        products = "PyTorch's default (oneDNN's product " + ("forced off)" if forced else "unavailable here)")
    elif forced:
        products = f"forced by ZIPA_KERNELS={forced}"
    else:
        products = "measured per machine"
    chosen = ", ".join(
        f"{cls}/{str(dtype).replace('torch.', '')}@{threads}t {kernel}"
        for (cls, dtype, threads), kernel in _choices.items()
    )
    timings = "; ".join(
        f"{entry}: " + ", ".join(f"{k} {1e3 * s:.2f} ms" for k, s in seconds.items())
        for entry, seconds in _measured.items()
    )
    return f"{products} (chosen: {chosen or 'none used yet'}" + (f"; timed now: {timings}" if timings else "") + ")"


# --- the per-machine cache ---------------------------------------------------------------------
def _cpuinfo() -> tuple[str, frozenset]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; ("", {}) where there is none."""
    name, flags = "", frozenset[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    return name, flags


def cpu_flags() -> frozenset:
    """The CPU's feature flags as Linux names them (avx2, avx512_bf16, amx_bf16, ...)."""
    return _cpuinfo()[1]


def cpu_model() -> str:
    """The CPU's model name and the flags that decide the kernels' speed (e.g. "AMD EPYC 9B14 |
    avx2 avx512f avx512_bf16"), from /proc/cpuinfo where there is one."""
    name, flags = _cpuinfo()
    name = name or platform.processor() or platform.machine()
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
    return f"{name} | {' '.join(f for f in wanted if f in flags) or 'no avx2/avx512/amx flags'}"


def machine_key() -> str:
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "zipa" / "kernels.json"


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
        return {}
    return data.get("machines", {})


def _write_cache(machines: dict) -> None:
    from zipa.utils.atomic import write_text_atomic

    with contextlib.suppress(OSError):  # a read-only home only costs a measurement per process
        write_text_atomic(cache_path(), json.dumps({"version": _CACHE_VERSION, "machines": machines}, indent=1) + "\n")


# --- the products ------------------------------------------------------------------------------
def is_exporting() -> bool:
    """True while the model is traced for ONNX (either exporter) or torch.export: a few eval
    steps then take a path that traces well (see `zipa.onnx.export`)."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting()


def cpu_inference(x: Tensor, under_autocast: bool = False) -> bool:
    """Whether `x` is computed on by a CPU inference path here: a CPU tensor, no gradient
    recorded, not exported, and outside CPU autocast (which must see each product to cast it)
    unless `under_autocast` (a path whose products take inputs autocast has cast already)."""
    return (
        x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and (under_autocast or not torch.is_autocast_enabled("cpu"))
        and not is_exporting()
    )


def _takes_onednn(cls: str, a: Tensor, b: Tensor) -> bool:
    if _choices.get(_choice_key(cls, a.dtype)) == "default":
        return False  # decided already: spares the other checks (4 us per product)
    return (
        _enabled
        and cpu_inference(a)
        and b.device.type == "cpu"
        and a.dtype == b.dtype
        and a.dtype in _DTYPES
        and choice(cls, a.dtype) == "onednn"
    )


def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """`F.linear(x, weight, bias)` (`+ residual`, a tensor of the output's shape), through the
    kernel measured faster on this machine. On oneDNN the residual is added by the product
    itself (a post-op of its GEMM), which saves a pass over the output and its allocation."""
    if _in_low_precision(x):
        return _low_precision_linear(x, weight, bias, residual)
    if _takes_onednn("linear", x, weight):
        if residual is None:
            return _onednn_linear(x, weight, bias)
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual.contiguous(), weight, bias, "add")
    out = F.linear(x, weight, bias)
    return out if residual is None else out.add_(residual)


def _low_precision_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, out: Tensor | None = None
) -> Tensor:
    """`linear` of float32 tensors with the product in `products_in`'s dtype, the result in
    float32 (written to `out` where given)."""
    dtype = cast(torch.dtype, _product_dtype())
    product = linear(x.to(dtype), _low_precision_weight(weight, dtype))
    # float32 + the low-precision product is a float32 sum: the cast back is part of it
    if bias is None:
        out = product.float() if out is None else out.copy_(product)
    else:
        out = torch.add(product, bias, out=out)
    return out if residual is None else out.add_(residual)


def linear_into(
    out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None = None, residual: Tensor | None = None
) -> Tensor:
    """`linear(x, weight, bias, residual)` of 2-D `x` written into `out` (rows of a larger
    output), on the kernel measured faster. On PyTorch's kernel the product accumulates onto
    `residual + bias`, written to `out` first, which saves a pass over the output; under
    `products_in` the low-precision product plus bias is written to `out` directly."""
    if _in_low_precision(x):
        return _low_precision_linear(x, weight, bias, residual, out)
    if _takes_onednn("linear", x, weight):
        return out.copy_(linear(x, weight, bias, residual))
    if residual is None:
        if bias is None:
            return torch.mm(x, weight.t(), out=out)
        return torch.addmm(bias, x, weight.t(), out=out)
    if bias is None:
        out.copy_(residual)
    else:
        torch.add(residual, bias, out=out)
    return out.addmm_(x, weight.t())


# Below this many multiply-adds per product, one batched call beats a loop of oneDNN calls (each
# costs ~15 us to set up): attention over fewer than ~300 frames.
_MIN_MACS_PER_LOOPED_PRODUCT = 1 << 20


def _looped_matmul(a: Tensor, b: Tensor) -> Tensor:
    """(..., M, K) @ (..., K, N) as one oneDNN product per leading index, against b's transpose."""
    lead = a.shape[:-2]
    a_flat = a.reshape((-1,) + a.shape[-2:])
    b_t = b.transpose(-1, -2).reshape((-1,) + (b.shape[-1], b.shape[-2])).contiguous()
    out = torch.stack([_onednn_linear(a_i, b_i) for a_i, b_i in zip(a_flat, b_t)])
    return out.reshape(lead + out.shape[-2:])


def batched_matmul(a: Tensor, b: Tensor) -> Tensor:
    """`torch.matmul(a, b)` for a (..., M, K) and b (..., K, N) of the same leading shape: for
    attention weights times values (K = time, N = a head's few channels), on the "looped"
    kernel where that measured faster (on the AMD EPYC 2-4x at 30 s; slower below
    `_MIN_MACS_PER_LOOPED_PRODUCT`, where it is not tried)."""
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if m * k * n < _MIN_MACS_PER_LOOPED_PRODUCT or not _takes_onednn("looped", a, b):
        return torch.matmul(a, b)
    return _looped_matmul(a, b)


def with_standard_strides(x: Tensor) -> Tensor:
    """A contiguous `x` viewed with the strides `torch.empty` would give it. A contiguous
    tensor's size-1 dimensions may carry any stride (`(T, 1, C).transpose(0, 1)` is contiguous
    with stride C for its batch dimension), and oneDNN's convolutions take a path 10-16x slower
    on such a tensor (Intel Xeon, torch 2.13: the depthwise convolution at batch 1)."""
    return x.view(-1).view(x.shape) if x.is_contiguous() else x


def _depthwise(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int, layout: str) -> Tensor:
    x = with_standard_strides(x)
    if layout == "height":  # channels-last (batch, channels, time, 1)
        x, weight, pad, unit_dim = x.unsqueeze(2), weight.unsqueeze(3), (padding, 0), 3
    else:  # channels-last (batch, channels, 1, time)
        x, weight, pad, unit_dim = x.unsqueeze(1), weight.unsqueeze(2), (0, padding), 2
    return F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=pad, groups=weight.shape[0]).squeeze(unit_dim)


def depthwise_over_time(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """The depthwise convolution `F.conv1d(x.transpose(1, 2), weight, bias, padding=padding,
    groups=channels)` of x (batch, time, channels) contiguous, as a channels-last 2-D convolution
    (oneDNN computes that several times faster than conv1d); returns (batch, channels, time)
    with channels-last strides. At batch 1 on a CPU, time is the width or the height of the 2-D
    convolution, whichever measured faster here ("depthwise" class: on the AMD EPYC the width
    was 7x slower at batch 1, on the Intel Xeon 2.3x faster)."""
    layout = "width"
    if x.shape[0] == 1 and cpu_inference(x, under_autocast=True):
        layout = choice("depthwise", x.dtype)
    return _depthwise(x, weight, bias, padding, layout)


class Linear(nn.Linear):
    """nn.Linear (same parameters and state_dict keys) whose forward uses `linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
