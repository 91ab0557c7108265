# examples/edit.sh: edit the cat with a second image as a style reference (no mask) -> outputs/edit.png
URL="${FLUX2_URL:-http://127.0.0.1:8000}"
mkdir -p outputs
curl -sS --fail-with-body "$URL/v1/images/edits" \
  -F model=flux2 -F prompt="the cat from image 1, painted in the style of image 2" -F size=512x512 -F seed=42 \
  -F "image[]=@examples/cat.png" -F "image[]=@examples/style.jpg" \
  | python3 -c "import sys,json,base64; open('outputs/edit.png','wb').write(base64.b64decode(json.load(sys.stdin)['data'][0]['b64_json']))"
