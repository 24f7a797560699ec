"""Where the encoder's CPU time goes: torch.profiler over `AsrModel.forward_encoder`.

Random weights (a zipa.model.config preset), random fbank features, eval mode,
`torch.inference_mode()`, `--threads` threads (1 by default). After `--warmup` untimed forwards,
`--rounds` forwards run under `torch.profiler.profile(activities=[CPU])`; every aten operator's
*self* CPU time is put in one of these buckets:

* matmul      - addmm, mm, bmm, matmul, linear, oneDNN's _linear_pointwise (the dense products,
                incl. attention's q.k and weights.v products);
* conv        - convolutions (the conv front end and the depthwise convs);
* softmax     - attention softmax;
* elementwise - add/mul/sub/softplus/sigmoid/tanh/exp/masked_fill/pow/mean ... (activations,
                BiasNorm, bypass, residual adds, GLU);
* copy        - copy_, contiguous/clone, cat, pad, index ops (layout changes that move memory);
* other       - everything else (views cost nothing and show as ~0).

    python benchmarks/profile_encoder.py                       # small and large, batch 1, 30 s
    python benchmarks/profile_encoder.py --presets small --top 25
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a source checkout

from benchmarks.floor import machine  # noqa: E402
from zipa.model import kernels  # noqa: E402
from zipa.model.asr_model import build_model  # noqa: E402
from zipa.model.config import preset  # noqa: E402

FRAMES_PER_SECOND = 100
FEATURE_DIM = 80

BUCKETS = {
    "matmul": ("addmm", "mm", "bmm", "matmul", "linear", "baddbmm", "_mkl_linear", "mkldnn_linear",
               "_linear_pointwise"),
    "conv": ("conv", "convolution", "_convolution", "mkldnn_convolution", "_slow_conv2d", "thnn_conv"),
    "softmax": ("softmax", "_softmax", "log_softmax", "_log_softmax"),
    "copy": ("copy_", "contiguous", "clone", "cat", "pad", "constant_pad_nd", "index_select", "index",
             "gather", "_to_copy", "to", "empty_like", "stack", "reflection_pad", "as_strided_copy"),
    "elementwise": ("add", "add_", "mul", "mul_", "sub", "sub_", "rsub", "div", "div_", "softplus", "sigmoid",
                    "tanh", "exp", "pow", "mean", "masked_fill", "masked_fill_", "sum", "relu", "log1p", "abs",
                    "where", "neg", "rsqrt", "sqrt", "lerp", "addcmul", "clamp", "silu", "glu", "lt", "gt",
                    "ge", "le", "eq", "ne", "fill_", "zero_", "var_mean", "norm"),
}


def bucket_of(op_name: str) -> str:
    name = op_name.split("::")[-1]
    for bucket, names in BUCKETS.items():
        if name in names:
            return bucket
    if "conv" in name:
        return "conv"
    return "other"


def profile(model, feats, lens, rounds: int, warmup: int):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch.inference_mode():
        for _ in range(warmup):
            model.forward_encoder(feats, lens)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(rounds):
                model.forward_encoder(feats, lens)
    return prof.key_averages()


def summarise(events, rounds: int, top: int) -> str:
    by_bucket = defaultdict(float)
    rows = []
    for e in events:
        if not e.key.startswith(("aten::", "mkldnn::")):
            continue
        self_us = e.self_cpu_time_total / rounds
        by_bucket[bucket_of(e.key)] += self_us
        rows.append((self_us, e.key, e.count // rounds))
    total = sum(by_bucket.values())
    lines = [f"  total operator self CPU time per forward: {total / 1e3:.1f} ms"]
    for bucket in ("matmul", "conv", "softmax", "elementwise", "copy", "other"):
        lines.append(f"    {bucket:<12}{by_bucket[bucket] / 1e3:9.1f} ms {100 * by_bucket[bucket] / total:6.1f} %")
    lines.append(f"  top {top} operators (self CPU per forward, calls per forward):")
    for self_us, key, count in sorted(rows, reverse=True)[:top]:
        lines.append(f"    {key:<32}{self_us / 1e3:9.1f} ms {100 * self_us / total:6.1f} %  x{count:<5} [{bucket_of(key)}]")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "large"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="profiled forwards")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--default-kernels", action="store_true",
                        help="PyTorch's default kernels only (no oneDNN products, see zipa/model/kernels.py)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="bfloat16: the model converted with .to(torch.bfloat16)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    frames = int(round(args.seconds * FRAMES_PER_SECOND))
    dtype = getattr(torch, args.dtype)
    for name in args.presets:
        torch.manual_seed(0)
        model = build_model(preset(name)).eval().to(dtype)
        feats = torch.randn(args.batch_size, frames, FEATURE_DIM, dtype=dtype)
        lens = torch.full((args.batch_size,), frames, dtype=torch.int64)
        with kernels.default_kernels() if args.default_kernels else contextlib.nullcontext():
            events = profile(model, feats, lens, args.rounds, args.warmup)
        print(f"{name}, batch {args.batch_size}, {args.seconds:g} s, {args.threads} thread(s), {args.dtype}, "
              f"{'default kernels' if args.default_kernels else 'products on the kernels measured faster'}, "
              f"torch {torch.__version__}")
        print(machine())
        print(summarise(events, args.rounds, args.top))
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
