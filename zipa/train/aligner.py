"""Train a frame aligner (`zipa.model.aligner.FrameAligner`) for a model: its phone times.

    python zipformer_crctc/train_aligner.py --model-path exp/demo_ctc/averaged.pth
    # -> exp/demo_ctc/averaged.aligner.pt, used by `zipa align` and `model.align` from then on

The data makes itself: espeak-ng speaks sentences and says when it starts each phoneme
(`zipa.evaluation.timing.espeak_reference`), and so does Festival, a second synthesiser built
from recordings of real speakers (`zipa.evaluation.timing.festival_reference`, voices in
``festival_voices``: only those `zipa.text.festival` marks allowed), so each 10 ms sub-frame of
the speech gets the class of the phone sounding at its centre (`frame_targets`). The sentences
are the demo corpus's *train* sentences (`zipa.data.demo_corpus.plan_corpus`: its dev and test
sentences stay unseen), ``sentences_per_language`` of them per language, each spoken
``renderings`` times by espeak-ng with one of the corpus's voice variants and a speaking rate,
pitch and pitch range drawn from the corpus's ranges, and ``renderings`` times by each Festival
voice of its language (a random speed, Festival's ``Duration_Stretch`` 0.85-1.15, after the
first). With ``augment``, every rendering after the first of each sentence and voice goes
through a random chain of what recordings do (`zipa.audio.augment`: noise at 0-30 dB SNR,
reverberation, speed 0.9-1.1 with the times scaled, loudness, telephone band, lossy codecs).
The model encodes each utterance once (frozen, batch of one, as `Transcriber.align` encodes one
item); the aligner is then trained on the encoder outputs with cross-entropy (Adam,
one utterance per step). A tenth of the sentences (``heldout_fraction``) is kept out of
training to report frame accuracy and how far the aligned phone starts are from espeak's.

Targets. Phones start where the project's boundary convention puts them (a stop at the start
of its closure, `zipa.evaluation.timing`: espeak-ng's stop events are moved back to it,
Festival's segments already follow it). Each phone with a start time owns the stretch from its
start to the next timed phone's start (the last to the end of the audio); phones without a start of their own (the
second half of an affricate or diphthong, which espeak speaks as one phoneme) share the
stretch of the timed phone before them equally; before the first phone, and in espeak's pauses
longer than ``min_pause``, it is silence (class 0, the blank id). An utterance whose first
phone has no start is left out.

Deterministic given the seed when run as a command (a fresh process): libespeak-ng carries a
pitch-flutter phase over from one utterance to the next, so in a process that synthesised other
speech before, the audio (hence the weights) differs slightly.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from zipa.data.demo_corpus import FESTIVAL_STRETCH, TRAIN_LANGUAGES, DemoCorpusConfig, language, plan_corpus
from zipa.decoding.alignment import phone_forced_align
from zipa.decoding.timestamps import FRAME_OFFSET
from zipa.evaluation.timing import ReferencePhone, TimedUtterance, espeak_reference, festival_reference, timing_stats
from zipa.model.aligner import SILENCE, AlignerConfig, FrameAligner, aligner_path_for, encoder_fingerprint, save_aligner
from zipa.model.io import default_device

Log = Callable[[str], None]


# The allowed Festival voices of the demo corpus's languages (lp_diphone and czech_ph have no
# sentences there: they stay never-trained allowed voices for measuring).
DEFAULT_FESTIVAL_VOICES = ("ked_diphone", "msu_ru_nsh_clunits", "hindi_NSK_diphone", "suo_fi_lj_diphone")
FESTIVAL = "festival:"  # voice prefix of Festival utterances in the plan


@dataclass
class AlignerTrainingConfig:
    """What `train_aligner` does; the defaults are those measured in the README."""

    languages: tuple[str, ...] = tuple(lang.code for lang in TRAIN_LANGUAGES)  # demo corpus codes
    sentences_per_language: int = 60  # all the train sentences of the default corpus
    renderings: int = 2  # voice variants per sentence
    heldout_fraction: float = 0.1  # of the sentences of each language
    epochs: int = 20
    lr: float = 2e-3
    channels: int = 256
    kernel_size: int = 5
    subframes: int = 0  # per encoder frame; 0: as many as make 10 ms
    # Sub-frames of encoder frame j cover the 20 ms that CTC tokens at frame j are given
    # (`frame_time`: the receptive field's centre moved back by the spike lag): measured better
    # than centring them on the receptive field (FRAME_START; README).
    time_offset: float = FRAME_OFFSET
    min_pause: float = 0.02  # espeak pauses longer than this (s) are silence
    seed: int = 0
    corpus_seed: int = DemoCorpusConfig.seed  # the corpus whose train split the sentences come from
    # Allowed Festival voices (zipa.text.festival) that also speak their language's sentences.
    festival_voices: tuple[str, ...] = DEFAULT_FESTIVAL_VOICES
    augment: bool = True  # renderings after the first go through zipa.audio.augment


@dataclass
class Example:
    """One utterance ready for training: encoder output (T, D), targets (T * subframes,), and
    what measuring needs (reference phones, classes)."""

    language: str
    sentence: int
    encoder_out: torch.Tensor
    targets: torch.Tensor
    utterance: TimedUtterance = field(repr=False)
    classes: list[int] = field(default_factory=list)
    voice: str = ""  # the plan's voice: espeak-ng voice+variant or festival:<voice>


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def plan_speech(cfg: AlignerTrainingConfig) -> list[tuple[str, int, str, str, dict, int, int | None]]:
    """``(language, sentence number, text, voice, prosody, noise seed, augmentation seed or None)``
    of every utterance to synthesise: train sentences of the demo corpus (its plan with
    ``cfg.corpus_seed``), drawn and spoken as the module docstring says. ``voice`` is an espeak-ng
    voice with its variant, or ``festival:<voice>`` (prosody then ``{"stretch": s}``)."""
    from zipa.text import festival

    by_language: dict[str, list[str]] = {}
    for name in cfg.festival_voices:
        if not festival.voice(name).allowed:
            raise ValueError(
                f"{name} is a held-out Festival voice: never train on it "
                f"(allowed: {', '.join(festival.allowed_voices())})"
            )
        codes = [c for c in cfg.languages if language(c).voice == festival.voice(name).language]
        if not codes:
            raise ValueError(
                f"Festival voice {name} speaks {festival.voice(name).language}, none of the "
                f"languages {' '.join(cfg.languages)}"
            )
        by_language.setdefault(codes[0], []).append(name)
    corpus = DemoCorpusConfig(seed=cfg.corpus_seed, languages=tuple(cfg.languages), heldout=())
    if cfg.renderings < 1 or cfg.renderings > len(corpus.variants):
        raise ValueError(f"renderings must be 1 to {len(corpus.variants)} (the corpus's voice variants)")
    sentences: dict[str, dict[int, tuple[str, str]]] = {}
    for utt in plan_corpus(corpus)["train"]:
        sentences.setdefault(utt.language, {})[utt.sentence] = (utt.text, utt.voice.split("+")[0])
    rng = random.Random(cfg.seed)
    out: list[tuple[str, int, str, str, dict, int, int | None]] = []
    for code in cfg.languages:
        available = sorted(sentences.get(code, {}))
        chosen = sorted(rng.sample(available, min(cfg.sentences_per_language, len(available))))
        for n in chosen:
            text, voice = sentences[code][n]
            for k, variant in enumerate(rng.sample(list(corpus.variants), cfg.renderings)):
                prosody = dict(
                    rate=rng.randint(*corpus.rate),
                    pitch=rng.randint(*corpus.pitch),
                    pitch_range=rng.randint(*corpus.pitch_range),
                )
                out.append(
                    (
                        code,
                        n,
                        text,
                        voice + (f"+{variant}" if variant else ""),
                        prosody,
                        rng.randrange(2**31),
                        rng.randrange(2**31) if cfg.augment and k else None,
                    )
                )
            for name in by_language.get(code, []):
                for k in range(cfg.renderings):
                    stretch = round(rng.uniform(*FESTIVAL_STRETCH), 3) if k else 1.0
                    out.append(
                        (
                            code,
                            n,
                            text,
                            FESTIVAL + name,
                            {"stretch": stretch},
                            0,
                            rng.randrange(2**31) if cfg.augment and k else None,
                        )
                    )
    return out


def augment_utterance(utt: TimedUtterance, seed: int) -> TimedUtterance:
    """``utt`` at 16 kHz through one random chain of `zipa.audio.augment` (drawn from ``seed``),
    its phone and event times scaled by the chain's speed change."""
    from math import gcd

    from scipy.signal import resample_poly

    from zipa.audio import augment

    rate = augment.SAMPLE_RATE
    x = utt.samples
    if utt.sample_rate != rate:
        g = gcd(utt.sample_rate, rate)
        x = resample_poly(x, rate // g, utt.sample_rate // g).astype(np.float32)
    speed, transform, _ = augment.random_augmentation(random.Random(seed))
    x = transform(augment.change_speed(x, speed))
    phones = [p if p.start is None else ReferencePhone(p.label, p.start / speed) for p in utt.phones]
    events = [
        e._replace(start=e.start / speed, end=e.end / speed, sample=int(round(e.start / speed * rate)))
        for e in utt.events
    ]
    return TimedUtterance(utt.text, utt.voice, x, rate, utt.transcript, phones, events)


def synthesize_plan(plan) -> list[TimedUtterance]:
    """The timed utterance of each planned item (Festival's in one run per voice), augmented
    where the plan says so."""
    from zipa.text import festival

    spoken: dict[int, TimedUtterance] = {}
    for name in sorted({voice for _, _, _, voice, _, _, _ in plan if voice.startswith(FESTIVAL)}):
        items = [i for i, item in enumerate(plan) if item[3] == name]
        speech = festival.synthesize(
            [plan[i][2] for i in items], name[len(FESTIVAL) :], [plan[i][4]["stretch"] for i in items]
        )
        spoken.update((i, festival_reference(s)) for i, s in zip(items, speech))
    out = []
    for i, (_code, _n, text, voice, prosody, seed, augment_seed) in enumerate(plan):
        utt = spoken[i] if i in spoken else espeak_reference(text, voice, seed=seed, **prosody)
        out.append(utt if augment_seed is None else augment_utterance(utt, augment_seed))
    return out


def phone_segments(utt: TimedUtterance) -> list[tuple[float, float, str]] | None:
    """``(start, end, phone)`` of each phone of ``utt`` (see "Targets" in the module docstring),
    None when its first phone has no start."""
    if not utt.phones or utt.phones[0].start is None:
        return None
    groups: list[tuple[float, list[str]]] = []
    for phone in utt.phones:
        if phone.start is not None:
            groups.append((phone.start, [phone.label]))
        else:
            groups[-1][1].append(phone.label)
    out = []
    for k, (start, labels) in enumerate(groups):
        end = groups[k + 1][0] if k + 1 < len(groups) else utt.duration
        width = (end - start) / len(labels)
        out += [(start + i * width, start + (i + 1) * width, label) for i, label in enumerate(labels)]
    return out


def frame_targets(
    utt: TimedUtterance,
    segments: Sequence[tuple[float, float, str]],
    class_of: Callable[[str], int],
    num_frames: int,
    offset: float,
    step: float,
    min_pause: float,
) -> np.ndarray:
    """The class of each of ``num_frames`` sub-frames (sub-frame k centred at ``offset + (k +
    0.5) * step`` s): the phone whose segment holds its centre, else silence; espeak's pauses
    longer than ``min_pause`` are silence (Festival's pauses are events with an empty name too)."""
    centres = offset + (np.arange(num_frames) + 0.5) * step
    targets = np.full(num_frames, SILENCE, dtype=np.int64)
    for start, end, label in segments:
        targets[(centres >= start) & (centres < end)] = class_of(label)
    for event in utt.events:
        if not event.phoneme and event.end - event.start > min_pause:
            targets[(centres >= event.start) & (centres < event.end)] = SILENCE
    return targets


def make_examples(
    transcriber, plan, aligner_config: AlignerConfig, cfg: AlignerTrainingConfig, log: Log = print
) -> tuple[list[Example], int]:
    """Synthesise, encode and label the planned utterances; (examples, number left out)."""

    def class_of(label: str) -> int:
        return transcriber.tokenizer.piece_to_id(label[0])

    examples, skipped, t0 = [], 0, time.time()
    for i, ((code, n, _, voice, *_), utt) in enumerate(zip(plan, synthesize_plan(plan))):
        segments = phone_segments(utt)
        if segments is None:
            skipped += 1
            continue
        feats, feat_lens = transcriber.features([utt.samples], sampling_rate=utt.sample_rate)
        with torch.inference_mode():
            encoder_out, _ = transcriber.model.forward_encoder(
                feats.to(transcriber.device), feat_lens.to(transcriber.device)
            )
        encoder_out = encoder_out[0].float().cpu().clone()
        num = encoder_out.shape[0] * aligner_config.subframes
        targets = frame_targets(
            utt, segments, class_of, num, aligner_config.time_offset, aligner_config.step, cfg.min_pause
        )
        classes = [class_of(p.label) for p in utt.phones]
        examples.append(Example(code, n, encoder_out, torch.from_numpy(targets), utt, classes, voice))
        if (i + 1) % 50 == 0 or i + 1 == len(plan):
            log(f"  {i + 1}/{len(plan)} utterances synthesised and encoded ({time.time() - t0:.0f} s)")
    return examples, skipped


def split_heldout(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): ``fraction`` of each language's sentences (all their renderings) held
    out, at least one where a language has two sentences or more and ``fraction`` > 0."""
    rng = random.Random(f"{seed}:heldout")
    held = set()
    for code in sorted({e.language for e in examples}):
        sentences = sorted({e.sentence for e in examples if e.language == code})
        count = min(len(sentences) - 1, max(1, round(fraction * len(sentences)))) if fraction > 0 else 0
        held |= {(code, n) for n in rng.sample(sentences, max(count, 0))}
    train = [e for e in examples if (e.language, e.sentence) not in held]
    return train, [e for e in examples if (e.language, e.sentence) in held]


# ---------------------------------------------------------------------------------------------
# Training and measuring
# ---------------------------------------------------------------------------------------------


def fit(
    aligner: FrameAligner,
    train: Sequence[Example],
    epochs: int,
    lr: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``aligner`` in place (Adam, one utterance per step, shuffled each epoch with
    ``seed``; the learning rate falls from ``lr`` to 0 along a half cosine, which makes the
    result depend less on the last few steps); returns the mean loss of each epoch."""
    optimiser = torch.optim.Adam(aligner.parameters(), lr=lr)
    steps = max(1, epochs * len(train))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))
    )
    rng = random.Random(f"{seed}:order")
    device = next(aligner.parameters()).device
    losses = []
    aligner.train()
    for epoch in range(epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        total = 0.0
        for i in order:
            example = train[i]
            log_probs = aligner(example.encoder_out.to(device)[None])[0]
            loss = torch.nn.functional.nll_loss(log_probs, example.targets.to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item()
        losses.append(total / max(len(train), 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    aligner.eval()
    return losses


@torch.no_grad()
def measure(aligner: FrameAligner, examples: Sequence[Example]) -> dict[str, float]:
    """Frame accuracy, and the start errors of forced alignment of each utterance's reference
    phones (`phone_forced_align` on the aligner's log-probs, times as `Transcriber.time_grid`
    gives them) against espeak's starts: ``frame_accuracy``, ``phones``, ``within_20ms``,
    ``median_ms``, ``bias_ms``."""
    device = next(aligner.parameters()).device
    correct = frames = 0
    errors: list[float] = []
    step, offset = aligner.config.step, aligner.config.time_offset
    for example in examples:
        log_probs = aligner(example.encoder_out.to(device)[None])[0].cpu()
        correct += int((log_probs.argmax(-1) == example.targets).sum())
        frames += len(example.targets)
        if len(example.classes) <= log_probs.shape[0]:
            spans = phone_forced_align(log_probs, example.classes)
            errors += [
                offset + span.start * step - ref.start
                for span, ref in zip(spans, example.utterance.phones)
                if ref.start is not None
            ]
    out = {"frame_accuracy": correct / max(frames, 1)}
    if errors:
        stats = timing_stats(errors)
        out.update(
            phones=stats.n, within_20ms=stats.within_20, median_ms=stats.median * 1000, bias_ms=stats.bias * 1000
        )
    return out


def aligner_config(transcriber, cfg: AlignerTrainingConfig) -> AlignerConfig:
    """The shape of an aligner for ``transcriber``'s model with ``cfg``'s settings."""
    shift = transcriber.frame_shift
    subframes = cfg.subframes or max(1, round(shift / 0.01))
    probe = torch.zeros(1, 100, 80)  # the encoder's output width, whatever the architecture
    with torch.inference_mode():
        dim = transcriber.model.forward_encoder(
            probe.to(transcriber.device), torch.tensor([100], device=transcriber.device)
        )[0].shape[-1]
    return AlignerConfig(
        encoder_dim=int(dim),
        vocab_size=transcriber.tokenizer.vocab_size,
        frame_shift=shift,
        time_offset=cfg.time_offset,
        subframes=subframes,
        channels=cfg.channels,
        kernel_size=cfg.kernel_size,
    )


def train_aligner(transcriber, cfg: AlignerTrainingConfig, log: Log = print) -> tuple[FrameAligner, dict]:
    """Train an aligner for ``transcriber``'s model (see the module docstring); returns it and
    what to store with it (settings, sizes, results, seconds)."""
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    config = aligner_config(transcriber, cfg)
    plan = plan_speech(cfg)
    log(
        f"aligner: {len(plan)} utterances ({cfg.sentences_per_language} train sentences x {cfg.renderings} "
        f"rendering(s) in {len(cfg.languages)} languages: {' '.join(cfg.languages)}; Festival voices: "
        f"{' '.join(cfg.festival_voices) or 'none'}; augmented: {sum(p[6] is not None for p in plan)})"
    )
    examples, skipped = make_examples(transcriber, plan, config, cfg, log)
    train, heldout = split_heldout(examples, cfg.heldout_fraction, cfg.seed)
    if not train:
        raise ValueError("no utterances to train on")
    seconds = sum(e.utterance.duration for e in train)
    log(
        f"aligner: training on {len(train)} utterances ({seconds / 60:.1f} min), {len(heldout)} held out"
        f"{f', {skipped} left out (first phone without a start)' if skipped else ''}"
    )
    aligner = FrameAligner(config, encoder_fingerprint(transcriber.model)).to(transcriber.device)
    every = max(1, cfg.epochs // 6)

    def on_epoch(epoch: int, loss: float) -> None:
        if (epoch + 1) % every == 0 or epoch + 1 == cfg.epochs:
            line = f"aligner: epoch {epoch + 1}/{cfg.epochs} loss {loss:.3f}"
            if heldout:
                line += f", held-out frame accuracy {measure(aligner, heldout)['frame_accuracy']:.3f}"
                aligner.train()
            log(line + f" ({time.time() - t0:.0f} s)")

    losses = fit(aligner, train, cfg.epochs, cfg.lr, cfg.seed, on_epoch)
    results = {"train": measure(aligner, train)}
    if heldout:
        results["heldout"] = measure(aligner, heldout)
    for name, r in results.items():
        extra = (
            (
                f", phone starts within 20 ms {100 * r['within_20ms']:.1f} % of {r['phones']} (median "
                f"{r['median_ms']:.1f} ms, bias {r['bias_ms']:+.1f} ms)"
            )
            if "phones" in r
            else ""
        )
        log(f"aligner: {name}: frame accuracy {100 * r['frame_accuracy']:.1f} %{extra}")
    info = {
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "utterances": {"train": len(train), "heldout": len(heldout), "skipped": skipped},
        "train_minutes": round(seconds / 60, 2),
        "losses": [round(x, 4) for x in losses],
        "results": results,
        "seconds": round(time.time() - t0, 1),
    }
    return aligner, info


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def build_parser(description: str) -> argparse.ArgumentParser:
    d = AlignerTrainingConfig()
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument(
        "--model-path",
        required=True,
        default=argparse.SUPPRESS,
        help="the model to time phones for: a .pth (e.g. exp/demo_ctc/averaged.pth), a folder holding "
        "one, or a model name (zipa.load_model)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=argparse.SUPPRESS,
        help="where to write the aligner (default: <model stem>.aligner.pt beside the model, where "
        "zipa align and zipa.load_model find it)",
    )
    p.add_argument(
        "--languages",
        nargs="+",
        default=list(d.languages),
        help="demo corpus languages whose train sentences are spoken (zipa/assets/demo_texts/<code>.txt)",
    )
    p.add_argument(
        "--sentences-per-language",
        type=int,
        default=d.sentences_per_language,
        help="train sentences spoken per language (the default corpus has 60)",
    )
    p.add_argument("--renderings", type=int, default=d.renderings, help="voice variants per sentence")
    p.add_argument(
        "--heldout-fraction",
        type=float,
        default=d.heldout_fraction,
        help="share of each language's sentences kept out of training, to report on",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training utterances")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--channels", type=int, default=d.channels, help="channels of the aligner's convolution")
    p.add_argument("--kernel-size", type=int, default=d.kernel_size, help="its width in encoder frames (odd)")
    p.add_argument(
        "--festival-voices",
        nargs="*",
        default=list(d.festival_voices),
        help="allowed Festival voices that also speak their language's sentences (none: espeak-ng "
        "only; the default drops, with a message, voices that are not installed)",
    )
    p.add_argument("--no-augment", action="store_true", help="train on clean synthetic speech only")
    p.add_argument("--seed", type=int, default=d.seed, help="sentences, voices, prosody, initialisation and order")
    p.add_argument(
        "--corpus-seed",
        type=int,
        default=d.corpus_seed,
        help="seed of the demo corpus whose train split the sentences come from",
    )
    p.add_argument("--device", default=str(default_device()), help="cuda or cpu (default: cuda when available)")
    p.add_argument("--num-threads", type=int, default=argparse.SUPPRESS, help="CPU threads for torch")
    return p


def festival_voices(names: Sequence[str], languages: Sequence[str], log: Log) -> tuple[str, ...]:
    """``names`` without ``none``. The default voices keep those of ``languages``, and those that
    are not installed are dropped with a message (a voice named on purpose stays: planning or
    synthesis then says what is wrong with it)."""
    from zipa.text import festival

    names = tuple(n for n in names if n != "none")
    if names == DEFAULT_FESTIVAL_VOICES:
        spoken = {language(code).voice for code in languages}
        names = tuple(n for n in names if festival.voice(n).language in spoken)
        missing = [n for n in names if n not in festival.installed_voices()]
        if missing:
            log(
                f"aligner: Festival voices not installed, trained without them: {' '.join(missing)} "
                f"(apt-get install {festival.DEBIAN_PACKAGES})"
            )
            names = tuple(n for n in names if n not in missing)
    return names


def main(argv: Sequence[str] | None = None, description: str = "Train a frame aligner for a model.") -> int:
    args = build_parser(description).parse_args(argv)
    from zipa.hub.pretrained import resolve_model
    from zipa.inference.transcriber import Transcriber

    if getattr(args, "num_threads", None):
        torch.set_num_threads(args.num_threads)
    if not 0 <= args.heldout_fraction < 1:
        raise SystemExit("--heldout-fraction must be in [0, 1)")
    model_path = resolve_model(args.model_path)
    out = getattr(args, "out", None) or aligner_path_for(model_path)
    cfg = AlignerTrainingConfig(
        languages=tuple(args.languages),
        sentences_per_language=args.sentences_per_language,
        renderings=args.renderings,
        heldout_fraction=args.heldout_fraction,
        epochs=args.epochs,
        lr=args.lr,
        channels=args.channels,
        kernel_size=args.kernel_size,
        seed=args.seed,
        corpus_seed=args.corpus_seed,
        festival_voices=festival_voices(args.festival_voices, args.languages, print),
        augment=not args.no_augment,
    )

    def log(line: str) -> None:
        print(line, flush=True)

    transcriber = Transcriber.from_checkpoint(model_path, device=args.device, aligner=None)
    log(f"aligner: model {model_path} ({transcriber.frame_shift * 1000:g} ms frames), writing {out}")
    aligner, info = train_aligner(transcriber, cfg, log)
    info["model"] = str(model_path)
    save_aligner(aligner, out, info)
    log(f"wrote {out} ({info['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
