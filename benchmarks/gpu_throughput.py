"""Batch-inference throughput: hours of audio decoded per hour of one GPU, filterbank included.

What pseudo-labelling and evaluation do at scale: many utterances of mixed length, sorted by
length and packed into batches of at most `--max-batch-seconds` of padded audio, each batch
going through `compute_fbank` (the project's features, computed on the CPU as in
`Transcriber.features`, then moved to the device), the encoder and CTC head, and greedy CTC
decoding. Reported per precision:

* hours/hour   - audio seconds / wall seconds of the whole pass (fbank + transfer + model +
                 greedy search), i.e. 1 / RTF;
* model h/h    - the same with the model time only (what a faster front end could reach);
* fbank share  - the share of the wall time spent in feature extraction;
* peak memory  - torch.cuda.max_memory_allocated (CUDA only).

Precisions: fp32; fp16 and bf16 through `torch.autocast` on CUDA (normalisation and softmax
stay float32), bf16 as a bfloat16 copy of the model on CPU (autocast is slower there; fp16 is
not offered on CPU). Audio: `--shar-dirs` (real cuts) or synthetic noise-like clips of random
length in [--min-seconds, --max-seconds] (seeded). Weights: `--model` (a checkpoint) or random
weights of `--preset`. The published anchor for comparison: real-time factor 0.0142 for
Zipa-Cr-Ns-Large at batch 1 on an H200, filterbank included.

    python benchmarks/gpu_throughput.py --preset large --device cuda --num-utts 512
    python benchmarks/gpu_throughput.py --preset tiny --device cpu --num-utts 8 --max-seconds 4   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a source checkout

from benchmarks.floor import machine  # noqa: E402

RATE = 16000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synthetic_audio(n: int, min_seconds: float, max_seconds: float, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        seconds = rng.uniform(min_seconds, max_seconds)
        x = rng.standard_normal(int(seconds * RATE)).astype(np.float32)
        envelope = 0.5 + 0.5 * np.sin(np.linspace(0, seconds * 2 * np.pi * 3, x.size, dtype=np.float32))
        out.append(0.1 * x * envelope)
    return out


def shar_audio(dirs):
    from lhotse import CutSet

    from zipa.audio.load import load_audio

    out = []
    for d in dirs:
        for cut in CutSet.from_shar(in_dir=str(d)):
            out.append(load_audio(cut.load_audio()[0], RATE, source_rate=cut.sampling_rate))
    return out


def sorted_batches(audio, max_batch_seconds: float, max_batch_size: int):
    """Indices, longest first, packed so that batch size x longest clip <= max_batch_seconds."""
    order = sorted(range(len(audio)), key=lambda i: len(audio[i]), reverse=True)
    batches, current = [], []
    for i in order:
        longest = len(audio[current[0]]) / RATE if current else len(audio[i]) / RATE
        if current and ((len(current) + 1) * longest > max_batch_seconds or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class Runner:
    def __init__(self, model, device: torch.device, precision: str):
        self.device, self.precision = device, precision
        self.model, self.autocast_dtype, self.input_dtype = model, None, torch.float32
        if precision in ("fp16", "bf16"):
            dtype = torch.float16 if precision == "fp16" else torch.bfloat16
            if device.type == "cuda":
                self.autocast_dtype = dtype
            elif precision == "bf16":
                self.model, self.input_dtype = copy.deepcopy(model).to(dtype), dtype
            else:
                raise ValueError("fp16 is offered on CUDA only")

    def __call__(self, feats, lens):
        ctx = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
               else contextlib.nullcontext())
        with ctx:
            out, out_lens = self.model.forward_encoder(feats.to(self.input_dtype), lens)
            log_probs = self.model.ctc_output(out)
        # greedy CTC: argmax on the device, repeats collapsed and blanks (id 0) dropped on the CPU
        ids, out_lens = log_probs.argmax(-1).cpu(), out_lens.cpu()
        hyps = []
        for row, n in zip(ids, out_lens.tolist()):
            collapsed = torch.unique_consecutive(row[:n])
            hyps.append(collapsed[collapsed != 0].tolist())
        return hyps


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(runner: Runner, audio, batches, device):
    from zipa.audio.features import compute_fbank

    fbank_s = model_s = 0.0
    tokens = 0
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        feats, lens = compute_fbank([audio[i] for i in batch])
        feats, lens = feats.to(device, non_blocking=True), lens.to(device)
        sync(device)
        t1 = time.perf_counter()
        hyps = runner(feats, lens)
        sync(device)
        t2 = time.perf_counter()
        fbank_s += t1 - t0
        model_s += t2 - t1
        tokens += sum(map(len, hyps))
    return time.perf_counter() - start, fbank_s, model_s, tokens


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a checkpoint (default: random weights of --preset)")
    parser.add_argument("--preset", default="large", help="zipa.model.config preset for random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", nargs="+", help="default: fp32 fp16 bf16 on CUDA, fp32 bf16 on CPU")
    parser.add_argument("--shar-dirs", nargs="+", type=Path, help="real audio (Lhotse shar folders)")
    parser.add_argument("--num-utts", type=int, default=256, help="synthetic clips (without --shar-dirs)")
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--max-batch-seconds", type=float, default=600.0, help="batch size x longest clip")
    parser.add_argument("--max-batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU work incl. fbank)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from zipa.model.asr_model import build_model
    from zipa.model.config import preset

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = args.precisions or (["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    if args.model:
        from zipa.model.io import load_model

        model, _ = load_model(args.model)
        name = args.model
    else:
        torch.manual_seed(args.seed)
        model, name = build_model(preset(args.preset)), f"{args.preset} (random weights)"
    model = model.to(device).eval()
    audio = shar_audio(args.shar_dirs) if args.shar_dirs else synthetic_audio(
        args.num_utts, args.min_seconds, args.max_seconds, args.seed)
    batches = sorted_batches(audio, args.max_batch_seconds, args.max_batch_size)
    total_s = sum(len(a) for a in audio) / RATE
    log(f"{len(audio)} clips, {total_s / 3600:.2f} h of audio, {len(batches)} batches "
        f"(largest {max(map(len, batches))} clips)")

    rows = []
    with torch.inference_mode():
        for precision in precisions:
            runner = Runner(model, device, precision)
            run(runner, audio, batches[:1], device)  # warm-up (kernels, allocator, autotuning)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            wall, fbank_s, model_s, tokens = run(runner, audio, batches, device)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            rows.append((precision, wall, fbank_s, model_s, tokens, peak))
            log(f"  {precision}: {wall:.2f} s wall, {tokens} tokens")
            del runner

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nThroughput: {name} on {where}, torch {torch.__version__}; {len(audio)} clips, "
          f"{total_s / 3600:.3f} h of audio, length-sorted batches of <= {args.max_batch_seconds:g} s padded audio")
    print(machine(device))
    header = f"{'precision':<10}{'hours/hour':>11}{'RTF':>9}{'model h/h':>11}{'fbank share':>12}{'peak GiB':>10}{'tokens':>8}"
    print(header)
    print("-" * len(header))
    for precision, wall, fbank_s, model_s, tokens, peak in rows:
        peak_s = f"{peak:10.2f}" if peak is not None else f"{'-':>10}"
        print(f"{precision:<10}{total_s / wall:11.1f}{wall / total_s:9.4f}{total_s / model_s:11.1f}"
              f"{100 * fbank_s / wall:11.1f}%{peak_s}{tokens:8d}")
    print("hours/hour = audio seconds / wall seconds (fbank on the CPU + transfer + model + greedy CTC); "
          "model h/h: model time only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
