"""The matmul floor a speed benchmark reports next to its timings, measured in the same run.

`matmul_rates` times an n x n @ n x n float32 product through each kernel this project's
inference can use on the device (PyTorch's default GEMM; on x86 CPUs also oneDNN's, which
zipa.model.kernels picks where it measures faster) and `encoder_flops` counts one encoder forward's matrix
and convolution work; floor seconds = FLOPs / the faster rate. A benchmark never divides by a
rate measured on another day.
"""

from __future__ import annotations

import statistics
import time

import torch

from zipa.model import kernels


def machine(device: torch.device = torch.device("cpu")) -> str:
    """The hardware a figure was measured on, for every benchmark's report: the CPU's model and
    flags (zipa.model.kernels.cpu_model), the GPU's name where the device is CUDA, and the
    product kernels this process chose (kernels.describe)."""
    text = f"CPU: {kernels.cpu_model()}"
    if device.type == "cuda":
        text += f"; GPU: {torch.cuda.get_device_name(device)}"
    return f"{text}\nproducts: {kernels.describe()}"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rates(
    device: torch.device,
    n: int = 2048,
    warmup_seconds: float = 1.0,
    repeats: int = 10,
    clock=time.perf_counter,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """GFLOP/s of n^3 products in `dtype` (float32; bfloat16 for the matrix units' floor) by
    kernel ("default": torch.mm; "onednn": oneDNN's product, CPU only, where available) with the
    current thread setting: the median of `repeats` products after `warmup_seconds` (threads
    and clocks ramped up), timed by `clock` (wall time; a benchmark that times one thread's CPU
    time passes time.thread_time)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    b_t = b.t().contiguous()
    products = {"default": lambda: torch.mm(a, b)}
    if device.type == "cpu" and kernels.onednn_available():
        products["onednn"] = lambda: kernels._onednn_linear(a, b_t)
    rates = {}
    with torch.inference_mode():
        for name, product in products.items():
            start = time.perf_counter()
            while time.perf_counter() - start < warmup_seconds:
                product()
                sync(device)
            times = []
            for _ in range(repeats):
                start = clock()
                product()
                sync(device)
                times.append(clock() - start)
            rates[name] = 2 * n**3 / statistics.median(times) / 1e9
    return rates


def flops_by_module(model, feats: torch.Tensor, lens: torch.Tensor) -> dict[str, int]:
    """FLOPs of one `forward_encoder` per module, as torch.utils.flop_counter.FlopCounterMode
    counts and names them (matrix products and convolutions; each module's count includes its
    submodules'; "Global" is the whole forward; a module's path starts with the class name of the
    outermost module called, e.g. "Zipformer2.encoders.0.layers.0.feed_forward1"), on PyTorch's
    default kernels (the counter does not see oneDNN's op; the products are the same). The
    in-place `addmm_` of the banded feed-forward (zipa.model.scaling.swoosh_feedforward) is
    counted as `addmm`."""
    from torch.utils.flop_counter import FlopCounterMode

    def addmm_flops(self_shape, a_shape, b_shape, **_) -> int:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    in_place = {torch.ops.aten.addmm_: addmm_flops}
    with (
        torch.inference_mode(),
        kernels.default_kernels(),
        FlopCounterMode(display=False, custom_mapping=in_place) as counter,
    ):
        model.forward_encoder(feats, lens)
    return {name: sum(by_op.values()) for name, by_op in counter.get_flop_counts().items()}


def encoder_flops(model, feats: torch.Tensor, lens: torch.Tensor) -> int:
    """FLOPs of one `forward_encoder` (`flops_by_module`'s whole-forward count)."""
    return flops_by_module(model, feats, lens)["Global"]
