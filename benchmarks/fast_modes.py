"""Fast inference modes and what they cost: speed against float32 and accuracy on real speech.

For a trained CTC model and one or more Lhotse shar folders (a `dev`/`test` split), every
utterance is decoded greedily (CTC best path) in each mode:

* fp32          - the PyTorch model as it is (the reference of every comparison);
* bf16          - `--precision bf16` on a CPU: the float32 model whose products run in bfloat16
                  (`zipa.model.precision.LowPrecisionModel(..., products_only=True)`);
* bf16-full     - `--precision bf16-full`: a bfloat16 copy of the model (`LowPrecisionModel`:
                  `model.to(torch.bfloat16)`, features cast to it, outputs back to float32):
                  all weights and activations in bfloat16 (`--precision bf16` on CUDA);
* bf16-autocast - `torch.autocast(device, torch.bfloat16)` around the float32 model: matmuls and
                  convolutions in bfloat16, normalisation/softmax/reductions in float32;
* fp16          - (CUDA only) a float16 copy of the model;
* onnx-fp32, onnx-int8 - the model exported with `zipa.onnx.export.export_ctc` and dynamically
                  quantised with `quantize_int8` (MatMul/Gemm weights int8), run by onnxruntime.

Speed: the encoder + CTC head over the whole set in length-sorted batches of `--batch-size`
(features computed once, outside the timing); each batch runs in every mode in turn, the order
alternating from batch to batch, after one untimed warm-up batch per mode; the ratio is
fp32 time / mode time, both measured in this run. Accuracy: PER (corpus level, the references
normalised as `zipa evaluate` does) per mode, its change against fp32 (percentage points), and
the share of utterances whose hypothesis is identical to fp32's.

    python benchmarks/fast_modes.py --model exp/averaged.pth \
        --shar-dirs data/demo/dev data/demo/test --threads 1
    python benchmarks/fast_modes.py --model M --shar-dirs D --modes fp32 bf16-full fp16 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a source checkout

from benchmarks.floor import machine  # noqa: E402

CPU_MODES = ["fp32", "bf16", "bf16-full", "bf16-autocast", "onnx-fp32", "onnx-int8"]
CUDA_MODES = ["fp32", "bf16-full", "bf16-autocast", "fp16"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class LowPrecision(torch.nn.Module):
    """A copy of `model` in `dtype` (zipa.model.precision.LowPrecisionModel)."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype, products_only: bool = False):
        super().__init__()
        from zipa.model.precision import LowPrecisionModel

        self.inner = LowPrecisionModel(copy.deepcopy(model), dtype, products_only)

    def log_probs(self, feats, lens):
        out, out_lens = self.inner.forward_encoder(feats, lens)
        return self.inner.ctc_output(out), out_lens


