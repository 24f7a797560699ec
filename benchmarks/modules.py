"""Module by module: where this project's encoder is faster than the original ZIPA code, and
where it is not, measured in the same run.

Both encoders are built from the same random state_dict, as in benchmarks/vs_original.py (whose
import of the original, k2 stand-in, alternating rounds and pinned allocator this script uses),
and both keep icefall's module names, so the same forward hooks time the same modules on each
side: the front end (`encoder_embed`) and, summed over every layer of every stack, the
feed-forward modules, the attention weights, the non-linear attention, attention x values
(`self_attn1/2`), the convolution modules, the bypasses and the norms; "rest" is the forward's
time outside them (downsampling, stack combiners, positional encodings, Python between modules).
Each group's products and convolutions are counted by FlopCounterMode (this project's count;
the original computes more for the attention weights' position term) and divided by the float32
matmul rate measured in the same run: "floor" is the time the group would take with its products
at that rate and everything else free.

    python benchmarks/modules.py --zipa-dir /path/to/zipa                  # small, batch 1, 30 s
    python benchmarks/modules.py --zipa-dir /path/to/zipa --presets small large --batch-size 8

Without --zipa-dir it prints why it cannot run and exits 0.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a source checkout

from benchmarks.floor import flops_by_module, machine, matmul_rates  # noqa: E402
from benchmarks.vs_original import (  # noqa: E402
    FEATURE_DIM,
    FRAMES_PER_SECOND,
    MALLOC_PIN,
    both_models,
    import_original,
    log,
    pin_malloc,
    time_alternately,
)

# Layer submodules by their name in icefall's Zipformer2EncoderLayer (a trailing 1/2/3 numbers
# the copies of one kind), in the order a layer runs them.
LAYER_GROUPS = {
    "feed_forward": "feed-forward",
    "self_attn_weights": "attention weights",
    "nonlin_attention": "non-linear attention",
    "self_attn": "attention x values",
    "conv_module": "convolution modules",
    "bypass_mid": "bypasses",
    "bypass": "bypasses",
    "norm": "norms",
}
FRONT_END = "front end"
REST = "rest"
GROUP_ORDER = [FRONT_END, *dict.fromkeys(LAYER_GROUPS.values()), REST]
_LAYER_MODULE = re.compile(r"(?:^|\.)layers\.\d+\.(?P<kind>[a-z_]+?)\d?$")


def group_of(name: str) -> str | None:
    """The group a module belongs to, from its path in the model (`encoder_embed`,
    `encoder.encoders.1.encoder.layers.0.feed_forward2`, ...) or in a FlopCounterMode count
    (which starts the path with the outermost module's class: `Conv2dSubsampling`,
    `Zipformer2.encoders.0.layers.0.conv_module1`); None for the modules around and inside them."""
    if name in ("encoder_embed", "Conv2dSubsampling"):
        return FRONT_END
    match = _LAYER_MODULE.search(name)
    return LAYER_GROUPS.get(match["kind"]) if match else None


class TimedModules:
    """`model` whose `forward_encoder` also records, per forward, the wall time spent in each
    group's modules (forward hooks) and in the whole forward (`forwards`: one dict per call)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.forwards: list[dict[str, float]] = []
        self.calls: dict[str, int] = defaultdict(int)
        self._started: dict[int, float] = {}
        for name, module in model.named_modules():
            group = group_of(name)
            if group is not None:
                module.register_forward_pre_hook(self._start)
                module.register_forward_hook(lambda module, args, out, group=group: self._stop(module, group))

    def _start(self, module, args) -> None:
        self._started[id(module)] = time.perf_counter()

    def _stop(self, module, group: str) -> None:
        elapsed = time.perf_counter() - self._started.pop(id(module))
        self.forwards[-1][group] += elapsed
        if len(self.forwards) == 1:
            self.calls[group] += 1

    def forward_encoder(self, feats: torch.Tensor, lens: torch.Tensor):
        self.forwards.append(defaultdict(float))
        start = time.perf_counter()
        out = self.model.forward_encoder(feats, lens)
        total = time.perf_counter() - start
        self.forwards[-1][REST] = total - sum(self.forwards[-1].values())
        return out


def median_group_times(timed: TimedModules, skip: int) -> dict[str, float]:
    """Seconds per forward by group: the median over the forwards after the first `skip`."""
    kept = timed.forwards[skip:]
    return {group: statistics.median(f.get(group, 0.0) for f in kept) for group in GROUP_ORDER}


