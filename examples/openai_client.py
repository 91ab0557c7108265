# examples/openai_client.py: the official openai client, unchanged -> outputs/client-edit.png, outputs/client-fox.png
import base64
import os
from pathlib import Path

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("FLUX2_URL", "http://127.0.0.1:8000") + "/v1", api_key="unused")
Path("outputs").mkdir(exist_ok=True)

edit = client.images.edit(
    model="flux2",
    image=[Path("examples/cat.png"), Path("examples/style.jpg")],
    prompt="the cat from image 1 in the style of image 2",
    size="512x512",
    extra_body={"seed": 42, "num_inference_steps": 8},
)
Path("outputs/client-edit.png").write_bytes(base64.b64decode(edit.data[0].b64_json))

generated = client.images.generate(model="flux2", prompt="a red fox in snow", size="512x512")
Path("outputs/client-fox.png").write_bytes(base64.b64decode(generated.data[0].b64_json))

for event in client.images.edit(
    model="flux2", image=Path("examples/cat.png"), prompt="a dog", stream=True, partial_images=2
):
    print(event.type)  # image_edit.progress a step (an extension), .partial_image twice, then .completed
