#!/usr/bin/env python3
"""Training throughput of the released architectures, in seconds of audio per second.

One step is what the training loop does per batch: `zipa.train.loop.Trainer.train_step`
(forward through the recipe's losses, backward, ScaledAdam + Eden step, with autocast and the
grad scaler of --use-fp16 / --use-bf16), on one device, without DDP. Batches are synthetic, so
no data is needed: random fbank features of random utterance lengths whose durations sum to at
most --max-duration (each batch draws a length and varies it by +-10%, as a bucketing sampler
fills a batch with cuts of similar duration), with random token labels (--tokens-per-second).
The model's warm-up schedules (dropout, layer skipping) are set to their final values, as after
the first few thousand training batches. Batches are made before timing, as DataLoader workers
would have them ready; the copy to the device is timed, as in training.

For CR-CTC the model runs each batch twice (two augmented views): "audio s/s" counts the audio
of the batch once, so it is directly the rate at which a training run consumes its data.

    python benchmarks/train_step.py                                   # small and large, cuda if available
    python benchmarks/train_step.py --presets large --max-duration 120 240 --use-fp16
    python benchmarks/train_step.py --recipe transducer --presets small --max-duration 600 --use-bf16
    python benchmarks/train_step.py --presets small --max-duration 20 --steps 2   # quick CPU check
"""

from __future__ import annotations

import argparse
import logging
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a source checkout

from data_module import AsrDataModule  # noqa: E402
from benchmarks.floor import machine  # noqa: E402
from zipa.model.scaling import set_batch_count  # noqa: E402
from zipa.train.args import PRESET_CHOICES  # noqa: E402
from zipa.train.distributed import DistInfo  # noqa: E402
from zipa.train.loop import Trainer  # noqa: E402
from zipa.train.recipe import training_parser  # noqa: E402

FRAMES_PER_SECOND = 100  # fbank frame rate
FEATURE_DIM = 80
STEADY_STATE_BATCH = 100_000  # where the warm-up schedules have ended

