"""Encoder speed of the released ZIPA architectures (random weights, random fbank features).

Measures seconds per forward (conv front end + Zipformer2, `AsrModel.forward_encoder`) and the
real-time factor, at batch 1 and 8, in eval mode under `torch.inference_mode()`, with peak
memory, and a matmul-throughput floor measured in the same run: the encoder's FLOPs
(torch.utils.flop_counter.FlopCounterMode, matmuls and convolutions) divided by this machine's
float32 GFLOP/s on a 2048^3 matmul with the same thread count, through the faster of PyTorch's
default GEMM and oneDNN (benchmarks/floor.py; `--no-floor` skips both).
For a comparison with the original ZIPA code in the same run, see benchmarks/vs_original.py.

    python benchmarks/encoder.py                      # small and large, batch 1 and 8, 2 threads
    python benchmarks/encoder.py --presets small --batch-sizes 1
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a source checkout

from benchmarks.floor import encoder_flops, machine, matmul_rates, sync  # noqa: E402
from zipa.model.asr_model import build_model  # noqa: E402
from zipa.model.config import preset  # noqa: E402

FRAMES_PER_SECOND = 100  # fbank frame rate
FEATURE_DIM = 80


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- peak memory ------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory growth (MiB) during a `with` block.

    CUDA: torch.cuda.max_memory_allocated above what was allocated at the start. CPU: the peak
    resident set size (VmHWM) above the resident size at the start; the high-water mark is reset
    first through /proc/self/clear_refs where the kernel allows it (else it is the process
    lifetime peak, or getrusage's, and `exact` is False).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.mib = float("nan")
        self.exact = True

    def __enter__(self):
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            self.exact = False
        self.start = _proc_status_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            sync(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.start) / 2**20
            return False
        peak = _proc_status_kib("VmHWM")
        if peak is None:  # no /proc: ru_maxrss is the lifetime peak, in KiB on Linux
            peak, self.exact = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, False
        if self.start is not None:
            self.mib = (peak - self.start) / 1024
        return False


# --- measurements -----------------------------------------------------------------------------
def time_encoder(model, feats: torch.Tensor, lens: torch.Tensor, repeats: int, device: torch.device):
    """Seconds of each of `repeats` forwards after one warm-up, and the peak memory growth."""
    times = []
    with torch.inference_mode(), PeakMemory(device) as memory:
        model.forward_encoder(feats, lens)  # warm-up
        sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            model.forward_encoder(feats, lens)
            sync(device)
            times.append(time.perf_counter() - start)
    return times, memory


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "large"], help="zipa.model.config presets")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length per utterance")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--no-floor", action="store_true",
        help="skip the floor (the in-run matmul GFLOP/s measurement and the FLOP count)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    frames = int(round(args.seconds * FRAMES_PER_SECOND))

    measured_rate, rates_text = None, ""
    if not args.no_floor:
        log(f"measuring 2048x2048 float32 matmul rates on {device} with {args.threads} threads ...")
        rates = matmul_rates(device)
        measured_rate = max(rates.values())
        rates_text = ", ".join(f"{kernel} {rate:.1f}" for kernel, rate in rates.items())
        log(f"  GFLOP/s: {rates_text}")

    rows = []
    for name in args.presets:
        log(f"building {name} ...")
        model = build_model(preset(name)).to(device).eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for batch in args.batch_sizes:
            feats = torch.randn(batch, frames, FEATURE_DIM, device=device)
            lens = torch.full((batch,), frames, dtype=torch.int64, device=device)
            log(f"  {name} batch {batch}: {frames} frames, 1 warm-up + {args.repeats} timed forwards ...")
            times, memory = time_encoder(model, feats, lens, args.repeats, device)
            log("    " + ", ".join(f"{t:.3f}s" for t in times))
            gflop = encoder_flops(model, feats, lens) / 1e9 if measured_rate else None
            rows.append(dict(
                preset=name, batch=batch, params=params, min=min(times), median=statistics.median(times),
                memory=memory, gflop=gflop,
            ))
        del model

    print(f"\nEncoder forward, {args.seconds:g} s of audio per utterance, device {device}, "
          f"{args.threads} threads, torch {torch.__version__}, eval + inference_mode, random weights")
    print(machine(device))
    header = f"{'preset':<8}{'batch':>6}{'params':>9}{'min s':>9}{'median s':>10}{'RTF':>9}{'peak MiB':>10}"
    if measured_rate:
        header += f"{'GFLOP':>9}{'floor s':>9}{'x floor':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        rtf = r["median"] / (args.seconds * r["batch"])
        mem = f"{r['memory'].mib:9.0f}" + ("" if r["memory"].exact else "~")
        line = (f"{r['preset']:<8}{r['batch']:>6}{r['params']:>8.1f}M{r['min']:9.3f}{r['median']:10.3f}"
                f"{rtf:9.4f}{mem:>10}")
        if measured_rate:
            floor = r["gflop"] / measured_rate
            line += f"{r['gflop']:9.1f}{floor:9.3f}{r['median'] / floor:9.2f}"
        print(line)
    print("\nRTF = median seconds / seconds of audio in the batch (batch x length).")
    if measured_rate:
        print(f"GFLOP: matmul/conv work of one forward (FlopCounterMode); floor s = GFLOP at this run's "
              f"measured matmul rate, {measured_rate:.1f} GFLOP/s, the faster of {rates_text} "
              f"(2048^3 float32, {args.threads} threads); "
              f"x floor = median / floor.")
    print("For a speed comparison with the original ZIPA code, run benchmarks/vs_original.py (same run, same weights).")
    if any(not r["memory"].exact for r in rows):
        print("~: lifetime peak RSS (the high-water mark could not be reset); may understate the growth.")


if __name__ == "__main__":
    main()