def group_flops(flops: dict[str, int]) -> dict[str, int]:
    """`flops_by_module`'s counts summed by group (a group module's count includes its
    submodules', which belong to no group themselves), with REST and the whole forward ("Global")."""
    totals: dict[str, int] = defaultdict(int)
    for name, count in flops.items():
        group = group_of(name)
        if group is not None:
            totals[group] += count
    totals[REST] = flops["Global"] - sum(totals.values())
    totals["Global"] = flops["Global"]
    return dict(totals)


def report(name: str, batch: int, ours: dict, orig: dict, flops: dict, rate: float, calls: dict) -> str:
    lines = [
        f"{name}, batch {batch}: ms per forward (median), floor = the group's products at "
        f"{rate:.0f} GFLOP/s",
        f"  {'group':<22}{'calls':>6}{'original':>10}{'ours':>9}{'orig/ours':>10}{'GFLOP':>8}{'floor':>8}"
        f"{'ours/floor':>11}",
    ]
    for group in GROUP_ORDER:
        floor_ms = flops.get(group, 0) * batch / rate / 1e6
        ratio = f"{orig[group] / ours[group]:9.2f}x" if ours[group] > 0 else f"{'':>10}"
        over_floor = f"{ours[group] * 1e3 / floor_ms:11.1f}" if floor_ms > 0.05 else f"{'':>11}"
        lines.append(
            f"  {group:<22}{calls.get(group, 0) or '':>6}{orig[group] * 1e3:10.1f}{ours[group] * 1e3:9.1f}{ratio}"
            f"{flops.get(group, 0) * batch / 1e9:8.1f}{floor_ms:8.1f}{over_floor}"
        )
    total_orig, total_ours = sum(orig.values()), sum(ours.values())
    total_floor = flops["Global"] * batch / rate / 1e6
    lines.append(
        f"  {'whole forward':<22}{'':>6}{total_orig * 1e3:10.1f}{total_ours * 1e3:9.1f}{total_orig / total_ours:9.2f}x"
        f"{flops['Global'] * batch / 1e9:8.1f}{total_floor:8.1f}{total_ours * 1e3 / total_floor:11.1f}"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zipa-dir", type=Path, help="checkout of the original ZIPA repository (holds zipformer_crctc/)")
    parser.add_argument("--icefall-dir", type=Path, help="checkout of icefall (optional: its utils are stubbed otherwise)")
    parser.add_argument("--presets", nargs="+", default=["small"], help="zipa.model.config presets")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length per utterance")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (one forward of each side per round)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--no-pin-malloc", action="store_true", help="do not re-execute with pinned glibc malloc settings")
    parser.add_argument("--seed", type=int, default=0)
    raw_argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(raw_argv)

    if args.zipa_dir is None or not args.zipa_dir.is_dir():
        why = "no --zipa-dir given" if args.zipa_dir is None else f"--zipa-dir {args.zipa_dir} is not a directory"
        print(f"modules: skipped: {why} (a checkout of the original ZIPA code is needed to compare against)")
        return 0
    if argv is None and not args.no_pin_malloc:
        pin_malloc(__file__, raw_argv)

    torch.set_num_threads(args.threads)
    modules = import_original(args.zipa_dir, args.icefall_dir)
    frames = int(round(args.seconds * FRAMES_PER_SECOND))
    rate = max(matmul_rates(torch.device("cpu")).values())
    reports = []
    for name in args.presets:
        ours, orig = both_models(modules, name, args.seed)
        feats = torch.randn(args.batch_size, frames, FEATURE_DIM, generator=torch.Generator().manual_seed(args.seed))
        lens = torch.full((args.batch_size,), frames, dtype=torch.int64)
        flops = group_flops(flops_by_module(ours, feats[:1], lens[:1]))
        timed = {"ours": TimedModules(ours), "orig": TimedModules(orig)}
        log(f"{name}: timing {args.warmup} warm-up + {args.rounds} rounds ...")
        time_alternately(timed, feats, lens, args.rounds, args.warmup)
        times = {side: median_group_times(t, args.warmup) for side, t in timed.items()}
        reports.append(report(name, args.batch_size, times["ours"], times["orig"], flops, rate, timed["ours"].calls))

    pinned = {k: os.environ[k] for k in MALLOC_PIN if k in os.environ}
    print(f"\nEncoder modules, this project vs the original ZIPA code, same process, same weights; "
          f"{args.seconds:g} s per utterance, {args.threads} threads, torch {torch.__version__}, eval + "
          f"inference_mode; {args.warmup} warm-up + {args.rounds} alternating rounds, wall time")
    print(machine())
    print(f"malloc: {pinned or 'environment as given'}; float32 matmul rate {rate:.1f} GFLOP/s (2048^3, this run)")
    print("\n".join(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
