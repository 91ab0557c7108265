#!/usr/bin/env bash
# The measurements behind docs/benchmarks.md, one case per device call of the lent H200 machine (600 s at most
# a call: every --budget below keeps inside it). On that machine, from the repository root, with the packages of
# bench/lab/wheels.sh carried in .site/:
#   bash bench/lab/batch.sh CASE        (no CASE: the list)
# Each command writes its JSON under $OUT (docs/results/ holds the ones the page cites) and its log beside it.
set -uo pipefail

F=quantization=fp8                 # the engine's defaults (regional compile, compiled VAE and text encoder) + fp8
G=$F,device_jpeg=true              # klein's serving settings: JPEG encoded on the GPU too
T4='step_cache=taylorseer,step_cache_options={"cache_interval": 4, "disable_cache_before_step": 6}'
T3='step_cache=taylorseer,step_cache_options={"cache_interval": 3, "disable_cache_before_step": 6}'
NO_VAE_TE=compile_vae=false,compile_text_encoder=false

declare -A CASES=(
  [eager-vs-engine-klein4b]="plain diffusers eager vs the engine's defaults and fp8, klein-4B 1024², 4 steps"
  [eager-vs-engine-dev]="plain diffusers eager vs the engine's defaults and fp8, dev 1024², 8 steps"
  [engine-klein4b]="klein-4B: ceilings, floors, load from disk, plain/engine/fp8 steps, deviation, peak VRAM, VRAM policy"
  [engine-dev]="dev: as engine-klein4b, without the VRAM policy (the call's time)"
  [vram-policy-dev]="dev: what vram_policy: always costs"
  [compile-vae-te-klein4b]="klein-4B t2i by stage: the VAE and text encoder compiled or not, then fp8"
  [fp8-klein9b]="klein-9B t2i: regional compile alone vs the defaults + fp8"
  [step-cache-dev]="dev 50 steps t2i: bf16 regional compile alone, fp8, fp8 + TaylorSeer (interval 4 and 3)"
  [step-cache-dev-edit]="dev 50 steps edit: fp8 vs fp8 + TaylorSeer"
  [step-floor]="the regional step of klein-4B and dev against the burst and sustained floors"
  [step-variants-klein4b]="klein-4B's step, regional vs full compile, back to back, with its kernel split"
  [step-variants-dev]="dev's step, regional, eager and full compile, with its kernel split"
  [serve-klein4b]="klein-4B through Ray Serve, serving settings, PNG and JPEG"
  [serve-klein4b-sizes]="klein-4B through Ray Serve at 512² and 768², serving settings, PNG and JPEG"
  [serve-device-jpeg-klein4b]="JPEG on the CPU vs on the GPU, two models side by side"
  [serve-klein9b]="klein-9B through Ray Serve, klein-4B's serving settings"
  [serve-dev]="dev through Ray Serve, fp8, 8 steps"
  [ready-klein4b]="klein-4B replica ready time, cold vs warm compile cache"
  [ready-klein9b]="klein-9B replica ready time, cold vs warm compile cache"
  [ready-dev]="dev replica ready time, cold vs warm compile cache"
  [mixed-klein4b]="200 mixed back-to-back requests on klein-4B"
  [mixed-dev]="50 mixed back-to-back requests on dev"
  [adapters-klein4b]="klein-4B LoRA (rank 16 and 64): first load, switches, step ms, recompiles, bf16 and fp8"
  [eval-masks]="masked edits on random klein-4B and dev (docs/evaluation.md)"
  [ladder-klein4b]="klein-4B t2i and edit, 4 steps: plain eager, engine, fp8, preset fast, against both floors"
  [ladder-dev]="dev t2i, 50 steps: plain eager, engine, fp8, preset fast, + TaylorSeer, against both floors"
  [ladder-dev-edit]="dev edit 1 ref, 50 steps: fp8, preset fast, + TaylorSeer, against both floors"
  [serve-klein4b-preset]="klein-4B through Ray Serve with preset fast, plain diffusers timed first in the process"
  [soak-klein4b]="serve run of bench/lab/soak-klein4b.yaml, then python -m bench soak for what the call leaves (≤ 6 min)"
  [soak-klein4b-fast]="the same, one model (preset fast + LoRA) warmed for 1024² with 0-2 references, off-warm 512²"
  [serve-klein4b-fast]="serve-soak-klein4b in ~400 s: klein-4B preset fast warmed for 1024² t2i and 1 ref, no adapters, 90 s soak"
  [serve-soak-klein4b]="soak-klein4b-fast's server: cold start, latencies with the caches (bench serve --url), the soak, warm restart; bench vae beside the cold start"
)

