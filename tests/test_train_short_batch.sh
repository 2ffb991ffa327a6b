#!/usr/bin/env bash
# A training run whose split leaves a short last batch trains to the end: 22 training windows
# at batch 14 give batches of 14 and 8, and the batch of 8 needs more LayerNorm-backward row
# parts than the batch of 14 (the scratch is sized for every batch up to the capacity).
#
#   tests/test_train_short_batch.sh MILMER_TRAIN MILMER_SYNTHETIC_SHARDS WORK_DIR
set -euo pipefail
train=$1
make_shards=$2
work=$3

rm -rf "$work"
mkdir -p "$work"
# 1 participant x 4 trials x 11 windows; 2 folds over trials: 2 training trials, 22 windows.
"$make_shards" --out "$work/shards" --participants 1 --trials 4 --windows 11 --frames 4 \
  --frame-size 32 --eeg-channels 8 --eeg-samples 64 --seed 1 >/dev/null

status=0
"$train" --preset tiny --data "$work/shards" --labels deap2-valence \
  --protocol subject-dependent --folds 2 --epochs 1 --batch 14 --seed 7 --threads 1 \
  --out "$work/run" >"$work/train.out" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  echo "training with a short last batch failed (exit $status)"
  cat "$work/train.out"
  exit 1
fi
grep -q "train 22 samples" "$work/train.out" || {
  echo "expected 22 training windows (batches of 14 and 8)"
  cat "$work/train.out"
  exit 1
}
[ -f "$work/run/checkpoint.safetensors" ] || { echo "no checkpoint written"; exit 1; }
echo "trained one epoch of 22 windows at batch 14 (a last batch of 8)"
