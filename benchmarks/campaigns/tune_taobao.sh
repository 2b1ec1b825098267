#!/usr/bin/env bash
# Issue 12's tuned rows for the Taobao sample's neural models: each gets the budget its
# fitted models had (200 trials or 3,600 CPU s, then 3 seeds of the best trial) with the
# settings of Taobao's default rows (min_item_support 1, batch 256, patience 3, at most 40
# epochs, whole-window training where the model allows it). The whole-window models train
# at least 10 epochs, as their default rows needed to leave the starting plateau; the
# prefix-trained ones never sat on it and keep no minimum.
#
#   BENCH_DATA_DIR=../shared/data benchmarks/campaigns/tune_taobao.sh [sequence|prefix|both]
#
# One process of one torch thread per group ("both": two, for this machine's two cores),
# logging to runs/tune-taobao-<group>.log. Resumable: run it again and the studies go on in
# runs/tune-taobao.db, finished finals are skipped, and a run cut off by a session's end (a
# trial or a final) continues from its last checkpoint. Then `bench leaderboard`.
set -eu
GROUP=${1:-both}
cd "$(dirname "$0")/../.." || exit 1
export WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
BENCH=${BENCH:-bench}
mkdir -p runs

tune() {  # group, models, extra settings...
  local group=$1 models=$2
  shift 2
  "$BENCH" automl --dataset taobao --set protocol.min_item_support=1 --models "$models" \
    --trials 200 --cpu-seconds 3600 --patience-trials 20 --seeds 3 --max-epochs 40 \
    --pruner median --threads 1 --set batch_size=256 --set patience=3 \
    --set training=sequences --no-wandb --storage runs/tune-taobao.db \
    --results runs/cite.db --set runs_dir=runs/cite --out "runs/lb-tuned-taobao-$group" "$@" \
    >> "runs/tune-taobao-$group.log" 2>&1
}

sequence() { tune sequence gru4rec,lstm,bert4rec,sasrec,narm --set min_epochs=10; }
prefix() { tune prefix stamp,srgnn,gcsan,gnn_lstm; }

case $GROUP in
  sequence) sequence ;;
  prefix) prefix ;;
  both)
    sequence &
    prefix &
    wait
    ;;
  *)
    echo "usage: tune_taobao.sh [sequence|prefix|both], not '$GROUP'" >&2
    exit 2
    ;;
esac
