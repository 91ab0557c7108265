# examples/lora.py: one seed without and with the demo adapter (see "Try it on the demo model")
#   -> outputs/lora-off.png, outputs/lora-demo.png, outputs/lora-demo-x2.png
import base64
import os
from pathlib import Path

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("FLUX2_URL", "http://127.0.0.1:8000") + "/v1", api_key="unused")
Path("outputs").mkdir(exist_ok=True)

for name, model, lora in (
    ("lora-off", "flux2", []),
    ("lora-demo", "flux2/demo", []),  # an adapter is a model to the OpenAI API
    ("lora-demo-x2", "flux2", [{"name": "demo", "scale": 2.0}]),  # or named in `lora`, with a strength
):
    image = client.images.generate(
        model=model, prompt="a red fox in snow", size="512x512", extra_body={"seed": 7, "lora": lora}
    )
    Path(f"outputs/{name}.png").write_bytes(base64.b64decode(image.data[0].b64_json))
