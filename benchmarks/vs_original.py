"""Encoder speed of this project against the original ZIPA code, measured in the same run.

Both encoders are built from the same random state_dict (this project's presets, see
zipa/model/config.py; the original's classes are put together as its zipformer_crctc/train.py
`get_model` does), their outputs are compared (rel. L2 of the encoder output, equality of the
greedy CTC ids), and their forward passes are timed alternately in one process:

* each round runs one forward of each side, in alternating order (AB, BA, AB, ...), each after
  `gc.collect()`, so that both sides see the same allocator history, thread pool and machine
  load; `--warmup` untimed rounds come first; the figures are medians over `--rounds`;
* `torch.set_num_threads(--threads)` (2 by default), eval mode, `torch.inference_mode()`;
* `--clock wall` (the default) times with time.perf_counter; `--clock thread` (with
  `--threads 1`) takes the CPU time of the one thread that computes (time.thread_time): on a
  machine shared with other jobs it leaves out the time the thread waits for a core, which
  wall time counts for whichever side happened to be preempted;
* the glibc allocator is pinned at launch: unless MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ /
  MALLOC_TRIM_THRESHOLD_ are already set, the script re-executes itself once with
  MALLOC_ARENA_MAX=2, MALLOC_MMAP_THRESHOLD_=MALLOC_TRIM_THRESHOLD_=2^30 (a fixed threshold
  instead of glibc's dynamic one, which moves with what was freed before; `--no-pin-malloc`
  keeps the environment as it is).

The matmul floor is measured in the same run: the float32 GFLOP/s of a large square matmul with
the same thread count, through PyTorch's default CPU GEMM (MKL) and through oneDNN (which this
project's inference uses on x86, see zipa/model/kernels.py); the faster of the two is the rate.
Each encoder's FLOPs come from torch.utils.flop_counter.FlopCounterMode (matmuls and
convolutions; batch 1, scaled by the batch size; ours counted on the default kernels, as the
counter does not see oneDNN's op); floor = FLOPs / rate.

The original code is imported at run time from a checkout you provide; nothing of it is part of
this repository. Its only k2 functions used by an inference forward pass are SwooshL/SwooshR,
which come from a small stand-in (`fake_k2_module`, from their formulas); the icefall helpers
its model.py imports (`icefall.utils.make_pad_mask`, `add_sos`) and lhotse's `time_warp` (used
in training only) are stubbed unless `--icefall-dir` provides an importable icefall.

    python benchmarks/vs_original.py --zipa-dir /path/to/zipa            # small+large, batch 1+8
    python benchmarks/vs_original.py --zipa-dir /path/to/zipa --presets small --batch-sizes 1 --rounds 3
    python benchmarks/vs_original.py --zipa-dir /path/to/zipa --bf16   # + ours in bfloat16 (not exact)
    python benchmarks/vs_original.py --zipa-dir /path/to/zipa --default-kernels  # + ours without oneDNN

Without --zipa-dir it prints why it cannot run and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a source checkout

from benchmarks.floor import encoder_flops, machine, matmul_rates  # noqa: E402
from zipa.model import kernels  # noqa: E402
from zipa.model.asr_model import build_model  # noqa: E402
from zipa.model.config import preset  # noqa: E402
from zipa.model.precision import LowPrecisionModel  # noqa: E402

FRAMES_PER_SECOND = 100  # fbank frame rate
FEATURE_DIM = 80
MALLOC_PIN = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": str(2**30),
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the stand-ins for the original's dependencies ---------------------------------------------
def _swoosh(x: torch.Tensor, shift: float, offset: float) -> torch.Tensor:
    """log(1 + exp(x - shift)) - 0.08 x - offset, computed in float32 (as k2 does).

    log1p(exp(t)) with t = x - shift is torch's softplus, which returns t itself above t = 20
    (where exp(t) would overflow for large t, and where log1p(exp(t)) already equals t in
    float32: exp(-20) is below float32's relative precision at 20). A few elementwise passes,
    as lean as a stand-in without a custom kernel gets, so that the original is slowed down by
    its k2 replacement as little as possible (k2 computes it in a kernel of its own; this
    project's encoder spends two passes on it)."""
    xf = x.float()
    y = torch.nn.functional.softplus(xf - shift)
    y.add_(xf, alpha=-0.08).sub_(offset)
    return y.to(x.dtype)


def swoosh_l(x: torch.Tensor) -> torch.Tensor:
    """SwooshL(x) = log(1 + exp(x - 4)) - 0.08 x - 0.035."""
    return _swoosh(x, 4.0, 0.035)


def swoosh_r(x: torch.Tensor) -> torch.Tensor:
    """SwooshR(x) = log(1 + exp(x - 1)) - 0.08 x - 0.313261687."""
    return _swoosh(x, 1.0, 0.313261687)


def fake_k2_module() -> types.ModuleType:
    """A module named k2 with the SwooshL/SwooshR entry points the original scaling.py calls in a
    forward pass (inference only: the `_and_deriv` variants, used in training, raise)."""
    k2 = types.ModuleType("k2")
    k2.__doc__ = "stand-in for k2 (benchmarks/vs_original.py): SwooshL/SwooshR only"
    k2.swoosh_l_forward = k2.swoosh_l = swoosh_l
    k2.swoosh_r_forward = k2.swoosh_r = swoosh_r

    def _unavailable(*args, **kwargs):
        raise NotImplementedError("the k2 stand-in provides SwooshL/SwooshR forward only")

    k2.swoosh_l_forward_and_deriv = k2.swoosh_r_forward_and_deriv = _unavailable
    # the original model.py names k2.RaggedTensor in type annotations of its training methods
    k2.RaggedTensor = type("RaggedTensor", (), {"__doc__": "placeholder (annotations only)"})

    def __getattr__(name):
        raise AttributeError(f"k2 stand-in (benchmarks/vs_original.py) has no {name!r}")

    k2.__getattr__ = __getattr__
    return k2


def _stub_icefall_utils() -> types.ModuleType:
    icefall = types.ModuleType("icefall")
    icefall.__path__ = []
    utils = types.ModuleType("icefall.utils")

    def make_pad_mask(lengths: torch.Tensor, max_len: int = 0) -> torch.Tensor:
        max_len = max(max_len, int(lengths.max()))
        n = lengths.size(0)
        expanded = torch.arange(max_len, device=lengths.device).expand(n, max_len)
        return expanded >= lengths.unsqueeze(-1)

    def add_sos(*args, **kwargs):
        raise NotImplementedError("icefall stub (benchmarks/vs_original.py): training only")

    utils.make_pad_mask, utils.add_sos = make_pad_mask, add_sos
    icefall.utils = utils
    return icefall


def _stub_lhotse() -> None:
    names = ["lhotse", "lhotse.dataset", "lhotse.dataset.signal_transforms"]
    modules = {name: types.ModuleType(name) for name in names}
    for name in names[:-1]:
        modules[name].__path__ = []

    def time_warp(*args, **kwargs):
        raise NotImplementedError("lhotse stub (benchmarks/vs_original.py): training only")

    modules["lhotse.dataset.signal_transforms"].time_warp = time_warp
    for name, module in modules.items():
        sys.modules.setdefault(name, module)


def find_recipe(zipa_dir: Path) -> Path:
    for candidate in (zipa_dir / "zipformer_crctc", zipa_dir):
        if (candidate / "zipformer.py").is_file() and (candidate / "model.py").is_file():
            return candidate
    raise FileNotFoundError(f"no zipformer_crctc/zipformer.py under {zipa_dir}")


def import_original(zipa_dir: Path, icefall_dir: Path | None = None) -> dict:
    """The original's modules (model, zipformer, subsampling, scaling), imported from the
    recipe folder of `zipa_dir` with k2 replaced by the stand-in."""
    recipe = find_recipe(zipa_dir)
    sys.modules["k2"] = fake_k2_module()
    if icefall_dir is not None:
        sys.path.insert(0, str(icefall_dir))
        try:
            import icefall.utils  # noqa: F401
        except Exception as error:  # noqa: BLE001  real icefall needs k2 proper, kaldialign, lhotse, ...
            log(f"icefall from {icefall_dir} not importable here ({error!r}); using the stub")
            for name in [m for m in sys.modules if m == "icefall" or m.startswith("icefall.")]:
                del sys.modules[name]
    if "icefall.utils" not in sys.modules:
        icefall = _stub_icefall_utils()
        sys.modules["icefall"], sys.modules["icefall.utils"] = icefall, icefall.utils
    try:
        import lhotse.dataset.signal_transforms  # noqa: F401
    except Exception:  # noqa: BLE001  (lhotse absent or broken: training-only import)
        _stub_lhotse()
    # The recipe's modules have plain names (scaling, zipformer, model ...) that this project does
    # not use at top level; import them from the recipe folder.
    sys.path.insert(0, str(recipe))
    import importlib

    modules = {name: importlib.import_module(name) for name in ("scaling", "subsampling", "zipformer", "model")}
    for name, module in modules.items():
        if not str(Path(module.__file__).resolve()).startswith(str(recipe.resolve())):
            raise ImportError(f"{name} was imported from {module.__file__}, not from {recipe}")
    return modules


def build_original(modules: dict, config) -> torch.nn.Module:
    """The original AsrModel, as zipformer_crctc/train.py get_model builds it for a CTC model."""
    from zipa.model.asr_model import zipformer2_kwargs

    scaling, subsampling, zipformer, model = (modules[k] for k in ("scaling", "subsampling", "zipformer", "model"))
    ScheduledFloat = scaling.ScheduledFloat
    encoder_embed = subsampling.Conv2dSubsampling(
        in_channels=config.feature_dim,
        out_channels=config.encoder_dim[0],
        dropout=ScheduledFloat((0.0, 0.3), (20000.0, 0.1)),
    )
    encoder = zipformer.Zipformer2(**zipformer2_kwargs(config, ScheduledFloat))
    return model.AsrModel(
        encoder_embed=encoder_embed,
        encoder=encoder,
        decoder=None,
        joiner=None,
        attention_decoder=None,
        encoder_dim=config.max_encoder_dim,
        decoder_dim=config.decoder_dim,
        vocab_size=config.vocab_size,
        use_transducer=False,
        use_ctc=True,
        use_attention_decoder=False,
    )


def both_models(modules: dict, preset_name: str, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """This project's model of the preset (random weights from `seed`) and the original's with
    the same state_dict, both in eval mode."""
    config = preset(preset_name)
    torch.manual_seed(seed)
    ours = build_model(config).eval()
    orig = build_original(modules, config).eval()
    missing, unexpected = orig.load_state_dict(ours.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{preset_name}: state_dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return ours, orig


# --- measurements -----------------------------------------------------------------------------
def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def compare(ours, orig, feats, lens) -> dict:
    with torch.inference_mode():
        out_a, lens_a = ours.forward_encoder(feats, lens)
        out_b, lens_b = orig.forward_encoder(feats, lens)
        ids_a = ours.ctc_output(out_a).argmax(-1)
        ids_b = orig.ctc_output(out_b).argmax(-1)
    assert torch.equal(lens_a, lens_b), (lens_a, lens_b)
    return dict(
        rel_l2=max(rel_l2(out_a[i, :n], out_b[i, :n]) for i, n in enumerate(lens_a.tolist())),
        ids_equal=all(torch.equal(ids_a[i, :n], ids_b[i, :n]) for i, n in enumerate(lens_a.tolist())),
        id_agreement=float((ids_a == ids_b).double().mean()),
    )


class OnDefaultKernels(torch.nn.Module):
    """This project's model with oneDNN's products turned off for its forward (--default-kernels):
    separates what the kernel choice gives from the rest of the speed-up."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = model

    def forward_encoder(self, feats, lens):
        with kernels.default_kernels():
            return self.inner.forward_encoder(feats, lens)


def time_alternately(models: dict, feats, lens, rounds: int, warmup: int, clock=time.perf_counter) -> dict:
    """Seconds per forward of each model (by `clock`), one forward of each per round, order
    alternating."""
    names = list(models)
    times = {name: [] for name in names}
    with torch.inference_mode():
        for r in range(warmup + rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                gc.collect()
                start = clock()
                models[name].forward_encoder(feats, lens)
                elapsed = clock() - start
                if r >= warmup:
                    times[name].append(elapsed)
            if r >= warmup:
                done = ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names)
                log(f"    round {r - warmup + 1}: {done}")
    return times


def pin_malloc(script: str, argv) -> None:
    """Re-execute `script` with `argv` once, with glibc's allocator pinned (MALLOC_PIN), unless
    the environment already sets any of those variables (or this is the re-executed run)."""
    if any(key in os.environ for key in MALLOC_PIN) or os.environ.get("ZIPA_BENCH_PINNED"):
        return
    env = dict(os.environ, ZIPA_BENCH_PINNED="1", **MALLOC_PIN)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(script), *argv], env)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zipa-dir", type=Path, help="checkout of the original ZIPA repository (holds zipformer_crctc/)")
    parser.add_argument("--icefall-dir", type=Path, help="checkout of icefall (optional: its utils are stubbed otherwise)")
    parser.add_argument("--presets", nargs="+", default=["small", "large"], help="zipa.model.config presets")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length per utterance")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (one forward of each side per round)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="wall time, or the computing thread's CPU time (needs --threads 1; see above)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n float32 matmul of the floor")
    parser.add_argument("--no-pin-malloc", action="store_true", help="do not re-execute with pinned glibc malloc settings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--default-kernels", action="store_true",
                        help="also time this project's encoder on PyTorch's default kernels (MKL, no oneDNN)")
    parser.add_argument("--bf16", action="store_true",
                        help="also time this project's encoder with bfloat16 products (--precision bf16) and "
                        "converted to bfloat16 (bf16-full), against the bfloat16 product floor (not exact; same rounds)")
    raw_argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(raw_argv)

    if args.zipa_dir is None:
        print("vs_original: skipped: no --zipa-dir given (a checkout of the original ZIPA code is "
              "needed to compare against; see --help)")
        return 0
    if not args.zipa_dir.is_dir():
        print(f"vs_original: skipped: --zipa-dir {args.zipa_dir} is not a directory")
        return 0
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread measures one thread: use it with --threads 1")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    if argv is None and not args.no_pin_malloc:
        pin_malloc(__file__, raw_argv)

    torch.set_num_threads(args.threads)
    modules = import_original(args.zipa_dir, args.icefall_dir)
    frames = int(round(args.seconds * FRAMES_PER_SECOND))

    log(f"measuring the {args.matmul_size}^3 float32 matmul rate with {args.threads} threads ...")
    rates = matmul_rates(torch.device("cpu"), args.matmul_size, clock=clock)
    rate = max(rates.values())
    rates_text = ", ".join(f"{name} {value:.1f}" for name, value in rates.items())
    log(f"  GFLOP/s: {rates_text}")
    if args.bf16:
        bf16_rates = matmul_rates(torch.device("cpu"), args.matmul_size, clock=clock, dtype=torch.bfloat16)
        bf16_rate = max(bf16_rates.values())
        rates_text += f"; bfloat16 {bf16_rate:.1f}"

    rows = []
    for name in args.presets:
        ours, orig = both_models(modules, name, args.seed)
        params = sum(p.numel() for p in ours.parameters()) / 1e6
        log(f"{name}: {params:.1f}M parameters, same random state_dict ({len(ours.state_dict())} tensors) in both")
        feats1 = torch.randn(1, frames, FEATURE_DIM)
        lens1 = torch.full((1,), frames, dtype=torch.int64)
        flops = {"ours": encoder_flops(ours, feats1, lens1), "orig": encoder_flops(orig, feats1, lens1)}
        log(f"  FLOPs at batch 1: this project {flops['ours'] / 1e9:.1f} G, original {flops['orig'] / 1e9:.1f} G")
        for batch in args.batch_sizes:
            gen = torch.Generator().manual_seed(args.seed + batch)
            feats = torch.randn(batch, frames, FEATURE_DIM, generator=gen)
            # unequal lengths at batch > 1 (the last utterance 3/4 long) exercise the padding mask
            lens = torch.full((batch,), frames, dtype=torch.int64)
            if batch > 1:
                lens[-1] = frames * 3 // 4
            agreement = compare(ours, orig, feats, lens)
            log(f"  {name} batch {batch}: rel L2 {agreement['rel_l2']:.2e}, greedy CTC ids equal: "
                f"{agreement['ids_equal']} ({agreement['id_agreement']:.4f} of frames)")
            log(f"  timing: {args.warmup} warm-up + {args.rounds} rounds, alternating order ...")
            models = {"ours": ours, "orig": orig}
            if args.default_kernels:
                models["ours-default"] = OnDefaultKernels(ours)
            if args.bf16:
                # `zipa ... --precision bf16` (products in bfloat16) and `bf16-full` (the whole model)
                models["ours-bf16"] = LowPrecisionModel(ours, torch.bfloat16, products_only=True)
                models["ours-bf16-full"] = LowPrecisionModel(copy.deepcopy(ours), torch.bfloat16)
                with torch.inference_mode():
                    fp32_out, out_lens = ours.forward_encoder(feats, lens)
                    for mode in ("ours-bf16", "ours-bf16-full"):
                        out, _ = models[mode].forward_encoder(feats, lens)
                        agreement[f"{mode}_rel_l2"] = max(
                            rel_l2(out[i, :n], fp32_out[i, :n]) for i, n in enumerate(out_lens.tolist())
                        )
            times = time_alternately(models, feats, lens, args.rounds, args.warmup, clock)
            rows.append(dict(preset=name, batch=batch, params=params, flops=flops, times=times, **agreement))
        del ours, orig
        gc.collect()

    pinned = {k: os.environ[k] for k in MALLOC_PIN if k in os.environ}
    print(f"\nEncoder forward, this project vs the original ZIPA code, same process, same weights; "
          f"{args.seconds:g} s of audio per utterance, CPU, {args.threads} threads, torch {torch.__version__}, "
          f"eval + inference_mode; medians of {args.rounds} alternating rounds after {args.warmup} warm-up, "
          f"{'wall time' if args.clock == 'wall' else 'CPU time of the computing thread'}")
    print(machine())
    print(f"malloc: {pinned or 'environment as given'}; matmul rate {rate:.1f} GFLOP/s, the faster of "
          f"{rates_text} ({args.matmul_size}^3 products, measured in this run)")
    header = (f"{'preset':<8}{'batch':>6}{'params':>9}{'orig s':>9}{'ours s':>9}{'speed-up':>10}"
              f"{'GFLOP':>9}{'floor s':>9}{'ours/floor':>11}{'orig/floor':>11}{'rel L2':>10}{'ids eq':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ours_s, orig_s = statistics.median(r["times"]["ours"]), statistics.median(r["times"]["orig"])
        gflop = r["flops"]["ours"] * r["batch"] / 1e9
        floor = gflop / rate
        print(f"{r['preset']:<8}{r['batch']:>6}{r['params']:>8.1f}M{orig_s:9.3f}{ours_s:9.3f}{orig_s / ours_s:9.2f}x"
              f"{gflop:9.1f}{floor:9.3f}{ours_s / floor:11.2f}{orig_s / floor:11.2f}{r['rel_l2']:10.1e}"
              f"{str(r['ids_equal']):>8}")
        if "ours-default" in r["times"]:
            default_s = statistics.median(r["times"]["ours-default"])
            print(f"{'  dflt':<8}{r['batch']:>6}{'':>9}{orig_s:9.3f}{default_s:9.3f}{orig_s / default_s:9.2f}x"
                  f"   (ours on PyTorch's default kernels, no oneDNN)")
        for mode, label, what in (("ours-bf16", "  bf16", "products in bfloat16 (--precision bf16)"),
                                  ("ours-bf16-full", "  bf16f", "the whole model in bfloat16 (--precision bf16-full)")):
            if mode in r["times"]:
                bf16_s = statistics.median(r["times"][mode])
                bf16_floor = gflop / bf16_rate
                print(f"{label:<8}{r['batch']:>6}{'':>9}{orig_s:9.3f}{bf16_s:9.3f}{orig_s / bf16_s:9.2f}x"
                      f"{'':>9}{bf16_floor:9.3f}{bf16_s / bf16_floor:11.2f}{orig_s / bf16_floor:11.2f}"
                      f"{r[mode + '_rel_l2']:10.1e}   ({what}; floor at the bfloat16 rate)")
    print("\nspeed-up = orig s / ours s (medians). GFLOP: matmul/conv work of this project's encoder "
          "(FlopCounterMode at batch 1 x batch); the original's count:")
    for name in dict.fromkeys(r["preset"] for r in rows):
        f = next(r["flops"] for r in rows if r["preset"] == name)
        print(f"  {name}: ours {f['ours'] / 1e9:.1f}, original {f['orig'] / 1e9:.1f} GFLOP per utterance")
    print("floor s = GFLOP / the matmul rate above. rel L2: encoder output, worst utterance (valid frames); "
          "ids eq: greedy CTC ids equal on valid frames.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
