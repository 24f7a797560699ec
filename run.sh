#!/usr/bin/env bash
# The main job on the embedded demo corpus, end to end on a 2-core CPU in about 15 minutes:
#
#   stage 0: ./prepare.sh: espeak-ng (and Festival, where installed) speech in 8 training languages
#            + 1 held out, as lhotse shar
#   stage 1: train a small (7.6M-parameter) Zipformer CTC model, time-boxed to $train_minutes
#   stage 2: average the last epochs into $exp_dir/averaged.pth (loadable by zipa_ctc_inference)
#   stage 3: decode dev, test and the held-out language (and the test sentences spoken by Festival's
#            allowed and held-out voices): recogs/errs/metrics + a PER/PFER table
#   stage 4: transcribe a few test files with zipa_ctc_inference.py
#   stage 5: encoder speed of the released small and large architectures (benchmarks/encoder.py)
#   stage 6: Italian, a language the model never heard, spoken by both synthesisers: its own corpus
#            ($adapt_dir: train, dev, 60 test sentences, and unlabeled speech larger than train),
#            and the model's zero-shot PER on it
#   stage 7: fine-tune the model on Italian (train.py --do-finetune, mixed with the original
#            training data) once per seed in $seeds, average, and print PER before and after
#   stage 8: per seed, pseudo-label the unlabeled Italian speech with that seed's fine-tuned model
#            (zipformer_crctc/pseudo_label.py, labels under --min-confidence dropped; kept/dropped
#            and the kept labels' PER printed), continue training on labelled + pseudo-labelled
#            Italian, and print PER before and after over the seeds (mean ± spread)
#   stage 9: the demo model's frame aligner (zipformer_crctc/train_aligner.py, written beside
#            it as averaged.aligner.pt), then how close its phone start times come to those
#            espeak-ng knows (benchmarks/timestamps.py)
#
# Usage: ./run.sh [--stage N] [--stop-stage M] [--train-minutes 15] [--num-epochs 6] ...
# Train longer: ./run.sh --train-minutes 60 --num-epochs 15. Everything goes under $exp_dir.
# Re-running skips finished stages' work (training resumes from its last epoch checkpoint).

set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=9
demo_dir=data/demo
exp_dir=exp/demo_ctc
train_minutes=15
num_epochs=6
avg=2
device=cpu
num_workers=1
adapt_lang=it          # stages 6-8 (de works too, espeak-ng only: Festival has no German voice)
adapt_dir=""            # default: data/demo_$adapt_lang
seeds="1 2 3"           # stages 7-8 run once per seed
finetune_epochs=3       # passes over the adaptation train split (stage 7)
ns_epochs=2             # passes over labelled + pseudo-labelled speech (stage 8)
min_confidence=0.8      # pseudo-labels whose mean token confidence is lower are dropped (stage 8)

. local/parse_options.sh
adapt_dir=${adapt_dir:-data/demo_$adapt_lang}

source local/setup_env.sh   # sets $PY (the project's virtual environment)

