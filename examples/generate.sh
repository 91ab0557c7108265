# examples/generate.sh: two images from text alone (image i uses seed + i) -> outputs/fox-0.png, outputs/fox-1.png
URL="${FLUX2_URL:-http://127.0.0.1:8000}"
mkdir -p outputs
curl -sS --fail-with-body "$URL/v1/images/generations" -H 'content-type: application/json' \
  -d '{"model": "flux2", "prompt": "a watercolor fox", "size": "512x384", "n": 2, "seed": 1}' \
  | python3 -c "
import sys, json, base64
for i, item in enumerate(json.load(sys.stdin)['data']):
    open(f'outputs/fox-{i}.png', 'wb').write(base64.b64decode(item['b64_json']))"