if [[ -z ${1:-} || -z ${CASES[$1]:-} ]]; then
  echo "usage: bash bench/lab/batch.sh CASE" >&2
  for name in $(printf '%s\n' "${!CASES[@]}" | sort); do printf '  %-26s %s\n' "$name" "${CASES[$name]}" >&2; done
  exit 2
fi

mkdir -p /tmp/site && tar -C /tmp/site -xJf .site/site.tar.xz || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HOME=/tmp/hf
export OUT=${OUT:-/tmp/out}
LOGS=$OUT  # where the serve and soak helpers below write their logs
mkdir -p "$OUT"

run() {  # run <name> <suite> <options...>: python -m bench, logged, with how long it took
  local name=$1 start=$SECONDS
  shift
  python3 -m bench "$@" --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s"
  tail -n 4 "$OUT/$name.log"
}

PLAIN=compile=none,compile_vae=false,compile_text_encoder=false  # the diffusers pipeline call as is

ready() {  # whether the server on :8000 answers /readyz with 200
  python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/readyz', timeout=5)" 2>/dev/null
}

serve_up() {  # serve_up <config name> <log>: Ray with its metrics on :8080 (if not up), serve run of
  # bench/lab/<config>.yaml in a session of its own; prints the seconds to /readyz; SERVE holds its session id
  local name=$1 log=$2 start=$SECONDS
  ray_up || return 1
  setsid python3 -m ray.serve.scripts run -a auto "bench/lab/$name.yaml" >"$log" 2>&1 </dev/null &
  SERVE=$!
  until ready || ! kill -0 $SERVE 2>/dev/null || ((SECONDS > 540)); do sleep 1; done
  if ready; then echo "== $name ready in $((SECONDS - start)) s after serve run (at $SECONDS s)"; else
    echo "== $name not ready at $SECONDS s"; tail -n 20 "$log"; return 1; fi
}

ray_up() {
  python3 -m ray.scripts.scripts status >/dev/null 2>&1 && return 0
  python3 -m ray.scripts.scripts start --head --num-gpus 1 --metrics-export-port 8080 --include-dashboard false \
    --disable-usage-stats --system-config '{"metrics_report_interval_ms": 2000}' >>"$LOGS/ray.log" 2>&1
}

serve_down() {  # serve run's session (a background job ignores SIGINT), then the cluster, its Serve logs kept
  local tag=$1
  kill -TERM -- -$SERVE 2>/dev/null
  python3 -m ray.scripts.scripts stop --force >>"$LOGS/ray.log" 2>&1
  kill -KILL -- -$SERVE 2>/dev/null
  tar -C /tmp/ray/session_latest/logs -czf "$LOGS/ray-logs-$tag.tgz" serve
}

keep_logs() {  # every log so far in one file under $OUT (a call brings back 8 files at most)
  [[ $LOGS != "$OUT" ]] && tar -C "$LOGS" -czf "$OUT/logs.tgz" .
}

write_adapters() {
  python3 -m deployments.engine.synthetic.random_adapters /tmp/soak-loras --source random-klein-4b --names a,b \
    >"$LOGS/soak-adapters.log" 2>&1 || { echo "== adapters failed"; tail -n 5 "$LOGS/soak-adapters.log"; return 1; }
}

soak_traffic() {  # soak_traffic <name> <seconds> <soak options...>: the soak against the server on :8000
  local name=$1 duration=$2
  shift 2
  echo "== soak for $duration s from $SECONDS s"
  timeout $((duration + 90)) python3 -m bench soak --url http://127.0.0.1:8000 --duration "$duration" \
    --workers 4 --sizes 1024x1024 --max-n 4 --metrics-url http://127.0.0.1:8080/metrics --metrics-app flux2 "$@" \
    --json "$OUT/$name.json" >"$LOGS/$name.log" 2>&1
  echo "== $name: exit $? at $SECONDS s"
  tail -n 12 "$LOGS/$name.log"
}

served_cold() {  # served_cold <config>: bench vae beside serve run's cold start (compile-bound), then bench serve
  # --url on it with the caches and a photograph's references; logs in one tarball (a call brings back 8 files)
  local name=$1 vae
  LOGS=/tmp/lablogs && mkdir -p $LOGS
  python3 -m bench vae --size 1024 --repeats 30 --json "$OUT/vae.json" >"$LOGS/vae.log" 2>&1 &
  vae=$!
  serve_up "$name" "$LOGS/serve-cold.log" || { serve_down cold; keep_logs; return 1; }
  grep -h "model .* ready" "$LOGS/serve-cold.log" | tail -n 1 | cut -c1-900
  wait $vae
  echo "== vae: exit $?"
  tail -n 3 "$LOGS/vae.log"
  timeout 120 python3 -m bench serve --url http://127.0.0.1:8000 --models klein4b-fast --n 8 --steps 4 \
    --formats jpeg,png --caches --reference bench/assets/astronaut.jpg --json "$OUT/serve.json" >"$LOGS/serve.log" 2>&1
  echo "== serve: exit $? at $SECONDS s"
  grep -E "^(t2i|edit1|caches)" "$LOGS/serve.log" | cut -c1-220
  keep_logs
}

