#!/usr/bin/env bash
# The default neural rows of the session data sets and the Taobao sample on one GPU, where a
# CPU run takes up to 40 minutes an epoch: three campaigns at once, a few processes each
# (one CPU thread each), 32-bit so that the rows compare with the CPU rows of other sets.
#
#   BENCH_DATA_DIR=../shared/data benchmarks/campaigns/gpu_campaign.sh OUT [SECONDS]
#
# Runs the published campaign holds (leaderboards/campaign) are skipped, so a later GPU
# session goes on where the last one stopped. Runs end after SECONDS (default 420): an
# unfinished run keeps its checkpoint in $GPU_WORK/runs and continues when the script runs
# again on the same machine. The finished run folders of this call,
# without checkpoints, are packed into OUT/runs.tar.gz; bring them into a campaign's store
# with `python -m benchmarks.campaigns.campaign --adopt DIR --runs-dir ... --results ...`.
# Settings are those of the CPU campaign (leaderboards/README.md); ACCELERATOR=cpu and
# PARALLEL=1 try the script on a machine without a GPU.
set -u
OUT=${1:?usage: gpu_campaign.sh OUT [SECONDS]}
LIMIT=${2:-420}
WORK=${GPU_WORK:-/tmp/gpu_campaign}
PARALLEL=${PARALLEL:-5}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd) WORK=$(cd "$WORK" && pwd)
cd "$(dirname "$0")/../.." || exit 1  # the repository: python -m and the published store
export WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
SEQUENCE=gru4rec,narm,sasrec,lstm,bert4rec  # whole-window training: cheap per epoch
PREFIX=stamp,srgnn,gcsan,gnn_lstm
COMMON=(--seeds 0,1,2 --training sequences --batch-size 256 --lr 0.002 --parallel "$PARALLEL"
  --accelerator "${ACCELERATOR:-gpu}" --precision 32-true --results "$WORK/store.db"
  --runs-dir "$WORK/runs" --cache-dir "$WORK/cache" --leaderboards "$WORK/boards")

# the store starts with every row published so far: those runs are skipped
"$PYTHON" -m benchmarks.campaigns.campaign_archive unpack --archive leaderboards/campaign \
  --results "$WORK/store.db" --runs-dir "$WORK/published" >/dev/null || exit 1

campaign() {  # data set, log name, then its own options
  local dataset=$1 log=$2
  shift 2
  timeout -k 30 -s TERM "$LIMIT" "$PYTHON" -m benchmarks.campaigns.campaign \
    --datasets "$dataset" --models "$SEQUENCE,$PREFIX" "${COMMON[@]}" "$@" \
    >"$OUT/$log.log" 2>"$OUT/$log.err" &
}

# the session sets' first calls capped runs at 10 epochs, and most ended there still
# improving (best checkpoint at epoch 9 or 10): a cap of 30 lets early stopping end them
campaign diginetica-dynamicrec digi --max-epochs 30 --patience 3
campaign yoochoose-dynamicrec yoo --max-epochs 30 --patience 3
campaign taobao taobao --max-epochs 40 --patience 3 --protocol-set min_item_support=1

# a broken setup fails every run at once: then stop early rather than wait out the limit
for _ in $(seq 1 $((LIMIT / 5))); do
  sleep 5
  jobs -r | grep -q . || break
  failed=$(cat "$OUT"/*.log | grep -c '^FAILED')
  finished=$(cat "$OUT"/*.log | grep -c 'seed [0-9]*: hr@10')
  if [ "$failed" -ge 3 ] && [ "$finished" -eq 0 ]; then
    echo "every run so far failed: stopping" >&2
    kill -TERM $(jobs -p) 2>/dev/null
    break
  fi
done
wait

cd "$WORK/runs" 2>/dev/null || exit 1
mapfile -t done < <(for d in */; do [ -f "$d/result.json" ] && echo "${d%/}"; done)
echo "${#done[@]} finished runs"
[ "${#done[@]}" -gt 0 ] && tar czf "$OUT/runs.tar.gz" --exclude=checkpoints "${done[@]}"
cat "$OUT"/*.log