# Recipe defaults, as in zipformer_crctc/train.py and zipformer_transducer/train.py:
# (model defaults, training defaults, output_downsampling_factor).
RECIPES = {
    "crctc": (dict(use_ctc=True, use_transducer=False), dict(use_cr_ctc=True, enable_spec_aug=False), 1),
    "transducer": (dict(use_ctc=False, use_transducer=True), dict(use_cr_ctc=False), 2),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(rng: random.Random, max_duration: float, min_seconds: float, max_seconds: float,
                 tokens_per_second: float, vocab_size: int) -> tuple:
    """(batch in the data module's format, seconds of audio in it)."""
    center = rng.uniform(min_seconds, max_seconds)
    durations = []
    while True:
        d = min(max(center * rng.uniform(0.9, 1.1), min_seconds), max_seconds, max_duration)
        if durations and sum(durations) + d > max_duration:
            break
        durations.append(d)
    durations.sort(reverse=True)  # as lhotse's K2SpeechRecognitionDataset orders a batch
    frames = [int(d * FRAMES_PER_SECOND) for d in durations]
    feats = torch.zeros(len(frames), frames[0], FEATURE_DIM)
    for i, n in enumerate(frames):
        feats[i, :n] = torch.randn(n, FEATURE_DIM) * 4 - 8  # roughly log-mel scaled
    token_ids = [[rng.randrange(3, vocab_size) for _ in range(max(1, int(d * tokens_per_second)))] for d in durations]
    supervisions = {
        "num_frames": torch.tensor(frames, dtype=torch.int64),
        "sequence_idx": torch.arange(len(frames), dtype=torch.int64),
        "start_frame": torch.zeros(len(frames), dtype=torch.int64),
        "token_ids": token_ids,
    }
    return {"inputs": feats, "supervisions": supervisions}, sum(durations)


def make_trainer(args, preset: str, max_duration: float, exp_dir: Path) -> Trainer:
    model_defaults, training_defaults, factor = RECIPES[args.recipe]
    parser = training_parser("benchmark", AsrDataModule, model_defaults, training_defaults)
    train_args = parser.parse_args([
        "--preset", preset, "--device", args.device, "--exp-dir", str(exp_dir), "--tensorboard", "False",
        "--max-duration", str(max_duration), "--use-fp16", str(args.use_fp16), "--use-bf16", str(args.use_bf16),
        "--seed", str(args.seed),
    ])
    trainer = Trainer(train_args, DistInfo(), data_module=None, output_downsampling_factor=factor)
    trainer.batch_idx_train = STEADY_STATE_BATCH
    set_batch_count(trainer.model, STEADY_STATE_BATCH)
    return trainer


def measure(args, preset: str, max_duration: float) -> dict:
    device = torch.device(args.device)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as exp_dir:
        trainer = make_trainer(args, preset, max_duration, Path(exp_dir))
        params = sum(p.numel() for p in trainer.raw_model.parameters()) / 1e6
        batches = [
            random_batch(rng, max_duration, args.min_seconds, args.max_seconds, args.tokens_per_second,
                         trainer.config.vocab_size)
            for _ in range(args.warmup_steps + args.steps)
        ]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, audio, utterances = [], [], []
        for i, (batch, seconds) in enumerate(batches):
            sync(device)
            start = time.perf_counter()
            trainer.batch_idx_train += 1
            info = trainer.train_step(batch, None)
            sync(device)
            elapsed = time.perf_counter() - start
            kind = "warm-up" if i < args.warmup_steps else "timed"
            log(f"  {kind} step: {len(batch['supervisions']['token_ids'])} utterances, {seconds:.1f} s of audio, "
                f"{elapsed:.3f} s, loss/frame {info['loss'] / max(info['frames'], 1):.3f}"
                + (" (skipped: non-finite loss)" if "skipped" in info else ""))
            if i >= args.warmup_steps:
                times.append(elapsed)
                audio.append(seconds)
                utterances.append(len(batch["supervisions"]["token_ids"]))
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**30
        else:  # lifetime peak resident size of this process (KiB on Linux)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        del trainer
    return dict(preset=preset, max_duration=max_duration, params=params, utterances=statistics.mean(utterances),
                audio=statistics.mean(audio), median=statistics.median(times), rate=sum(audio) / sum(times), peak=peak)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "large"], choices=PRESET_CHOICES)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="crctc")
    parser.add_argument("--max-duration", type=float, nargs="+", default=[120.0],
                        help="seconds of audio per batch (one or more values to compare)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--use-fp16", action="store_true", help="autocast float16 + grad scaler (CUDA)")
    parser.add_argument("--use-bf16", action="store_true", help="autocast bfloat16 (CUDA)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="shortest utterance")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="longest utterance")
    parser.add_argument("--tokens-per-second", type=float, default=10.0, help="label length per second of audio")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.use_fp16 and args.use_bf16:
        parser.error("choose one of --use-fp16 and --use-bf16")
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but no GPU is visible")
    if device.type != "cuda" and (args.use_fp16 or args.use_bf16):
        log("note: --use-fp16/--use-bf16 only act on CUDA; this run is float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("zipa").setLevel(logging.WARNING)

    rows = []
    for preset in args.presets:
        for max_duration in args.max_duration:
            log(f"{preset}, --max-duration {max_duration:g}: {args.warmup_steps} warm-up + {args.steps} timed steps ...")
            try:
                rows.append(measure(args, preset, max_duration))
            except torch.cuda.OutOfMemoryError:
                log("  out of GPU memory")
                rows.append(dict(preset=preset, max_duration=max_duration, oom=True))
            if device.type == "cuda":
                torch.cuda.empty_cache()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    precision = "fp16 + grad scaler" if args.use_fp16 and device.type == "cuda" else (
        "bf16" if args.use_bf16 and device.type == "cuda" else "fp32")
    print(f"\nTraining step ({args.recipe} recipe: forward + backward + ScaledAdam), {name}, {precision}, "
          f"torch {torch.__version__}, {args.warmup_steps} warm-up + {args.steps} timed steps, "
          f"utterances {args.min_seconds:g}-{args.max_seconds:g} s")
    print(machine(device))
    header = f"{'preset':<8}{'max-dur':>8}{'params':>9}{'utts':>7}{'audio s':>9}{'s/step':>9}{'audio s/s':>11}{'peak GiB':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.get("oom"):
            print(f"{r['preset']:<8}{r['max_duration']:>8g}{'out of GPU memory':>54}")
            continue
        peak = f"{r['peak']:.2f}" + ("" if device.type == "cuda" else "~")
        print(f"{r['preset']:<8}{r['max_duration']:>8g}{r['params']:>8.1f}M{r['utterances']:>7.1f}{r['audio']:>9.1f}"
              f"{r['median']:>9.3f}{r['rate']:>11.1f}{peak:>10}")
    print("\nutts, audio s: per batch (mean over timed steps); s/step: median; audio s/s: total audio / total time.")
    if device.type == "cuda":
        print("peak GiB: torch.cuda.max_memory_allocated over all steps (the allocator reserves somewhat more).")
    else:
        print("peak GiB~: the process's lifetime peak resident memory (includes Python, torch and earlier presets).")


if __name__ == "__main__":
    main()