served_warm() {  # served_warm <config> <latest start s>: the cold server down, then the same config on the compile
  # cache it filled, if the call has the time
  serve_down cold
  keep_logs
  if ((SECONDS < $2)); then
    serve_up "$1" "$LOGS/serve-warm.log"
    grep -h "model .* ready" "$LOGS/serve-warm.log" | tail -n 1 | cut -c1-900
    serve_down warm
  fi
  keep_logs
  echo "== done at $SECONDS s"
}

soak() {  # soak <name> <off-warm sizes>: serve run of bench/lab/<name>.yaml, the soak for what the call leaves
  local name=$1 off_sizes=$2 end=585 duration
  write_adapters || return 1
  serve_up "$name" "$LOGS/soak-serve.log" || { serve_down "$name"; return 1; }
  duration=$((end - SECONDS - 60))  # what the drain, the counters' settling and the stop need after the traffic
  ((duration > 360)) && duration=360
  ((duration >= 60)) && soak_traffic "$name" $duration --burst 24 --off-sizes "$off_sizes" --adapters a,b
  serve_down "$name"
  echo "== stopped at $SECONDS s"
}

case $1 in
  ladder-klein4b)
    C=compile_cache_dir=/tmp/cck,compile=regional
    run ladder-klein4b options --source random-klein-4b --steps 4 --repeats 5 --floors \
      --shapes 1024x1024+0,1024x1024+1 --baseline $PLAIN --variant $C --variant $C,$F --variant $C,preset=fast
    ;;
  ladder-dev)
    C=compile_cache_dir=/tmp/ccd,compile=regional
    run ladder-dev options --source random-dev --steps 50 --repeats 2 --floors --shapes 1024x1024+0 \
      --baseline $PLAIN --variant $C --variant $C,$F --variant $C,preset=fast --variant "$C,preset=fast,$T4"
    ;;
  ladder-dev-edit)
    C=compile_cache_dir=/tmp/ccd,compile=regional
    run ladder-dev-edit options --source random-dev --steps 50 --repeats 2 --floors --shapes 1024x1024+1 \
      --baseline $C,$F --variant $C,preset=fast --variant "$C,preset=fast,$T4"
    ;;
  serve-soak-klein4b)  # #24 and #23 on one server: the VAE alone, the cold start, the served latencies with the
    # caches, the soak with adapters, then a restart on the warm compile cache
    write_adapters && served_cold soak-klein4b-fast || exit 1
    ((SECONDS < 400)) && soak_traffic soak-klein4b-fast $((440 - SECONDS)) --burst 24 --off-sizes 512x512 --adapters a,b
    served_warm soak-klein4b-fast 480
    ;;
  serve-klein4b-fast)  # serve-soak-klein4b in about 400 s: two warm shapes, no adapters, a 90 s soak at most
    served_cold serve-klein4b-fast || exit 1
    duration=$((320 - SECONDS))
    ((duration > 90)) && duration=90
    ((SECONDS < 260)) && soak_traffic soak $duration --burst 16 --mix two_refs=0 --settle 20
    served_warm serve-klein4b-fast 360
    ;;
  soak-klein4b) soak soak-klein4b 512x512,768x768 ;;
  soak-klein4b-fast) soak soak-klein4b-fast 512x512 ;;
  serve-klein4b-preset)
    run serve-klein4b-preset serve --source random-klein-4b --cache /tmp/cck --n 10 --steps 4 --formats png,jpeg \
      --option preset=fast,device_jpeg=true --plain
    ;;
  eager-vs-engine-klein4b)
    C=compile_cache_dir=/tmp/cck
    run options-eager-vs-engine-klein4b-t2i options --source random-klein-4b --steps 4 --repeats 5 \
      --baseline $C,compile=none --variant $C,compile=regional --variant $C,compile=regional,fuse_qkv=true \
      --variant $C,compile=regional,$F
    run options-eager-vs-engine-klein4b-edit options --source random-klein-4b --steps 4 --repeats 5 --references 1 \
      --baseline $C,compile=none --variant $C,compile=regional
    ;;
  eager-vs-engine-dev)
    C=compile_cache_dir=/tmp/ccd
    run options-eager-vs-engine-dev-t2i options --source random-dev --steps 8 --repeats 3 \
      --baseline $C,compile=none --variant $C,compile=regional --variant $C,compile=regional,$F
    run options-eager-vs-engine-dev-edit options --source random-dev --steps 8 --repeats 3 --references 1 \
      --baseline $C,compile=none --variant $C,compile=regional
    ;;
  engine-klein4b) run engine-klein4b engine klein4b --budget 580 ;;
  engine-dev) run engine-dev engine dev --budget 580 --skip vram ;;
  vram-policy-dev) run engine-vram-policy-dev engine dev --budget 580 --skip ceiling,floors,load,plain,engine,fp8 ;;
  compile-vae-te-klein4b)
    C=compile_cache_dir=/tmp/cck,compile=regional
    run options-klein4b-compile-vae-te options --source random-klein-4b --steps 4 --repeats 5 \
      --baseline $C,$NO_VAE_TE --variant $C,compile_text_encoder=false --variant $C --variant $C,$F
    ;;
  fp8-klein9b)
    C=compile_cache_dir=/tmp/cc9,compile=regional
    run options-klein9b-fp8 options --source random-klein-9b --steps 4 --repeats 5 --baseline $C,$NO_VAE_TE \
      --variant $C,$F
    ;;
  step-cache-dev)
    C=compile_cache_dir=/tmp/ccd
    run options-dev-50-steps-t2i options --source random-dev --steps 50 --repeats 2 --baseline $C,$NO_VAE_TE \
      --variant $C,$F --variant "$C,$F,$T4" --variant "$C,$F,$T3"
    ;;
  step-cache-dev-edit)
    C=compile_cache_dir=/tmp/ccd
    run options-dev-50-steps-edit options --source random-dev --steps 50 --repeats 2 --references 1 \
      --baseline $C,$F --variant "$C,$F,$T4"
    ;;
  step-floor)
    for model in klein-4b dev; do
      run "step-floor-${model/-/}" step --source random-$model --repeats 10 --budget 280 \
        --variant compile_cache_dir=/tmp/ccs,compile=regional
    done
    ;;
  step-variants-klein4b)
    run step-variants-klein4b step --source random-klein-4b --repeats 20 --budget 560 --variant-s 110 \
      --variant compile_cache_dir=/tmp/ccs,compile=regional --variant compile_cache_dir=/tmp/ccs,compile=full
    ;;
  step-variants-dev)
    run step-variants-dev step --source random-dev --repeats 8 --budget 560 --variant-s 100 \
      --variant compile_cache_dir=/tmp/ccs,compile=regional --variant compile=none \
      --variant compile_cache_dir=/tmp/ccs,compile=full
    ;;
  serve-klein4b)
    run serve-klein4b serve --source random-klein-4b --cache /tmp/cck --n 10 --steps 4 --formats png,jpeg --option "$G"
    ;;
  serve-klein4b-sizes)
    for side in 512 768; do
      run "serve-klein4b-$side" serve --source random-klein-4b --cache /tmp/cck --n 10 --steps 4 --size $side \
        --formats png,jpeg --option "$G"
    done
    ;;
  serve-device-jpeg-klein4b)
    run serve-klein4b-device-jpeg serve --source random-klein-4b --cache /tmp/cck --n 10 --steps 4 \
      --formats png,jpeg --option "$F" --variant device_jpeg=true
    ;;
  serve-klein9b)
    run serve-klein9b serve --source random-klein-9b --cache /tmp/cc9 --n 10 --steps 4 --formats png,jpeg --option "$G"
    ;;
  serve-dev)
    run serve-dev serve --source random-dev --cache /tmp/ccd --n 5 --steps 8 --formats png,jpeg --option "$F"
    ;;
  ready-klein4b) run ready-klein4b ready --source random-klein-4b --cache /tmp/ccr4 ;;
  ready-klein9b) run ready-klein9b ready --source random-klein-9b --cache /tmp/ccr9 ;;
  ready-dev) run ready-dev ready --source random-dev --cache /tmp/ccrd --steps 8 ;;
  mixed-klein4b)
    run mixed-klein4b mixed --source random-klein-4b --cache /tmp/ccm4 --requests 200 --steps 4 --budget 580 \
      --warmup 1024x1024+0,1024x1024+1,768x1344+0,512x512+0
    ;;
  mixed-dev) run mixed-dev mixed --source random-dev --cache /tmp/ccmd --requests 50 --steps 8 --budget 580 ;;
  adapters-klein4b)
    run adapters-klein4b adapters --source random-klein-4b --quantization fp8 --rank 16,64 --n 10 --budget 380 \
      --option compile_cache_dir=/tmp/cca,$NO_VAE_TE
    ;;
  eval-masks)  # eval writes a folder, not one JSON: its own command line
    for model in random-klein-4b random-dev; do
      python3 -m bench eval --model $model --out "$OUT/eval-$model" --steps 4 --size 1024 \
        --cases cat_to_dog,sign_text --without-masks --latent-stage --option compile=none >"$OUT/eval-$model.log" 2>&1
      echo "== eval-$model: exit $?"
    done
    ;;
esac
