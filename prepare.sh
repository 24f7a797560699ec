#!/usr/bin/env bash
# Data preparation for the ZIPA recipes, in icefall's staged style.
#
#   stage 0: build the embedded demo corpus (espeak-ng speech, 8 languages + 1 held out; a quarter
#            of the English, Russian, Hindi and Finnish train renderings spoken by Festival where
#            it is installed, espeak-ng only otherwise) as lhotse shar in
#            $demo_dir/{train,dev,test,heldout,test_festival,test_festival_heldout}
#            (local/make_demo_corpus.py)
#   stage 1: phone counts and out-of-inventory symbols per language -> $demo_dir/text_stats.json
#            (local/text_stats.py)
#   stage 2: the IPA tokenizer in ipa_simplified/, generated only if missing
#            (local/make_tokenizer.py)
#
# Usage: ./prepare.sh [--stage N] [--stop-stage M] [--demo-dir DIR] [--nj J] [--seed S]
# Safe to re-run: every stage skips work whose output is complete.

set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
demo_dir=data/demo
nj=1   # processes for resampling + flac; 1 is fastest for the demo corpus here
seed=42

. local/parse_options.sh

source local/setup_env.sh   # sets $PY (the project's virtual environment)

log() {
    echo "$(date '+%Y-%m-%d %H:%M:%S') (prepare.sh) $*"
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    log "Stage 0: demo corpus in $demo_dir"
    # Leaves a finished corpus with the same settings alone and resumes an interrupted one.
    "$PY" local/make_demo_corpus.py --out-dir "$demo_dir" --seed "$seed" --num-jobs "$nj"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    log "Stage 1: text statistics of $demo_dir"
    stats="$demo_dir/text_stats.json"
    if [ -f "$stats" ] && [ "$stats" -nt "$demo_dir/demo_corpus.json" ]; then
        log "  $stats is up to date, skipping"
    else
        "$PY" local/text_stats.py "$demo_dir"/train "$demo_dir"/dev "$demo_dir"/test \
            "$demo_dir"/heldout --output-json "$stats"
    fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "Stage 2: tokenizer in ipa_simplified/"
    if [ -f ipa_simplified/unigram_127.model ] && [ -f ipa_simplified/tokens.txt ]; then
        log "  ipa_simplified/unigram_127.model exists, skipping"
    else
        "$PY" local/make_tokenizer.py
    fi
fi

log "Done."
