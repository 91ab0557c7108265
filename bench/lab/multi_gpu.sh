#!/usr/bin/env bash
# The multi-GPU runs of docs/multi_gpu.md, none made yet (no machine with several GPUs was lent so far).
# On ONE host with 8 (or 2 or 4) GPUs, from the repository root:  OUT=/path/to/out bash bench/lab/multi_gpu.sh
# Each run writes $OUT/<name>.json and its log; a failed run does not stop the next one.
set -u
OUT=${OUT:-/tmp/out/multi_gpu}
mkdir -p "$OUT"
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
DEGREES=1,2,4,8; [ "$GPUS" -lt 8 ] && DEGREES=1,2,4; [ "$GPUS" -lt 4 ] && DEGREES=1,2
echo "GPUs: $GPUS  CP degrees: $DEGREES  out: $OUT"

run() {  # run <name> <suite> <options...>
  local name=$1
  shift
  python -m bench "$@" --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.log"
}

# Context-parallel latency, dev 1024² edit with 1 reference, 50 steps (targets: <= 0.55x on 2, <= 0.3x on 4):
# Ulysses over the default SDPA backend; one step only (the tightest bf16 comparison); ring over cuDNN attention;
# klein-4B, 4 steps, for the small-model end of the range.
run cp-latency-dev cp-latency --source random-dev --degrees "$DEGREES" --refs 1 --steps 50 --n 3
run cp-latency-dev-1step cp-latency --source random-dev --degrees "$DEGREES" --refs 1 --steps 1 --n 3
run cp-latency-dev-ring cp-latency --source random-dev --degrees "$DEGREES" --refs 1 --steps 50 --n 3 \
  --mode ring --attention-backend _native_cudnn
run cp-latency-klein4b cp-latency --source random-klein-4b --degrees "$DEGREES" --refs 1 --steps 4 --n 5

# Replica scaling: images/s at saturation with 1..N one-GPU replicas (target >= 0.9 N), p95 at 80% load,
# autoscaling 1 -> N; klein-4B 1024² t2i, 4 steps (fast requests stress the serving path most), then dev at
# 28 steps (~13 s a request, longer windows).
run replica-scaling-klein4b replica-scaling --source random-klein-4b --gpus "$GPUS" --duration 60 --ingress-replicas 4
run replica-scaling-dev replica-scaling --source random-dev --gpus "$GPUS" --steps 28 --duration 240 --skip-autoscaling
echo "done: $OUT"
