"""Inference speed and memory: PyTorch fp32 vs ONNX fp32 vs ONNX int8 (onnxruntime).

For each preset (random weights: speed does not depend on them), backend and batch size, one
fresh subprocess loads the model and runs the shared inference path (`Transcriber.token_ids`:
encoder, CTC head or transducer search, greedy decoding) on batches of 30 s utterances, with
the given number of threads (torch.set_num_threads and onnxruntime's intra_op_num_threads).
A fresh process per measurement gives a clean peak RSS (getrusage ru_maxrss: the whole life of
a process that loads one model and transcribes with it).

Inputs are random fbank features (30 s = 2998 frames); with --with-features the input is 30 s
of random audio per utterance and the timing includes fbank extraction (`Transcriber.transcribe`).

    python benchmarks/inference.py                                  # small and large, batch 1 and 8, 2 threads
    python benchmarks/inference.py --presets small --batch-sizes 1 8 --repeats 3
    python benchmarks/inference.py --presets small-transducer --with-features

Reported per row: load (s), seconds per batch (median of --repeats after one warm-up run),
real-time factor (seconds per second of audio, lower is faster), RSS after imports (MiB), peak
RSS (MiB), and per ONNX row the ratios ONNX / PyTorch of RTF and peak RSS. The machine may be
shared: timings are noisy; compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a source checkout

BACKENDS = ("torch", "onnx-fp32", "onnx-int8")
FRAMES_PER_SECOND = 100
SAMPLE_RATE = 16000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rss_mib() -> float:
    """Current resident set size (MiB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_random_model(preset_name: str):
    """The preset's AsrModel with deterministic random weights, in eval mode.

    A freshly built Zipformer's layers within a stack are deep copies of one layer, and the
    ONNX exporter stores identical weights once: the export would be ~3x smaller than a trained
    model's and the memory comparison unfair. Each weight is perturbed so that all differ."""
    import torch

    from zipa.model.asr_model import build_model
    from zipa.model.config import preset

    torch.manual_seed(0)
    model = build_model(preset(preset_name)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(1 + 0.05 * torch.randn_like(param)).add_(1e-4 * torch.randn_like(param))
    return model


# ---------------------------------------------------------------------------------------------
# Child processes: one export, or one measurement
# ---------------------------------------------------------------------------------------------


def child_export(args: argparse.Namespace) -> Dict:
    """Export the preset (fp32 + int8) into args.onnx_dir; report the cost."""
    import torch

    from zipa.onnx.export import export_model

    torch.set_num_threads(args.threads)
    model = build_random_model(args.preset)
    start = time.perf_counter()
    written = export_model(model, args.onnx_dir, int8=True)
    seconds = time.perf_counter() - start
    sizes = {label: round(path.stat().st_size / 2**20, 1) for label, path in written.items() if path.suffix == ".onnx"}
    return {"export_s": round(seconds, 1), "sizes_mib": sizes, "peak_rss_mib": round(peak_rss_mib())}


def child_measure(args: argparse.Namespace) -> Dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from zipa.inference.transcriber import Transcriber
    from zipa.text.tokenizer import Tokenizer

    base_rss = rss_mib()
    start = time.perf_counter()
    if args.backend == "torch":
        transcriber = Transcriber(build_random_model(args.preset), Tokenizer.default(), device="cpu")
    else:
        precision = args.backend.split("-", 1)[1]
        transcriber = Transcriber.from_onnx(args.onnx_dir, num_threads=args.threads, precision=precision)
    load_s = time.perf_counter() - start

    batch, seconds = args.batch_size, args.seconds
    rng = np.random.default_rng(0)
    if args.with_features:
        audio = [(0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32) for _ in range(batch)]

        def run() -> None:
            transcriber.transcribe(audio)
    else:
        frames = int(seconds * FRAMES_PER_SECOND) - 2  # what lhotse's Fbank gives for `seconds` of audio
        feats = torch.from_numpy(rng.standard_normal((batch, frames, 80)).astype(np.float32))
        feat_lens = torch.full((batch,), frames, dtype=torch.int64)

        def run() -> None:
            transcriber.token_ids(feats, feat_lens)

    run()  # warm-up: first-call allocations, onnxruntime's lazy initialisation
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    per_batch = statistics.median(times)
    return {
        "load_s": round(load_s, 2),
        "batch_s": round(per_batch, 3),
        "rtf": per_batch / (batch * seconds),
        "times": [round(t, 3) for t in times],
        "base_rss_mib": round(base_rss),
        "peak_rss_mib": round(peak_rss_mib()),
    }


# ---------------------------------------------------------------------------------------------
# Parent: run the children, print the table
# ---------------------------------------------------------------------------------------------


def _run_child(mode: str, args: argparse.Namespace, **extra) -> Optional[Dict]:
    command = [sys.executable, __file__, "--child", mode, "--threads", str(args.threads),
               "--seconds", str(args.seconds), "--repeats", str(args.repeats)]
    if args.with_features:
        command.append("--with-features")
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore")
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        log(f"  failed ({' '.join(command[2:])}):\n{proc.stderr[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_table(rows: List[Dict], seconds: float) -> str:
    header = (f"{'preset':<18} {'backend':<10} {'batch':>5} {'load s':>7} {'s/batch':>8} {'RTF':>7} "
              f"{'base MiB':>8} {'peak MiB':>8} {'RTF x':>6} {'peak x':>6}")
    lines = [header, "-" * len(header)]
    reference = {(r["preset"], r["batch"]): r for r in rows if r["backend"] == "torch" and r.get("rtf")}
    for r in rows:
        if r.get("rtf") is None:
            lines.append(f"{r['preset']:<18} {r['backend']:<10} {r['batch']:>5}  failed")
            continue
        ref = reference.get((r["preset"], r["batch"]))
        ratio_t = f"{r['rtf'] / ref['rtf']:.2f}" if ref and r["backend"] != "torch" else ""
        ratio_m = f"{r['peak_rss_mib'] / ref['peak_rss_mib']:.2f}" if ref and r["backend"] != "torch" else ""
        lines.append(
            f"{r['preset']:<18} {r['backend']:<10} {r['batch']:>5} {r['load_s']:>7.2f} {r['batch_s']:>8.3f} "
            f"{r['rtf']:>7.4f} {r['base_rss_mib']:>8} {r['peak_rss_mib']:>8} {ratio_t:>6} {ratio_m:>6}"
        )
    lines.append(f"({seconds:g} s utterances; RTF = seconds per second of audio; x = ONNX / PyTorch)")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "large"],
                        help="zipa.model.config presets (small, large, small-transducer, large-transducer)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per utterance (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (median reported)")
    parser.add_argument("--with-features", action="store_true", help="start from audio: include fbank extraction")
    parser.add_argument("--work-dir", default=None, help="where the ONNX exports go (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the results here")
    # Internal: what a child process does.
    parser.add_argument("--child", choices=("export", "measure"), help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--onnx-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = child_export(args) if args.child == "export" else child_measure(args)
        print(json.dumps(result))
        return 0

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="zipa-bench-"))
    rows: List[Dict] = []
    exports: Dict[str, Dict] = {}
    for preset_name in args.presets:
        onnx_dir = work / preset_name
        if any(b.startswith("onnx") for b in args.backends):
            if (onnx_dir / "config.json").is_file():
                log(f"{preset_name}: reusing the export in {onnx_dir}")
            else:
                log(f"{preset_name}: exporting to ONNX (fp32 + int8) in {onnx_dir} ...")
                exports[preset_name] = _run_child("export", args, preset=preset_name, onnx_dir=onnx_dir) or {}
                log(f"  {exports[preset_name]}")
        for batch in args.batch_sizes:
            for backend in args.backends:
                log(f"{preset_name} {backend} batch {batch} ...")
                result = _run_child("measure", args, preset=preset_name, backend=backend, batch_size=batch, onnx_dir=onnx_dir)
                row = {"preset": preset_name, "backend": backend, "batch": batch, **(result or {"rtf": None})}
                log(f"  {result}")
                rows.append(row)

    import onnxruntime
    import torch

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs{', with fbank extraction' if args.with_features else ''}")
    from zipa.model.kernels import cpu_model

    print(f"CPU: {cpu_model()}")
    print(format_table(rows, args.seconds))
    for preset_name, info in exports.items():
        if info:
            print(f"export {preset_name}: {info['export_s']} s, files (MiB) {info['sizes_mib']}, "
                  f"peak RSS {info['peak_rss_mib']} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "exports": exports}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
