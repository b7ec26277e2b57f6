#!/usr/bin/env bash
# Every GPU check and timing in one call, for a session with a lent GPU (estimated 7-8 minutes on an H200 without step 4, none of it run yet):
#   bash benchmarks/gpu_session.sh            # JSON and logs under $OUT (default: ./gpu_session_out)
# 1. the CUDA-graph tests (fit's captured step, the attacks' graphed forward) where pytest is installed;
# 2. bench_gpu.py: the check row, fit / fit eager, the training modes, packing, the projection (6 min cap);
# 3. bench_attacks.py: graph vs eager check, seconds per attack step, the attack-training projection;
# 4. bench_references.py: seconds per reference model (train, prune + fine-tune, phi) and per LiRA / RMIA
#    attack on the lira preset's cell at 4 epochs (issue 14; not yet run on a GPU, its time unknown);
# 5. bench_packing.py: the quick preset at 5 epochs with --gpus-per-trial 1, 0.5, 0.25: cells per hour,
#    GPU utilisation and each cell's peak memory, i.e. how many trials per GPU pay off (no run starts
#    after 240 s; not yet run on a GPU).
# Each step runs even if an earlier one failed; the exit status is the first failure's.
set -u
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/gpu_session_out}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
run() {  # run NAME COMMAND...: output to $OUT/NAME.log and the terminal
  echo "== $1: ${*:2}"
  "${@:2}" 2>&1 | tee "$OUT/$1.log"
  local rc=${PIPESTATUS[0]}
  echo "== $1: exit $rc"
  [ "$status" -ne 0 ] || status=$rc
}
python -c "import torch" || { echo "torch does not import: fix the environment first"; exit 1; }
if ! python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device: nothing to do (the CPU numbers come from each benchmark run alone)"; exit 0
fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
if python -c "import pytest" 2>/dev/null; then
  run tests python -m pytest -q -rs tests/test_train.py tests/test_attacks.py -k "captured or graphed"
else
  echo "== tests: pytest not installed, skipped (bench_gpu's check row compares fit with and without its graph;"
  echo "   bench_attacks' check compares accuracies and input integrity, not weights like the test)"
fi
run bench_gpu python benchmarks/bench_gpu.py --deadline 360  # the device tool allows 600 s per call
run bench_attacks python benchmarks/bench_attacks.py
run bench_references python benchmarks/bench_references.py --device cuda --max-epochs 4  # 13 models, 4 + 2 epochs each
run bench_packing python benchmarks/bench_packing.py --deadline 240
exit "$status"
