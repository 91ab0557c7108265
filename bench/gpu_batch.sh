#!/usr/bin/env bash
# One device call's batch of measurements (docs/benchmarks.md, "Third run"). On the GPU machine, from
# the repo root, with the wheels of bench/gpu_wheels.sh carried in .whl/:
#   bash bench/gpu_batch.sh klein|klein-serve|serve-modes|klein-mixed|dev
# Every benchmark writes its JSON under $OUT and its log to $OUT/<name>.log.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HOME=/tmp/hf
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
F=quantization=fp8,compile_vae=true,compile_text_encoder=true

step() {  # step <name> <command...>: run, log, and say how long it took
  local name=$1
  shift
  local start=$SECONDS
  "$@" >"$OUT/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s"
  tail -n 4 "$OUT/$name.log"
}

case ${1:-} in
  klein)
    step attention python3 -m bench.attention_backends --source random-klein-4b --json "$OUT/attention.json"
    for run in cold warm; do
      step "ready_$run" python3 -m bench.ready --source random-klein-4b --cache /tmp/ccr --json "$OUT/ready_$run.json"
    done
    ;;
  klein-serve)
    step jpeg_probe python3 -m bench.jpeg_probe --json "$OUT/jpeg_probe.json"
    step serve_klein python3 -m bench.serve_bench --source random-klein-4b --cache /tmp/cck --n 10 --steps 4 \
      --formats png,jpeg --option "$F" --variant device_jpeg=true --json "$OUT/serve_klein.json"
    # (max-autotune-no-cudagraphs was tried here too: autotuning the VAE's 1024² convolutions alone ran past
    # the 10-minute call limit)
    C=compile_cache_dir=/tmp/cck,compile=regional
    step compile_modes python3 -m bench.speed_options --source random-klein-4b --steps 4 --size 1024 --repeats 5 \
      --baseline $C --variant $C,compile_mode=reduce-overhead --json "$OUT/so_klein_compile_modes.json"
    ;;
  klein-mixed)
    step mixed_klein python3 -m bench.run_bench klein4b --budget 580 --mixed 200 --mixed-budget 470 \
      --skip ceiling,flops,build_save_load,ready_cold_warm,engine_e2e,vram_policy,fp8,serve
    ;;
  serve-modes)  # Ray Serve's throughput-optimized mode is process-wide: two runs, one after the other
    G=$F,device_jpeg=true
    step serve_klein_default python3 -m bench.serve_bench --source random-klein-4b --cache /tmp/cck --n 10 --steps 4 \
      --formats png,jpeg --option "$G" --json "$OUT/serve_klein_default.json"
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 step serve_klein_throughput python3 -m bench.serve_bench --source random-klein-4b \
      --cache /tmp/cck --n 10 --steps 4 --formats png,jpeg --option "$G" --json "$OUT/serve_klein_throughput.json"
    step serve_dev python3 -m bench.serve_bench --source random-dev --cache /tmp/ccd --n 5 --steps 8 \
      --formats png,jpeg --option "$F" --json "$OUT/serve_dev.json"
    ;;
  dev)
    step serve_dev python3 -m bench.serve_bench --source random-dev --cache /tmp/ccd --n 5 --steps 8 \
      --formats png,jpeg --option "$F" --json "$OUT/serve_dev.json"
    ;;
  *)
    echo "usage: bash bench/gpu_batch.sh klein|klein-serve|serve-modes|klein-mixed|dev" >&2
    exit 2
    ;;
esac