log() {
    echo "$(date '+%Y-%m-%d %H:%M:%S') (run.sh) $*"
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    log "Stage 0: data"
    ./prepare.sh --demo-dir "$demo_dir"
fi

last_epoch() {  # the highest N of DIR/epoch-N.pt (default DIR: $exp_dir), or nothing
    local f n=""
    for f in "${1:-$exp_dir}"/epoch-*.pt; do
        [ -e "$f" ] || continue
        f=${f##*/epoch-}; f=${f%.pt}
        if [ -z "$n" ] || [ "$f" -gt "$n" ]; then n=$f; fi
    done
    echo "$n"
}

decode() {  # decode MODEL into RES_DIR: decode MODEL RES_DIR name=shar_dir...
    local model=$1 res_dir=$2
    shift 2
    "$PY" zipformer_crctc/ctc_decode.py --model-path "$model" --decoding-method ctc-greedy-search \
        --device "$device" --num-workers "$num_workers" --max-duration 120 --res-dir "$res_dir" \
        --test-shar-dirs "$@"
}

# Fine-tuning and pseudo-labelling both continue from a model with the demo's training settings.
finetune() {  # finetune CKPT EXP_DIR EPOCHS SEED train-shar-dir...
    local ckpt=$1 dir=$2 epochs=$3 seed=$4
    shift 4
    local done_epochs
    done_epochs=$(last_epoch "$dir")
    if [ "${done_epochs:-0}" -ge "$epochs" ]; then
        log "  $epochs epochs already trained in $dir, skipping"
    else
        "$PY" zipformer_crctc/train.py --do-finetune True --finetune-ckpt "$ckpt" \
            --use-cr-ctc False --enable-spec-aug False --base-lr 0.01 --max-duration 16 --ref-duration 16 \
            --schedule-speedup 10 --num-epochs "$epochs" --start-epoch $(( ${done_epochs:-0} + 1 )) \
            --seed "$seed" --device "$device" --num-workers "$num_workers" --train-shar-dirs "$@" \
            --use-mux True --mux-shar-dirs "$demo_dir/train" --mux-weight 0.5 \
            --dev-shar-dirs "dev=$adapt_dir/dev" --exp-dir "$dir" --valid-interval 100000 \
            --save-every-n 200 --keep-last-k 2
    fi
    "$PY" zipformer_crctc/generate_averaged_model.py --exp-dir "$dir" --epoch "$epochs" --avg 1 \
        --use-averaged-model False --output "$dir/averaged.pth"
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
            --preset demo --use-ctc True --use-transducer False --use-cr-ctc False --enable-spec-aug False \
            --base-lr 0.035 --max-duration 16 \
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
        --use-averaged-model False --output "$exp_dir/averaged.pth"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    log "Stage 3: decoding dev, test and the held-out language (and Festival's test speech, when there is some)"
    festival_sets=()  # the test sentences spoken by Festival: allowed voices, held-out voices
    for split in test_festival test_festival_heldout; do
        if [ -d "$demo_dir/$split" ]; then festival_sets+=("${split//_/-}=$demo_dir/$split"); fi
    done
    decode "$exp_dir/averaged.pth" "$exp_dir/ctc-greedy-search" \
        "dev=$demo_dir/dev" "test=$demo_dir/test" "heldout=$demo_dir/heldout" "${festival_sets[@]}"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    log "Stage 4: transcribing test files with zipa_ctc_inference.py"
    wav_dir="$exp_dir/test_wavs"
    "$PY" local/export_wavs.py "$demo_dir/test" "$wav_dir" --num 4
    "$PY" zipa_ctc_inference.py --model "$exp_dir/averaged.pth" --device "$device" "$wav_dir"/*.wav
    log "  references: $wav_dir/references.tsv"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
    log "Stage 5: encoder speed of the released architectures (products on the kernels measured faster here)"
    "$PY" benchmarks/encoder.py --device "$device" --batch-sizes 1
fi

adapt_sets() {  # name=shar_dir of the adaptation corpus's test splits present
    local split
    for split in test test_festival test_festival_heldout; do
        if [ -d "$adapt_dir/$split" ]; then echo "${split//_/-}=$adapt_dir/$split"; fi
    done
}

set_names() {  # the names of adapt_sets, comma-separated
    adapt_sets | cut -d= -f1 | paste -sd, -
}

ft_dir() { echo "${exp_dir}_${adapt_lang}_s$1"; }     # stage 7's model for seed $1
ns_dir() { echo "${exp_dir}_${adapt_lang}_ns_s$1"; }  # stage 8's model for seed $1

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
    log "Stage 6: $adapt_lang corpus in $adapt_dir and the model's zero-shot PER on it"
    "$PY" local/make_demo_corpus.py --out-dir "$adapt_dir" --languages "$adapt_lang" --heldout "" \
        --num-dev 10 --num-test 60 --num-unlabeled 50 --seed 42 | tail -n 12
    mapfile -t sets < <(adapt_sets)
    decode "$exp_dir/averaged.pth" "$exp_dir/$adapt_lang" "${sets[@]}"
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
    mapfile -t sets < <(adapt_sets)
    after=() original=()
    for seed in $seeds; do
        dir=$(ft_dir "$seed")
        log "Stage 7: fine-tuning on $adapt_lang, seed $seed ($finetune_epochs epochs, half the batches from $demo_dir/train) in $dir"
        finetune "$exp_dir/averaged.pth" "$dir" "$finetune_epochs" "$seed" "$adapt_dir/train"
        decode "$dir/averaged.pth" "$dir/ctc-greedy-search" "${sets[@]}"
        decode "$dir/averaged.pth" "$dir/original-test" "test=$demo_dir/test"
        after+=("$dir/ctc-greedy-search") original+=("$dir/original-test")
    done
    log "  PER before (zero-shot) and after fine-tuning:"
    "$PY" local/seed_table.py --sets "$(set_names)" --before "$exp_dir/$adapt_lang" --after "${after[@]}"
    log "  what it costs the 8 training languages:"
    "$PY" local/seed_table.py --sets test --before "$exp_dir/ctc-greedy-search" --after "${original[@]}"
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
    mapfile -t sets < <(adapt_sets)
    before=() after=() quality=()
    for seed in $seeds; do
        teacher=$(ft_dir "$seed") student=$(ns_dir "$seed") pseudo="$adapt_dir/pseudo_s$seed"
        log "Stage 8: seed $seed: pseudo-labelling $adapt_dir/unlabeled with $teacher, then a noisy student in $student"
        "$PY" zipformer_crctc/pseudo_label.py --model-path "$teacher/averaged.pth" --device "$device" \
            --shar-dirs "$adapt_dir/unlabeled" --out-dir "$pseudo" --min-confidence "$min_confidence"
        "$PY" local/pseudo_label_quality.py "$pseudo" "$adapt_dir/unlabeled" --json "$pseudo.quality.json"
        finetune "$teacher/averaged.pth" "$student" "$ns_epochs" "$seed" "$adapt_dir/train" "$pseudo"
        decode "$student/averaged.pth" "$student/ctc-greedy-search" "${sets[@]}"
        before+=("$teacher/ctc-greedy-search") after+=("$student/ctc-greedy-search")
        quality+=("$pseudo.quality.json")
    done
    log "  PER before and after the noisy student:"
    "$PY" local/seed_table.py --sets "$(set_names)" --before "${before[@]}" --after "${after[@]}" \
        --pseudo-quality "${quality[@]}" --json "$exp_dir/noisy_student_$adapt_lang.json"
fi

if [ "$stage" -le 9 ] && [ "$stop_stage" -ge 9 ]; then
    log "Stage 9: frame aligner for $exp_dir/averaged.pth, and timestamp accuracy"
    "$PY" zipformer_crctc/train_aligner.py --model-path "$exp_dir/averaged.pth" --device "$device"
    "$PY" benchmarks/timestamps.py --model "$exp_dir/averaged.pth" --device "$device" \
        --json "$exp_dir/timestamps.json"
fi

log "Done."
