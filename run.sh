#!/usr/bin/env bash
# The main job on the embedded demo corpus, end to end on a CPU in about 20 minutes:
#
#   stage 0: ./prepare.sh: espeak-ng speech in 8 training languages + 1 held out, as lhotse shar
#   stage 1: train a small (7.6M-parameter) Zipformer CTC model, time-boxed to $train_minutes
#   stage 2: average the last epochs into $exp_dir/averaged.pth (loadable by zipa_ctc_inference)
#   stage 3: decode dev, test and the held-out language: recogs/errs/metrics + a PER/PFER table
#   stage 4: transcribe a few test files with zipa_ctc_inference.py
#   stage 5: encoder speed of the released small and large architectures (benchmarks/encoder.py)
#
# Usage: ./run.sh [--stage N] [--stop-stage M] [--train-minutes 15] [--num-epochs 4] ...
# Train longer: ./run.sh --train-minutes 60 --num-epochs 15. Everything goes under $exp_dir.
# Re-running skips finished stages' work (training resumes from its last epoch checkpoint).

set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=5
demo_dir=data/demo
exp_dir=exp/demo_ctc
train_minutes=15
num_epochs=4
avg=2
device=cpu
num_workers=1

. local/parse_options.sh

source local/setup_env.sh   # sets $PY (the project's virtual environment)

log() {
    echo "$(date '+%Y-%m-%d %H:%M:%S') (run.sh) $*"
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    log "Stage 0: data"
    ./prepare.sh --demo-dir "$demo_dir"
fi

last_epoch() {  # the highest N of $exp_dir/epoch-N.pt, or nothing
    local f n=""
    for f in "$exp_dir"/epoch-*.pt; do
        [ -e "$f" ] || continue
        f=${f##*/epoch-}; f=${f%.pt}
        if [ -z "$n" ] || [ "$f" -gt "$n" ]; then n=$f; fi
    done
    echo "$n"
}

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    log "Stage 1: training (at most $train_minutes minutes, $num_epochs epochs) in $exp_dir"
    done_epochs=$(last_epoch)
    done_epochs=${done_epochs:-0}
    if [ "$done_epochs" -ge "$num_epochs" ]; then
        log "  $num_epochs epochs already trained, skipping"
    else
        # Settings tuned for a short CPU run on this corpus: the 7.6M-parameter demo preset (one
        # layer per stack), CTC only, batches of at most 16 s, and the model's warm-up schedules
        # (dropout, layer skipping, regularisers) advanced 10 counts per batch: --ref-duration
        # equal to --max-duration makes one batch count as one, --schedule-speedup multiplies.
        "$PY" zipformer_crctc/train.py \
            --preset demo --use-cr-ctc False --base-lr 0.035 --max-duration 16 \
            --ref-duration 16 --schedule-speedup 10 --num-epochs "$num_epochs" --start-epoch $((done_epochs + 1)) \
            --max-minutes "$train_minutes" --device "$device" --num-workers "$num_workers" \
            --train-shar-dirs "$demo_dir/train" --dev-shar-dirs "dev=$demo_dir/dev" \
            --exp-dir "$exp_dir" --valid-interval 100000 --save-every-n 200 --keep-last-k 3
    fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    epoch=$(last_epoch)
    if [ -n "$epoch" ]; then
        use_avg=$(( epoch > avg ? avg : epoch ))
        log "Stage 2: averaging epochs $((epoch - use_avg + 1))..$epoch -> $exp_dir/averaged.pth"
        selection=(--epoch "$epoch" --avg "$use_avg")
    else
        # A slow or busy machine may not finish one epoch inside --train-minutes: the time
        # limit's checkpoint-N.pt then stands in.
        iter=$(local/latest_checkpoint.sh "$exp_dir")
        if [ "$iter" -eq 0 ]; then
            echo "no checkpoint in $exp_dir: run stage 1 (training) first" >&2
            exit 1
        fi
        log "Stage 2: no epoch finished; checkpoint-$iter.pt -> $exp_dir/averaged.pth"
        selection=(--iter "$iter" --avg 1)
    fi
    "$PY" zipformer_crctc/generate_averaged_model.py --exp-dir "$exp_dir" "${selection[@]}" \
        --output "$exp_dir/averaged.pth"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    log "Stage 3: decoding dev, test and the held-out language"
    "$PY" zipformer_crctc/ctc_decode.py --model-path "$exp_dir/averaged.pth" \
        --decoding-method ctc-greedy-search --device "$device" --num-workers "$num_workers" \
        --max-duration 120 --res-dir "$exp_dir/ctc-greedy-search" \
        --test-shar-dirs "dev=$demo_dir/dev" "test=$demo_dir/test" "heldout=$demo_dir/heldout"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    log "Stage 4: transcribing test files with zipa_ctc_inference.py"
    wav_dir="$exp_dir/test_wavs"
    "$PY" local/export_wavs.py "$demo_dir/test" "$wav_dir" --num 4
    "$PY" zipa_ctc_inference.py --model "$exp_dir/averaged.pth" --device "$device" "$wav_dir"/*.wav
    log "  references: $wav_dir/references.tsv"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
    log "Stage 5: encoder speed of the released architectures"
    "$PY" benchmarks/encoder.py --device "$device" --batch-sizes 1
fi

log "Done."
