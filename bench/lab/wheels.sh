#!/usr/bin/env bash
# Packs what the offline GPU machine lacks into .site/site.tar.xz (git-ignored), for Python 3.12 x86-64.
# Its image has torch, transformers, numpy, pillow, grpcio...; Ray Serve (and watchfiles, which its CLI imports),
# diffusers and FlashAttention-3 travel. As wheels (.whl/, deflate) they are 89 MB, over the 64 MiB a call
# carries; unpacked and xz-packed, 52 MB. bench/lab/batch.sh unpacks it on the GPU machine into /tmp/site (what pip --target would install).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl

version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }

packages=(
  ray diffusers peft importlib-metadata watchfiles
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

# FlashAttention-3 (attention_backend fa3 / fa3_fp8, preset fast; tagged manylinux_2_24)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_24_x86_64 -d .whl fa3-fwd==0.0.3

site=$(mktemp -d)
for wheel in .whl/*.whl; do unzip -q -o "$wheel" -d "$site"; done
rm -rf "$site"/ray/jars  # Java workers, unused
mkdir -p .site
tar -C "$site" -cf - . | xz -T0 -6 >.site/site.tar.xz
rm -rf "$site"
du -sh .site/site.tar.xz
