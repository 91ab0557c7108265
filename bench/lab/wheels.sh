#!/usr/bin/env bash
# Downloads the wheels the offline GPU machine lacks into .whl/ (git-ignored), for Python 3.12 x86-64.
# Its image has torch, transformers, numpy, pillow, grpcio...; Ray Serve and diffusers travel as wheels.
# The ray wheel is repacked without ray/jars (Java workers, unused) to fit the 64 MiB carry limit.
# bench/lab/batch.sh installs them on the GPU machine (pip install --no-index --no-deps --target /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl

version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }

packages=(
  ray diffusers peft importlib-metadata
  fastapi starlette uvicorn python-multipart annotated-doc
  pydantic pydantic-core annotated-types typing-inspection
  jsonschema jsonschema-specifications referencing rpds-py
  grpcio grpcio-reflection protobuf googleapis-common-protos
  opencensus opencensus-context aiohttp-cors colorful
  opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions
  opentelemetry-exporter-prometheus
)
pins=()
for name in "${packages[@]}"; do pins+=("$name==$(version "$name")"); done

python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"

# `wheels.sh fa3` adds FlashAttention-3 (attention_backend fa3 / fa3_fp8; tagged manylinux_2_24). With ray
# beside it the carry passes 64 MiB: the attention suite needs neither ray nor Serve, so carry a set without ray.
if [ "${1:-}" = fa3 ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_24_x86_64 -d .whl fa3-fwd==0.0.3
fi

ray_wheel=$(ls .whl/ray-*.whl)
zip -q -d "$ray_wheel" 'ray/jars/*' '*.map' >/dev/null || true  # no-op when already repacked
du -sh .whl
