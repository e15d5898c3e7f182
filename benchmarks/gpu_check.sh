#!/usr/bin/env bash
# The whole GPU check in one command, for a machine with a CUDA GPU:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. installs the project (torch must already be a CUDA build),
# 2. runs the test suite,
# 3. runs the speed benchmark on cuda, eager and under torch.compile,
# 4. times a 20-epoch single-loss run (eager and --compile) and the 4-loss study on synthetic
#    data (the defaults: frames 1-428, no validation), then evaluates the study on 429-612,
# 5. runs predict.py over a synthetic video on the GPU (end-to-end frames/s).
# The accuracy grid over folds and levers is benchmarks/gpu_grid.sh.
# Every figure is printed; OUT_DIR (default gpu-check/) keeps the runs and the log.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"
mkdir -p "$out"
log="$out/gpu_check.log"
exec > >(tee "$log") 2>&1

python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
python3 -m pip install -q -e ".[test,video]" 2>/dev/null || python3 -m pip install -q --no-deps -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== tests"
python3 -m pytest -q -x -p no:cacheprovider || echo "TESTS FAILED"

echo "== benchmark (cuda)"
python3 benchmarks/bench.py --device cuda --steps 30 --warmup 10 --compile

echo "== one 20-epoch run (dice, synthetic data, cache warm-up first)"
python3 -m unet_scratch.synthetic "$out/synthetic" --count 612 >/dev/null
python3 train.py --data "$out/synthetic" --epochs 1 --out "$out/warmup" --name w --overwrite >/dev/null
start=$EPOCHREALTIME
python3 train.py --loss dice --data "$out/synthetic" --out "$out/runs" --name single-dice --overwrite
python3 -c "print(f'single 20-epoch run: {$EPOCHREALTIME - $start:.1f} s wall')"
start=$EPOCHREALTIME
python3 train.py --loss dice --data "$out/synthetic" --out "$out/runs" --name single-dice-compiled --compile --overwrite
python3 -c "print(f'single 20-epoch run, --compile: {$EPOCHREALTIME - $start:.1f} s wall')"

echo "== the 4-loss study (20 epochs each)"
start=$EPOCHREALTIME
python3 train.py --loss all --data "$out/synthetic" --out "$out/study" --overwrite
python3 -c "print(f'4-loss study: {$EPOCHREALTIME - $start:.1f} s wall')"
python3 evaluate.py --runs "$out/study" --data "$out/synthetic" --test-frames 429-612

echo "== predict.py on a synthetic 384x288 video (cuda, end to end)"
python3 -c "from unet_scratch.synthetic import write_video; write_video('$out/clip.mp4', 300)"
python3 predict.py --run "$out/study/dice" "$out/clip.mp4" --out "$out/video" --device cuda --batch-size 16 --overwrite | tail -1
