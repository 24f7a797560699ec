"""How accurate are phone start times? Measured on espeak-ng and Festival speech whose phone times are known.

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

Festival rows (`zipa.text.festival`, a second synthesiser built from recordings of real
speakers; ``--festival-voices``, by default every voice of `zipa.text.festival.VOICES` that is
installed): each voice speaks the sentences of its language (below; Italian and Czech ones for
Festival only), at its own speed, and its times are Festival's segments. The voices are grouped
by what the aligner saw: ``festival (trained)`` (voices in the aligner's training settings),
``festival (allowed, never trained)``, and ``festival (HELD OUT)``: voices no setting was ever
chosen on. Both synthesisers' references follow the project's boundary convention (a stop
starts at its closure, `zipa.evaluation.timing`).

Prints, for each synthesiser group and row: phones measured, median and mean |start error|
(ms), bias (mean signed error, ms; positive = late) and the share of phones within 20 and 40
ms; then, per phone class (stops, fricatives, nasals, vowels, approximants), the forced
alignment's median signed error, bias and share within 20 ms by the aligner and by CTC spikes.
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
# Festival only (no demo language): for the Italian and Czech voices.
FESTIVAL_SENTENCES = [
    ("it", "Mio cugino ha comprato una bicicletta verde."),
    ("it", "Quanto costa questa vecchia mappa?"),
    ("it", "Di solito ceniamo alle sette."),
    ("it", "Il fornaio vende pane fresco ogni mattina."),
    ("it", "Il cane dorme sotto il tavolo."),
    ("cs", "Můj bratranec si koupil zelené kolo."),
    ("cs", "Kolik stojí tahle stará mapa?"),
    ("cs", "Obvykle večeříme v sedm hodin."),
    ("cs", "Pekař prodává čerstvý chléb každé ráno."),
    ("cs", "Pes spí pod stolem."),
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
    p.add_argument("--festival-voices", nargs="*", default=None,
                   help="Festival voices for the Festival rows (default: every known voice that is installed; "
                        "none: espeak-ng rows only)")
    p.add_argument("--json", type=Path, help="also write the table and settings here")
    args = p.parse_args(argv)

    import torch

    import zipa
    from zipa.evaluation.timing import (class_stats, espeak_reference, festival_reference, forced_pairs, free_pairs,
                                        phone_class, timing_stats)
    from zipa.model.aligner import aligner_path_for, read_aligner_info
    from zipa.text import festival

    torch.set_num_threads(args.threads)
    sentences = read_sentences(args.sentences) if args.sentences else SENTENCES
    if args.num is not None:
        sentences = sentences[: args.num]
    model = zipa.load_model(args.model, device=args.device, aligner=None if args.aligner == "none" else args.aligner)
    aligner = model.aligner
    trained_on = set()  # the Festival voices the aligner was trained on (from its stored settings)
    if aligner is not None:
        path = Path(args.aligner) if args.aligner != "auto" else aligner_path_for(Path(args.model))
        if path.is_file():
            trained_on = set(read_aligner_info(path).get("settings", {}).get("festival_voices", []))
    names = [v for v in (args.festival_voices if args.festival_voices is not None else festival.installed_voices())
             if v != "none"]

    def group(voice: str) -> str:
        if voice in trained_on:
            return "festival (trained)"
        return "festival (allowed, never trained)" if festival.voice(voice).allowed else "festival (HELD OUT)"

    rng = random.Random(args.seed)
    utterances = []  # (group, voice, TimedUtterance)
    for variant in args.voices:
        for language, text in sentences:
            voice = f"{language}+{variant}" if variant else language
            prosody = {} if args.default_prosody else dict(
                rate=rng.randint(*RATE), pitch=rng.randint(*PITCH), pitch_range=rng.randint(*PITCH_RANGE)
            )
            utterances.append(("espeak-ng", voice, espeak_reference(text, voice, seed=rng.randrange(2**31), **prosody)))
    for name in names:
        language = festival.voice(name).language
        texts = [t for code, t in sentences + FESTIVAL_SENTENCES if code == language]
        utterances += [(group(name), name, festival_reference(speech)) for speech in festival.synthesize(texts, name)]

    rows = ["free (CTC)", "forced (CTC)"] + (["forced (aligner)", "free refined (aligner)"] if aligner else [])
    pairs = {}  # (group, row) -> [(label, error)]
    counts = {}  # group -> [utterances, reference phones, timed phones, voices]
    t0 = time.time()
    for name, voice, utt in utterances:
        c = counts.setdefault(name, [0, 0, 0, set()])
        c[0] += 1
        c[1] += len(utt.phones)
        c[2] += sum(r.start is not None for r in utt.phones)
        c[3].add(voice if name != "espeak-ng" else voice.partition("+")[2] or "default")
        for timing in [None, aligner] if aligner is not None else [None]:
            model.aligner = timing
            kind = "CTC" if timing is None else "aligner"
            (free,) = model.timestamps([utt.samples], sampling_rate=utt.sample_rate)
            pairs.setdefault((name, "free (CTC)" if timing is None else "free refined (aligner)"), []).extend(
                free_pairs(utt.phones, free.phones))
            (forced,) = model.align([utt.samples], utt.transcript, sampling_rate=utt.sample_rate)
            pairs.setdefault((name, f"forced ({kind})"), []).extend(forced_pairs(utt.phones, forced.phones))
    model.aligner = aligner
    aligner_name = "none" if aligner is None else "beside the model" if args.aligner == "auto" else args.aligner
    print("command: python benchmarks/timestamps.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"aligner {aligner_name}; trained on Festival voices: {' '.join(sorted(trained_on)) or 'none'}; "
          f"{time.time() - t0:.0f} s")
    for name, (n_utts, total, timed, voices) in counts.items():
        print(f"{name}: {n_utts} utterances, voices {' '.join(sorted(voices))}; reference phones {total}, "
              f"with a known start {timed}")
    header = ["", "phones", "median_ms", "mean_ms", "bias_ms", "within_20ms_%", "within_40ms_%"]
    print("\t".join(["synthesiser"] + header))
    table = {}
    for name in counts:
        for row in rows:
            errors = [e for _, e in pairs.get((name, row), [])]
            if errors:
                table[f"{name} | {row}"] = timing_stats(errors).row()
                print("\t".join([name, row] + [str(table[f"{name} | {row}"][h]) for h in header[1:]]))
    print("\nper phone class, forced alignment: median signed error (ms) / bias (ms) / within 20 ms (%), "
          "aligner | CTC spikes")
    classes = {}
    for name in counts:
        for row in [r for r in rows if r.startswith("forced")]:
            labelled = pairs.get((name, row), [])
            stats = class_stats([label for label, _ in labelled], [e for _, e in labelled])
            for cls, st in stats.items():
                signed = sorted(e for label, e in labelled if phone_class(label) == cls)
                classes.setdefault(name, {}).setdefault(cls, {})[row] = {
                    "phones": st.n, "median_signed_ms": round(1000 * statistics.median(signed), 1),
                    "bias_ms": round(1000 * st.bias, 1), "within_20ms_%": round(100 * st.within_20, 1)}
    for name, per_class in classes.items():
        for cls, by_row in sorted(per_class.items()):
            cells = [f"{r['phones']} ph: {r['median_signed_ms']:+.1f} / {r['bias_ms']:+.1f} / {r['within_20ms_%']:.1f}"
                     for r in (by_row.get("forced (aligner)"), by_row.get("forced (CTC)")) if r]
            print(f"{name}\t{cls}\t" + "\t| ".join(cells))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "groups": {n: {"utterances": c[0], "reference_phones": c[1],
                                                        "timed_phones": c[2], "voices": sorted(c[3])}
                                                    for n, c in counts.items()},
                                         "results": table, "per_class": classes},
                                        ensure_ascii=False, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
