#!/usr/bin/env bash
# The accuracy grid of docs/RESULTS.md ("Accuracy on unseen videos") on a machine with a CUDA GPU:
#   bash benchmarks/gpu_grid.sh DATA_DIR [OUT_DIR] [PARALLEL]
# Every lever of benchmarks/ablation.py against the defaults, for every loss, on three validation
# folds cut between video sequences, two seeds each: 4 losses x 12 recipes x 3 folds x 2 seeds,
# less jaccard-log for dice and focal = 276 runs of 20 epochs. A run at batch 8 and 128x128 leaves
# a large GPU mostly idle, so PARALLEL (default 16) processes share it, one per (loss, recipe).
# Finished runs in OUT_DIR are skipped, so the grid can be stopped and restarted. Ends with one
# table per loss (mean +- sd over folds x seeds: best epoch, last epoch, mean of the last 5).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: gpu_grid.sh DATA_DIR [OUT_DIR] [PARALLEL]}"
out="${2:-gpu-grid}"
parallel="${3:-16}"
recipes=(tuned wd05 droppath02 headdropout01 nnunet-aug copypaste cutmix deep-supervision jaccard-log no-skips
         zero-init batch-ratio)
mkdir -p "$out"
for loss in dice jaccard focal combined; do
    for recipe in "${recipes[@]}"; do
        # --jaccard-log changes only the Jaccard loss (alone or in combined): for dice and focal
        # it would train the defaults again
        if [ "$recipe" = jaccard-log ] && { [ "$loss" = dice ] || [ "$loss" = focal ]; }; then continue; fi
        while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do sleep 5; done
        OMP_NUM_THREADS=1 python3 benchmarks/ablation.py --data "$data" --recipes "$recipe" --folds 1,2,3 \
            --seeds 47,48 --loss "$loss" --out "$out/$loss" --device cuda --checkpoint-every 20 --keep best \
            > "$out/$loss-$recipe.log" 2>&1 &
    done
done
wait
for loss in dice jaccard focal combined; do
    python3 benchmarks/ablation.py --data "$data" --recipes "$(IFS=,; echo "${recipes[*]}")" --folds 1,2,3 \
        --seeds 47,48 --loss "$loss" --out "$out/$loss" --report-only
done
