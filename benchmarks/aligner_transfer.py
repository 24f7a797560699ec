"""Leave one synthesiser out: does the frame aligner learn phones, or the synthesiser it was trained on?

The aligner (`zipa.train.aligner`) is trained three times for one model, on the same espeak-ng
speech (the demo corpus's train sentences, augmented as `train_aligner.py` does) plus:

* ``espeak-ng only``: no Festival speech;
* ``+ half the allowed Festival voices``: ked_diphone (English), suo_fi_lj_diphone (Finnish),
  msu_ru_nsh_clunits (Russian); hindi_NSK_diphone, lp_diphone and czech_ph are never trained;
* ``+ all allowed Festival voices``: those four with demo sentences (English, Russian, Hindi,
  Finnish), `train_aligner.py`'s default; lp_diphone and czech_ph (no demo sentences) stay
  never trained.

Each is scored by forced alignment of the reference transcript (``model.align``) on the
sentences of ``benchmarks/timestamps.py`` (none of them trained on), spoken by espeak-ng voice
variants none of the training uses and by every installed Festival voice, grouped by what that
aligner saw: trained voices, allowed voices it never saw, and the HELD-OUT voices (never
trained or tuned on by anything). CTC-spike times (no aligner) are scored on the same speech.
Per group: phones, share within 20 ms, bias, and per phone class the median signed error.

    python benchmarks/aligner_transfer.py --model exp/demo_ctc/averaged.pth --json exp/demo_ctc/aligner_transfer.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a source checkout
sys.path.insert(0, str(REPO / "benchmarks"))

HALF = ("ked_diphone", "suo_fi_lj_diphone", "msu_ru_nsh_clunits")


def main(argv=None) -> int:
    from zipa.train.aligner import DEFAULT_FESTIVAL_VOICES, AlignerTrainingConfig

    d = AlignerTrainingConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a CTC model: .pth, folder or name (zipa.load_model)")
    p.add_argument("--sentences-per-language", type=int, default=d.sentences_per_language)
    p.add_argument("--renderings", type=int, default=d.renderings)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--espeak-voices", nargs="+", default=["m4", "f5"], help="espeak-ng variants of the test speech")
    p.add_argument("--num", type=int, help="only the first N test sentences (of each list) for a quick run")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    import zipa
    from timestamps import FESTIVAL_SENTENCES, PITCH, PITCH_RANGE, RATE, SENTENCES
    from zipa.evaluation.timing import espeak_reference, festival_reference, forced_pairs, phone_class, timing_stats
    from zipa.model.aligner import FrameAligner, encoder_fingerprint
    from zipa.text import festival
    from zipa.train.aligner import FESTIVAL, aligner_config, fit, make_examples, plan_speech

    torch.set_num_threads(args.threads)
    t0 = time.time()
    model = zipa.load_model(args.model, device=args.device, aligner=None)
    installed = set(festival.installed_voices())
    voices = tuple(v for v in DEFAULT_FESTIVAL_VOICES if v in installed)
    cfg = AlignerTrainingConfig(sentences_per_language=args.sentences_per_language, renderings=args.renderings,
                                epochs=args.epochs, heldout_fraction=0.0, festival_voices=voices, seed=args.seed)
    config = aligner_config(model, cfg)
    examples, _ = make_examples(model, plan_speech(cfg), config, cfg, lambda line: print(line, flush=True))
    print(f"{len(examples)} training utterances synthesised and encoded ({time.time() - t0:.0f} s)", flush=True)

    rng = random.Random(args.seed)
    sentences, festival_sentences = SENTENCES[:args.num], FESTIVAL_SENTENCES[:args.num]
    tests = []  # (voice, TimedUtterance)
    for variant in args.espeak_voices:
        for language, text in sentences:
            prosody = dict(rate=rng.randint(*RATE), pitch=rng.randint(*PITCH), pitch_range=rng.randint(*PITCH_RANGE))
            tests.append(("espeak-ng", espeak_reference(text, f"{language}+{variant}", seed=rng.randrange(2**31),
                                                        **prosody)))
    for name in [v for v in festival.VOICES if v in installed]:
        texts = [t for code, t in sentences + festival_sentences if code == festival.voice(name).language]
        if not texts:
            continue
        tests += [(name, festival_reference(s)) for s in festival.synthesize(texts, name)]

    settings = {"espeak-ng only": (), "+ half the allowed Festival voices": tuple(v for v in HALF if v in installed),
                "+ all allowed Festival voices": voices}

    def group(voice, trained):
        if voice == "espeak-ng":
            return "espeak-ng"
        if voice in trained:
            return "festival trained"
        return "festival allowed, never trained" if festival.voice(voice).allowed else "festival HELD OUT"

    def score(trained):
        pairs = {}
        for voice, utt in tests:
            (forced,) = model.align([utt.samples], utt.transcript, sampling_rate=utt.sample_rate)
            pairs.setdefault(group(voice, trained), []).extend(forced_pairs(utt.phones, forced.phones))
        out = {}
        for name, labelled in pairs.items():
            errors = [e for _, e in labelled]
            row = timing_stats(errors).row()
            row["per_class_median_signed_ms"] = {
                cls: round(1000 * statistics.median([e for label, e in labelled if phone_class(label) == cls]), 1)
                for cls in sorted({phone_class(label) for label, _ in labelled})}
            row["per_class_within_20ms_%"] = {
                cls: round(100 * timing_stats([e for label, e in labelled if phone_class(label) == cls]).within_20, 1)
                for cls in row["per_class_median_signed_ms"]}
            out[name] = row
        return out

    results = {}
    model.aligner = None
    results["CTC spikes (no aligner)"] = score(())
    for name, trained in settings.items():
        torch.manual_seed(cfg.seed)
        aligner = FrameAligner(config, encoder_fingerprint(model.model)).to(model.device)
        train = [e for e in examples if not e.voice.startswith(FESTIVAL) or e.voice[len(FESTIVAL):] in trained]
        fit(aligner, train, cfg.epochs, cfg.lr, cfg.seed)
        model.aligner = aligner
        results[name] = score(trained)
        model.aligner = None
        print(f"{name}: trained on {len(train)} utterances ({time.time() - t0:.0f} s)", flush=True)

    print("command: python benchmarks/aligner_transfer.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print("\t".join(["aligner", "scored on", "phones", "within_20ms_%", "bias_ms", "median_ms",
                     "class medians (signed ms) / within 20 ms %"]))
    for name, by_group in results.items():
        for g, row in by_group.items():
            classes = " ".join(f"{c[:4]} {row['per_class_median_signed_ms'][c]:+.1f}/{row['per_class_within_20ms_%'][c]:.0f}"
                               for c in row["per_class_median_signed_ms"])
            print("\t".join([name, g, str(row["phones"]), str(row["within_20ms_%"]), str(row["bias_ms"]),
                             str(row["median_ms"]), classes]))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "settings": settings,
                                         "results": results}, ensure_ascii=False, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
