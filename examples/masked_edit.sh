# examples/masked_edit.sh: change only the masked region (alpha 0 in the mask); pixels outside it stay exact -> outputs/dog.png
URL="${FLUX2_URL:-http://127.0.0.1:8000}"
mkdir -p outputs
curl -sS --fail-with-body "$URL/v1/images/edits" \
  -F model=flux2 -F prompt="a sleeping dog" -F seed=7 \
  -F image=@examples/cat.png -F mask=@examples/cat_mask.png \
  | python3 -c "import sys,json,base64; open('outputs/dog.png','wb').write(base64.b64decode(json.load(sys.stdin)['data'][0]['b64_json']))"
