#!/usr/bin/env bash
# One device call's batch of measurements (docs/benchmarks.md). On the GPU machine, from the repo root,
# with the wheels of bench/gpu_wheels.sh carried in .whl/:
#   bash bench/gpu_batch.sh klein|klein-serve|serve-modes|klein-mixed|dev|step-klein|step-dev|step-floor|dev-mixed|dev-mixed-50|klein-serve-sizes|klein9b-serve|klein9b-ready|step-klein-full
# Every benchmark writes its JSON under $OUT and its log to $OUT/<name>.log.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HOME=/tmp/hf
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
F=quantization=fp8,compile_vae=true,compile_text_encoder=true
G=$F,device_jpeg=true  # klein's serving settings: JPEG encoded on the GPU too

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
    step serve_klein_default python3 -m bench.serve_bench --source random-klein-4b --cache /tmp/cck --n 10 --steps 4 \
      --formats png,jpeg --option "$G" --json "$OUT/serve_klein_default.json"
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 step serve_klein_throughput python3 -m bench.serve_bench --source random-klein-4b \
      --cache /tmp/cck --n 10 --steps 4 --formats png,jpeg --option "$G" --json "$OUT/serve_klein_throughput.json"
    step serve_dev python3 -m bench.serve_bench --source random-dev --cache /tmp/ccd --n 5 --steps 8 \
      --formats png,jpeg --option "$F" --json "$OUT/serve_dev.json"
    ;;
  step-klein)  # where a transformer step's time goes, per compile variant (bench/step_profile.py)
    # cheapest first: max-autotune runs long, and every finished variant is already in the JSON
    C=compile_cache_dir=/tmp/ccs,compile=regional
    step step-klein python3 -m bench.step_profile --source random-klein-4b --repeats 20 --budget 540 --variant-s 60 \
      --variant $C --variant compile=none --variant $C,inductor.coordinate_descent_tuning=true \
      --variant compile_cache_dir=/tmp/ccs,compile=full --variant $C,compile_mode=max-autotune-no-cudagraphs \
      --json "$OUT/step-klein.json"
    ;;
  step-dev)  # the same for dev (max-autotune left out: no gain on klein for 220 s of compiling), then klein's
    # whole transformer as one CUDA graph (reduce-overhead), the one lever on the idle time between its kernels
    step step-dev python3 -m bench.step_profile --source random-dev --repeats 8 --budget 330 --variant-s 100 \
      --variant compile_cache_dir=/tmp/ccs,compile=regional --variant compile=none \
      --variant compile_cache_dir=/tmp/ccs,compile=full --json "$OUT/step-dev.json"
    step step-klein-graphs python3 -m bench.step_profile --source random-klein-4b --repeats 20 --budget 150 \
      --variant compile_cache_dir=/tmp/ccs,compile=full,compile_mode=reduce-overhead --json "$OUT/step-klein-graphs.json"
    ;;
  step-floor)  # the engine's default (regional) step of both models beside the burst and sustained ceilings
    # (first run: a sync after every step; since then steps run back to back, as in a pipeline)
    for source in random-klein-4b random-dev; do
      step "floor-$source" python3 -m bench.step_profile --source $source --repeats 10 --budget 200 \
        --variant compile_cache_dir=/tmp/ccs,compile=regional --json "$OUT/floor-$source.json"
    done
    ;;
  dev-mixed)  # the matmul clock probe first (half a minute), then dev's 50 mixed requests
    step power_probe python3 -m bench.power_probe --json "$OUT/power_probe.json"
    step mixed_dev python3 -m bench.run_bench dev --budget 500 --mixed 50 --mixed-budget 400 \
      --skip ceiling,flops,build_save_load,engine_e2e,vram_policy,fp8,dev_50_steps
    ;;
  dev-mixed-50)  # the mixed run alone, with room for all 50 after a cold warm-up
    step mixed_dev python3 -m bench.run_bench dev --budget 580 --mixed 50 --mixed-budget 420 \
      --skip ceiling,flops,build_save_load,engine_e2e,vram_policy,fp8,dev_50_steps
    ;;
  klein9b-serve)  # klein-9B through Ray Serve, the klein-4B serving settings
    step serve_klein9b python3 -m bench.serve_bench --source random-klein-9b --cache /tmp/cc9 --n 10 --steps 4 \
      --formats png,jpeg --option "$G" --json "$OUT/serve_klein9b.json"
    ;;
  klein-serve-sizes)  # klein-4B's serving overhead against the payload: 512² and 768² (1024² is in klein-serve)
    for side in 512 768; do
      step "serve_klein_$side" python3 -m bench.serve_bench --source random-klein-4b --cache /tmp/cck --n 10 --steps 4 \
        --size $side --formats png,jpeg --option "$G" --json "$OUT/serve_klein_$side.json"
    done
    ;;
  klein9b-ready)  # klein-9B's replica ready time, cold vs warm compile cache
    for run in cold warm; do
      step "ready9_$run" python3 -m bench.ready --source random-klein-9b --cache /tmp/cc9r --json "$OUT/ready9_$run.json"
    done
    ;;
  step-klein-full)  # klein-4B's regional and full compile again, timed back to back as a pipeline runs steps
    step step-klein-full python3 -m bench.step_profile --source random-klein-4b --repeats 20 --budget 300 --variant-s 110 \
      --variant compile_cache_dir=/tmp/ccs,compile=regional --variant compile_cache_dir=/tmp/ccs,compile=full \
      --json "$OUT/step-klein-full.json"
    ;;
  dev)
    step serve_dev python3 -m bench.serve_bench --source random-dev --cache /tmp/ccd --n 5 --steps 8 \
      --formats png,jpeg --option "$F" --json "$OUT/serve_dev.json"
    ;;
  *)
    echo "usage: bash bench/gpu_batch.sh klein|klein-serve|serve-modes|klein-mixed|dev|step-klein|step-dev|step-floor|dev-mixed|dev-mixed-50|klein-serve-sizes|klein9b-serve|klein9b-ready|step-klein-full" >&2
    exit 2
    ;;
esac