class Autocast(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.inner, self.device_type, self.dtype = model, device.type, dtype

    def log_probs(self, feats, lens):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out, out_lens = self.inner.forward_encoder(feats, lens)
            return self.inner.ctc_output(out).float(), out_lens


class Plain(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner = model

    def log_probs(self, feats, lens):
        out, out_lens = self.inner.forward_encoder(feats, lens)
        return self.inner.ctc_output(out).float(), out_lens


def onnx_runners(model, workdir: Path, threads: int, wanted) -> dict:
    from zipa.onnx.export import export_ctc, quantize_int8
    from zipa.onnx.runtime import load_onnx_model

    fp32_path = export_ctc(model, workdir / "model.onnx")
    paths = {"onnx-fp32": fp32_path}
    if "onnx-int8" in wanted:
        paths["onnx-int8"] = quantize_int8(fp32_path, workdir / "model.int8.onnx")
    return {name: Plain(load_onnx_model(path, num_threads=threads)) for name, path in paths.items() if name in wanted}


def load_cuts(shar_dir: Path):
    from lhotse import CutSet

    return list(CutSet.from_shar(in_dir=str(shar_dir)))


def greedy(log_probs, lens):
    from zipa.decoding.ctc import ctc_greedy_search

    return ctc_greedy_search(log_probs, lens)


def run_split(name, cuts, transcriber, runners, batch_size, device):
    """{mode: {cut_id: token ids}}, {mode: seconds}."""
    order = sorted(range(len(cuts)), key=lambda i: cuts[i].duration, reverse=True)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    modes = list(runners)
    ids = {m: {} for m in modes}
    seconds = defaultdict(float)
    audio_seconds = 0.0
    with torch.inference_mode():
        for b, batch in enumerate(batches):
            audio = [cuts[i].load_audio()[0] for i in batch]
            feats, lens = transcriber.features(audio, sampling_rate=cuts[batch[0]].sampling_rate)
            feats, lens = feats.to(device), lens.to(device)
            audio_seconds += sum(cuts[i].duration for i in batch)
            if b == 0:  # warm-up
                for m in modes:
                    runners[m].log_probs(feats, lens)
            for m in modes if b % 2 == 0 else modes[::-1]:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                log_probs, out_lens = runners[m].log_probs(feats, lens)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[m] += time.perf_counter() - start
                for i, tokens in zip(batch, greedy(log_probs.cpu(), out_lens.cpu())):
                    ids[m][cuts[i].id] = tokens
    log(f"  {name}: {len(cuts)} utterances, {audio_seconds:.0f} s of audio, {len(batches)} batches")
    return ids, dict(seconds), audio_seconds


def score(cuts, ids_by_mode, tokenizer):
    from zipa.evaluation.evaluate import NormalizationReport
    from zipa.evaluation.metrics import EvaluationResult, compute_metrics

    report = NormalizationReport()
    refs = {c.id: report.normalize(c.supervisions[0].text) for c in cuts}
    langs = {c.id: c.supervisions[0].language for c in cuts}
    out = {}
    base = ids_by_mode["fp32"]
    for mode, ids in ids_by_mode.items():
        results = [EvaluationResult(cid, refs[cid], tokenizer.decode(ids[cid]), langs[cid]) for cid in refs if refs[cid]]
        per = compute_metrics(results)["overall"]["PER"]
        same = sum(ids[cid] == base[cid] for cid in refs) / len(refs)
        out[mode] = dict(PER=per, identical=same)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a CTC checkpoint (.pth) that zipa can load")
    parser.add_argument("--shar-dirs", nargs="+", type=Path, required=True)
    parser.add_argument("--modes", nargs="+", help=f"default: CPU {CPU_MODES}, CUDA {CUDA_MODES}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (CPU)")
    args = parser.parse_args(argv)

    from zipa.inference.transcriber import Transcriber

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    modes = args.modes or (CUDA_MODES if device.type == "cuda" else CPU_MODES)
    if "fp32" not in modes:
        modes = ["fp32", *modes]
    transcriber = Transcriber.from_checkpoint(args.model, device="cpu", aligner=None)
    model = transcriber.model.eval()
    if not model.use_ctc:
        raise SystemExit("fast_modes.py: needs a CTC model")
    runners = {}
    with tempfile.TemporaryDirectory(prefix="zipa-fast-modes-") as tmp:
        onnx_wanted = [m for m in modes if m.startswith("onnx")]
        onnx = onnx_runners(model, Path(tmp), args.threads, onnx_wanted) if onnx_wanted else {}
        model = model.to(device)
        for m in modes:
            if m == "fp32":
                runners[m] = Plain(model)
            elif m in ("bf16-full", "fp16"):
                runners[m] = LowPrecision(model, torch.bfloat16 if m == "bf16-full" else torch.float16)
            elif m == "bf16":
                runners[m] = LowPrecision(model, torch.bfloat16, products_only=device.type == "cpu")
            elif m == "bf16-autocast":
                runners[m] = Autocast(model, device, torch.bfloat16)
            elif m in onnx:
                runners[m] = onnx[m]
            else:
                raise SystemExit(f"unknown mode {m!r}")
        rows = []
        for shar_dir in args.shar_dirs:
            cuts = load_cuts(shar_dir)
            ids, seconds, audio_seconds = run_split(shar_dir.name, cuts, transcriber, runners, args.batch_size, device)
            acc = score(cuts, ids, transcriber.tokenizer)
            rows.append((shar_dir.name, len(cuts), audio_seconds, seconds, acc))

    print(f"\nFast modes against fp32: {args.model}; device {device}, {args.threads} thread(s), batch "
          f"{args.batch_size} (length-sorted), torch {torch.__version__}; greedy CTC")
    print(machine(device))
    width = max(8, *(len(row[0]) + 2 for row in rows))
    header = f"{'set':<{width}}{'mode':<15}{'speed-up':>9}{'RTF':>9}{'PER %':>8}{'ΔPER pp':>9}{'identical':>10}"
    print(header)
    print("-" * len(header))
    for name, n, audio_seconds, seconds, acc in rows:
        for m in runners:
            delta = acc[m]["PER"] - acc["fp32"]["PER"]
            print(f"{name:<{width}}{m:<15}{seconds['fp32'] / seconds[m]:8.2f}x{seconds[m] / audio_seconds:9.4f}"
                  f"{acc[m]['PER']:8.2f}{delta:+9.2f}{100 * acc[m]['identical']:9.1f}%")
    print("speed-up: fp32 seconds / mode seconds (encoder + CTC head, same run, alternating order); RTF: "
          "seconds per second of audio; identical: utterances whose greedy token ids equal fp32's.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
