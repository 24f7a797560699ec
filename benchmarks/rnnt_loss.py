#!/usr/bin/env python3
"""Time and peak memory of the pruned RNN-T loss vs the full RNN-T loss (zipa.losses).

Both measure one training step of the transducer head on random encoder/decoder outputs at
ZIPA-like sizes, forward + backward down to the encoder/decoder outputs:

  full    joiner on all (t, s) pairs: output_linear(tanh(encoder_proj(enc)[:, :, None]
          + decoder_proj(dec)[:, None])) of shape (B, T, S+1, V), then ``rnnt_loss``.
  pruned  icefall's recipe: ``rnnt_loss_smoothed`` on simple_am_proj / simple_lm_proj
          (lm_only_scale 0.25, return_grad) -> ``get_rnnt_prune_ranges`` -> ``do_rnnt_pruning``
          -> joiner on (B, T, prune_range) pairs -> ``rnnt_loss_pruned``; the loss is
          0.5 * simple + pruned.

Each configuration runs in its own subprocess. Peak memory is the growth over the memory
held after setup: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the process's peak
resident size (VmHWM in /proc/self/status) during the first step. Times are medians over
``--repeats`` steps after one warm-up step.

    python benchmarks/rnnt_loss.py                      # cuda if available, else cpu
    python benchmarks/rnnt_loss.py --device cpu --threads 1 --batch 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zipa.losses import (  # noqa: E402
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_smoothed,
)

BLANK = 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=250, help="T, encoder frames of the longest utterance")
    p.add_argument("--labels", type=int, default=80, help="U (= S), labels of the longest utterance")
    p.add_argument("--vocab", type=int, default=127)
    p.add_argument("--encoder-dim", type=int, default=512)
    p.add_argument("--decoder-dim", type=int, default=512)
    p.add_argument("--joiner-dim", type=int, default=512)
    p.add_argument("--prune-range", type=int, default=5)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--worker", choices=["full", "pruned"], help=argparse.SUPPRESS)
    return p.parse_args(argv)


class Head(nn.Module):
    """The transducer head's parameters (icefall names)."""

    def __init__(self, args):
        super().__init__()
        self.simple_am_proj = nn.Linear(args.encoder_dim, args.vocab)
        self.simple_lm_proj = nn.Linear(args.decoder_dim, args.vocab)
        self.encoder_proj = nn.Linear(args.encoder_dim, args.joiner_dim)
        self.decoder_proj = nn.Linear(args.decoder_dim, args.joiner_dim)
        self.output_linear = nn.Linear(args.joiner_dim, args.vocab)

    def join(self, am, lm):
        return self.output_linear(torch.tanh(am + lm))


def make_inputs(args, device, dtype):
    g = torch.Generator().manual_seed(0)
    B, T, S, V = args.batch, args.frames, args.labels, args.vocab
    # ZIPA-like batch: lengths between 70 % and 100 % of the longest, labels at ~1/3 of frames
    t_lens = torch.randint(int(0.7 * T), T + 1, (B,), generator=g)
    s_lens = torch.randint(int(0.7 * S), S + 1, (B,), generator=g)
    t_lens[0], s_lens[0] = T, S
    symbols = torch.randint(1, V, (B, S), generator=g)
    symbols[torch.arange(S).unsqueeze(0) >= s_lens.unsqueeze(1)] = 0
    boundary = torch.stack([torch.zeros(B, dtype=torch.int64), torch.zeros(B, dtype=torch.int64), s_lens, t_lens], 1)
    enc = torch.randn(B, T, args.encoder_dim, generator=g, dtype=dtype)
    dec = torch.randn(B, S + 1, args.decoder_dim, generator=g, dtype=dtype)
    torch.manual_seed(0)
    head = Head(args).to(device, dtype)
    return (head, enc.to(device).requires_grad_(True), dec.to(device).requires_grad_(True),
            symbols.to(device), boundary.to(device))


