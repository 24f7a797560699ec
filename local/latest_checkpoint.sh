#!/usr/bin/env bash
# Print N of the newest checkpoint-N.pt in an experiment folder, or 0 when there is none.
#
#   START_BATCH=$(local/latest_checkpoint.sh exp/crctc)
#   python zipformer_crctc/train.py --exp-dir exp/crctc --start-batch "$START_BATCH" ...
#
# --start-batch 0 starts afresh, so the same command line serves the first run and every
# resumed one (e.g. a SLURM job requeued after pre-emption). Checkpoints are written atomically,
# so the newest one is complete. Needs only bash (runs on a login node, or in the container as
# /opt/zipa/local/latest_checkpoint.sh).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 EXP_DIR" >&2
    exit 2
fi
exp_dir=$1
if [ ! -d "$exp_dir" ]; then
    echo 0  # no experiment folder yet: a fresh start
    exit 0
fi

newest=0
for path in "$exp_dir"/checkpoint-*.pt; do
    name=${path##*/checkpoint-}
    n=${name%.pt}
    if [[ "$n" =~ ^[0-9]+$ ]] && (( 10#$n > newest )); then
        newest=$((10#$n))
    fi
done
echo "$newest"
