#!/usr/bin/env bash
# The README's "For phoneticians" pictures: an MFA-style corpus of espeak-ng speech aligned by
# `zipa align CORPUS --output-dir`, drawn by a headless Praat (Sound + TextGrid -> PNG), and another
# recording aligned through the Praat plugin's "align interval text" command. Needs praat, espeak-ng (espeakng_loader)
# and a model: ./docs/make_phonetician_pictures.sh MODEL (e.g. exp/demo_ctc/averaged.pth).
set -euo pipefail
model=$(realpath "$1")
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python - "$work" <<'PY'
import sys
from pathlib import Path

import soundfile as sf
from zipa.audio.load import resample
from zipa.text.espeak import synthesize

corpus = Path(sys.argv[1]) / "corpus"
for speaker, voice, utt, text in [("anna", "en-us", "fox", "The quick brown fox jumps over the lazy dog."),
                                  ("ben", "en-us+m3", "rain", "The rain in Spain stays mainly in the plain.")]:
    (corpus / speaker).mkdir(parents=True, exist_ok=True)
    samples, rate = synthesize(text, voice, seed=1)
    sf.write(corpus / speaker / f"{utt}.wav", resample(samples, rate, 16000), 16000)
    (corpus / speaker / f"{utt}.lab").write_text(text + "\n")
PY
python -m zipa align "$work/corpus" --model "$model" --lang en-us --output-dir "$work/aligned" -q
praat --run docs/images/draw_textgrid.praat "$work/corpus/anna/fox.wav" "$work/aligned/anna/fox.TextGrid" \
    "$PWD/docs/images/mfa_corpus_praat.png" zipa "" "" ""
praat --run docs/images/draw_textgrid.praat "$work/corpus/ben/rain.wav" "" "$PWD/docs/images/praat_plugin.png" \
    "python -m zipa" "$model" "The rain in Spain stays mainly in the plain." en-us
cat "$work/aligned/alignment_summary.csv"