def step_full(head, enc, dec, symbols, boundary, args):
    logits = head.join(head.encoder_proj(enc).unsqueeze(2), head.decoder_proj(dec).unsqueeze(1))
    loss = rnnt_loss(logits, symbols, BLANK, boundary, reduction="sum")
    return loss, loss.detach()


def step_pruned(head, enc, dec, symbols, boundary, args):
    simple, (px_grad, py_grad) = rnnt_loss_smoothed(
        head.simple_lm_proj(dec), head.simple_am_proj(enc), symbols, BLANK,
        lm_only_scale=0.25, am_only_scale=0.0, boundary=boundary, reduction="sum", return_grad=True,
    )
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, args.prune_range)
    am_pruned, lm_pruned = do_rnnt_pruning(head.encoder_proj(enc), head.decoder_proj(dec), ranges)
    pruned = rnnt_loss_pruned(head.join(am_pruned, lm_pruned), symbols, ranges, BLANK, boundary, reduction="sum")
    return 0.5 * simple + pruned, pruned.detach()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(args) -> dict:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    step = step_full if args.worker == "full" else step_pruned
    head, enc, dec, symbols, boundary = make_inputs(args, device, dtype)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def one_step():
        head.zero_grad(set_to_none=True)
        enc.grad = dec.grad = None
        t0 = time.perf_counter()
        loss, reported = step(head, enc, dec, symbols, boundary, args)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t0, reported.item()

    # peak memory of the first step, over what is held after setup
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        if not _reset_peak_rss():
            print("warning: cannot reset VmHWM; CPU peak includes setup", file=sys.stderr)
        base = _status_kib("VmRSS") * 1024
    _, _, loss_value = one_step()
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _status_kib("VmHWM") * 1024 - base

    one_step()  # warm-up
    fwd, tot = [], []
    for _ in range(args.repeats):
        f, t, _ = one_step()
        fwd.append(f)
        tot.append(t)
    return {
        "fwd_ms": 1e3 * statistics.median(fwd),
        "total_ms": 1e3 * statistics.median(tot),
        "peak_mib": peak / 2**20,
        "loss_per_utt": loss_value / args.batch,
        "threads": torch.get_num_threads(),
    }


def run_worker(mode: str, argv) -> dict:
    cmd = [sys.executable, __file__, *argv, "--worker", mode]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{mode} worker failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.device == "cpu":
        argv = [*argv, "--device", "cpu"]  # workers must not pick cuda on their own
    full = run_worker("full", argv)
    pruned = run_worker("pruned", argv)

    device = args.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(torch.device(args.device))})"
    else:
        device += f" ({full['threads']} thread{'s' if full['threads'] != 1 else ''})"
    print(f"device: {device}, dtype {args.dtype}")
    print(f"B={args.batch} T={args.frames} U={args.labels} V={args.vocab} encoder/decoder/joiner dim "
          f"{args.encoder_dim}/{args.decoder_dim}/{args.joiner_dim}, prune_range {args.prune_range}, "
          f"median of {args.repeats}")
    header = f"{'':34s}{'fwd (ms)':>11s}{'fwd+bwd (ms)':>15s}{'peak mem (MiB)':>17s}{'loss/utt':>11s}"
    print(header)
    print("-" * len(header))
    rows = [("full RNN-T (joiner on T x (U+1))", full), ("pruned (simple + ranges + pruned)", pruned)]
    for name, r in rows:
        print(f"{name:34s}{r['fwd_ms']:11.1f}{r['total_ms']:15.1f}{r['peak_mib']:17.1f}{r['loss_per_utt']:11.2f}")
    ratio = lambda k: full[k] / pruned[k] if pruned[k] > 0 else float("nan")  # noqa: E731
    print(f"{'ratio full / pruned':34s}{ratio('fwd_ms'):10.2f}x{ratio('total_ms'):14.2f}x{ratio('peak_mib'):16.2f}x")
    print("(loss/utt: the full loss vs the pruned loss alone; pruning keeps fewer paths, so pruned >= full)")


if __name__ == "__main__":
    main()
