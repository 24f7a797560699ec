"""How accurate are phone start times? Measured on espeak-ng speech whose phone times are known.

espeak-ng reports the sample at which it starts each phoneme (`zipa.text.espeak.
synthesize_with_phones`); `zipa.evaluation.timing` turns that into a timed reference and compares
a CTC model's phone starts with it, for free transcription (greedy CTC, `Transcriber.timestamps`;
hypothesis phones matched to the reference by a Levenshtein alignment, equal labels only) and
for forced alignment of the reference transcript (`Transcriber.align`), each timed by CTC spikes
and, when the model has a frame aligner (`zipa.model.aligner`; ``--aligner``, by default the
``<model stem>.aligner.pt`` beside the model), by the aligner: four rows, free (CTC), forced
(CTC), forced (aligner) and free refined (aligner): the greedy CTC phones, placed by the aligner.

    python benchmarks/timestamps.py --model exp/demo_ctc/averaged.pth
    python benchmarks/timestamps.py --model M --voices m4 f5 --num 20 --json out.json
    python benchmarks/timestamps.py --model M --sentences my.tsv   # lines: <espeak voice> TAB <sentence>
    python benchmarks/timestamps.py --model M --aligner none       # CTC rows only

The built-in sentences (below) are in the demo corpus's eight training languages but are none
of its sentences (``zipa/assets/demo_texts``), and the default voice variants are none of the
corpus's (`zipa.data.demo_corpus.VOICE_VARIANTS`). Each sentence is spoken once per variant,
at a speaking rate, pitch and pitch range drawn (seeded) from the corpus's ranges.

Prints, for each row: phones measured, median and mean |start error| (ms), bias (mean
signed error, ms; positive = late) and the share of phones within 20 and 40 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a source checkout

# (espeak voice, sentence): written for this benchmark, not in zipa/assets/demo_texts.
SENTENCES = [
    ("en-us", "My cousin bought a green bicycle last summer."),
    ("en-us", "How much does this old map cost?"),
    ("en-us", "We usually eat dinner at seven."),
    ("en-us", "Her phone fell into the river yesterday."),
    ("en-us", "The baker sells fresh bread every morning."),
    ("es", "Mi prima trabaja en una tienda de zapatos."),
    ("es", "¿Dónde has dejado las llaves del coche?"),
    ("es", "Hoy vamos a cocinar arroz con verduras."),
    ("es", "Me gusta leer novelas por la noche."),
    ("es", "El perro duerme debajo de la mesa."),
    ("ru", "Мой друг живёт в маленьком городе у моря."),
    ("ru", "Кошка спит на тёплом подоконнике."),
    ("ru", "Где ты купил эту красивую лампу?"),
    ("ru", "Вечером пошёл сильный дождь."),
    ("ru", "Бабушка печёт пироги по субботам."),
    ("hi", "मेरा दोस्त हर सुबह दौड़ने जाता है।"),
    ("hi", "कल बाज़ार में बहुत भीड़ थी।"),
    ("hi", "क्या आप मुझे रास्ता बता सकते हैं?"),
    ("hi", "मैंने आज एक नई किताब खरीदी।"),
    ("hi", "उसकी बिल्ली दूध पी रही है।"),
    ("cmn", "我的表姐在商店工作。"),
    ("cmn", "今天晚上我们吃面条。"),
    ("cmn", "他每天早上骑自行车上班。"),
    ("cmn", "这本书非常有意思。"),
    ("cmn", "小狗在桌子下面睡觉。"),
    ("sw", "Binamu yangu anauza viatu sokoni."),
    ("sw", "Mvua kubwa ilinyesha jana usiku."),
    ("sw", "Ninapenda kunywa chai na maziwa."),
    ("sw", "Mbwa analala chini ya meza."),
    ("sw", "Tutapika wali na mboga leo."),
    ("tr", "Kuzenim bir ayakkabı mağazasında çalışıyor."),
    ("tr", "Anahtarlarımı nereye koyduğumu hatırlamıyorum."),
    ("tr", "Dün akşam çok güzel bir film izledik."),
    ("tr", "Köpek masanın altında uyuyor."),
    ("tr", "Bu kitabı kütüphaneden aldım."),
    ("fi", "Serkkuni myy kenkiä pienessä kaupassa."),
    ("fi", "Kissa nukkuu lämpimällä ikkunalaudalla."),
    ("fi", "Missä sinä ostit tämän kauniin lampun?"),
    ("fi", "Koira nukkuu pöydän alla."),
    ("fi", "Leipuri myy tuoretta leipää joka aamu."),
]
VOICE_VARIANTS = ("m4", "m6", "f5", "klatt2")  # none of them in the demo corpus
RATE, PITCH, PITCH_RANGE = (130, 190), (30, 70), (30, 80)  # the demo corpus's ranges


def read_sentences(path: Path) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        voice, tab, text = line.partition("\t")
        if not tab or not text.strip():
            sys.exit(f"{path}:{n}: expected '<espeak voice> TAB <sentence>'")
        out.append((voice.strip(), text.strip()))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a CTC model: .pth, folder or name (zipa.load_model)")
    p.add_argument("--voices", nargs="+", default=list(VOICE_VARIANTS),
                   help="espeak voice variants, each speaking every sentence ('' = the default voice)")
    p.add_argument("--sentences", type=Path, help="TSV: <espeak voice> TAB <sentence> per line")
    p.add_argument("--num", type=int, help="use only the first N sentences")
    p.add_argument("--seed", type=int, default=0, help="rate, pitch and noise seeds")
    p.add_argument("--default-prosody", action="store_true", help="espeak's default rate, pitch and range")
    p.add_argument("--aligner", default="auto",
                   help="frame aligner file for the aligner rows; auto (default): <model stem>.aligner.pt beside "
                        "the model, when there is one; none: CTC rows only")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the table and settings here")
    args = p.parse_args(argv)

    import torch

    import zipa
    from zipa.evaluation.timing import espeak_reference, forced_errors, free_errors, timing_stats

    torch.set_num_threads(args.threads)
    sentences = read_sentences(args.sentences) if args.sentences else SENTENCES
    if args.num is not None:
        sentences = sentences[: args.num]
    model = zipa.load_model(args.model, device=args.device, aligner=None if args.aligner == "none" else args.aligner)
    aligner = model.aligner
    rng = random.Random(args.seed)
    errors = {"free (CTC)": [], "forced (CTC)": []}
    if aligner is not None:
        errors.update({"forced (aligner)": [], "free refined (aligner)": []})
    timed = total = utterances = 0
    t0 = time.time()
    for variant in args.voices:
        for language, text in sentences:
            voice = f"{language}+{variant}" if variant else language
            prosody = {} if args.default_prosody else dict(
                rate=rng.randint(*RATE), pitch=rng.randint(*PITCH), pitch_range=rng.randint(*PITCH_RANGE)
            )
            utt = espeak_reference(text, voice, seed=rng.randrange(2**31), **prosody)
            utterances += 1
            total += len(utt.phones)
            timed += sum(r.start is not None for r in utt.phones)
            for timing in [None, aligner] if aligner is not None else [None]:
                model.aligner = timing
                kind = "CTC" if timing is None else "aligner"
                (free,) = model.timestamps([utt.samples], sampling_rate=utt.sample_rate)
                errors["free (CTC)" if timing is None else "free refined (aligner)"] += free_errors(utt.phones, free.phones)
                (forced,) = model.align([utt.samples], utt.transcript, sampling_rate=utt.sample_rate)
                errors[f"forced ({kind})"] += forced_errors(utt.phones, forced.phones)
    rows = {name: timing_stats(e).row() for name, e in errors.items()}
    aligner_name = "none" if aligner is None else "beside the model" if args.aligner == "auto" else args.aligner
    languages = sorted({language for language, _ in sentences})
    print(f"{utterances} utterances ({len(sentences)} sentences x {len(args.voices)} voice variants "
          f"{' '.join(args.voices)}; languages {' '.join(languages)}); reference phones {total}, "
          f"with a known start {timed}; aligner {aligner_name}; {time.time() - t0:.0f} s")
    header = ["", "phones", "median_ms", "mean_ms", "bias_ms", "within_20ms_%", "within_40ms_%"]
    print("\t".join(header))
    for name, row in rows.items():
        print("\t".join([name] + [str(row[h]) for h in header[1:]]))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "utterances": utterances,
                                         "reference_phones": total, "timed_phones": timed, "results": rows},
                                        ensure_ascii=False, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
