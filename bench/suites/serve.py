"""The same requests through Ray Serve over real HTTP: latency vs the engine time the replica reports.

Serving overhead = client-side HTTP latency - the engine's own time for the request (measured inside
the replica). The ingress's ``Server-Timing`` header splits it: ``parse`` (body, validation, reference
decoding), ``queue``, ``handle`` (Ray routing and transfers), ``encode`` (image encoding, base64, JSON);
what remains (``client``) is the proxy and the HTTP transfer until the client has the whole body.

    python -m bench serve --source <folder|random-klein-4b> --cache <dir> --json <out.json> \
        --formats png,jpeg --option quantization=fp8 --variant device_jpeg=true

``--variant`` serves a second copy of the model with those options beside the first (half a GPU each,
same random weights), times both in the same run, and reports how close each one's JPEG is to its
exact PNG (PSNR). ``--plain`` first times the same requests through the plain diffusers pipeline call, alone
and with the PNG saved, in the same process before Serve starts.

``--caches`` times what the exact caches save (issue 24), each model: a new prompt against the same prompt with a
new seed (the text encoder), and an edit with a new reference against a chained edit whose reference is the
previous PNG result (its decode) and against the same reference again (its decode, preprocessing and VAE encode).
``--reference`` makes the new references from a photograph (a corner changed a file) instead of noise.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.lib.cli import parse_overrides, suite_parser
from bench.lib.deviation import psnr
from bench.lib.device import cuda_ok, free_cuda, sync
from bench.lib.requests import decode_rgb, family_of_source, make_request, reference_images, run_plain
from bench.lib.timing import summary


def png(width: int, height: int, seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(reference_images(1, width, height, seed)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def reference_files(count: int, side: int, photo: Path | None = None) -> list[bytes]:
    """``count`` different side x side files, new to the server: noise PNGs, or ``photo`` as JPEG with its corner
    block changed a file (a photograph's decode cost)."""
    import numpy as np
    from PIL import Image

    salt = secrets.randbelow(2**31)
    if photo is None:
        return [png(side, side, salt + i) for i in range(count)]
    pixels = np.array(Image.open(photo).convert("RGB").resize((side, side), Image.Resampling.LANCZOS))
    files = []
    for i in range(count):
        # the file's number in black and white 8x8 blocks (JPEG's own): a changed pixel can quantise to the same file
        for bit in range(32):
            row, column = divmod(bit, side // 8)
            pixels[row * 8 : row * 8 + 8, column * 8 : column * 8 + 8] = 255 * ((salt + i) >> bit & 1)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        files.append(buffer.getvalue())
    return files


def server_timing(response: Any) -> dict[str, float]:
    """The ``Server-Timing`` header's stages, in seconds."""
    parts = (part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    return {key: float(value) / 1e3 for key, value in parts}


def first_image(body: dict) -> bytes:
    """The first image file of an Images API response body."""
    return base64.b64decode(body["data"][0]["b64_json"])


def series(call, output_format: str, n: int, result: dict) -> dict:
    """n timed requests (after one untimed) and the median of each part of their latency."""
    import numpy as np

    totals, parts, sizes, statuses = [], [], [], []
    for i in range(n + 1):
        start = time.perf_counter()
        response = call(i, output_format)  # the whole body has arrived when this returns
        elapsed = time.perf_counter() - start
        body = response.json()  # the client's own JSON parsing is not serving overhead
        statuses.append(response.status_code)
        if response.status_code != 200:
            result[f"{output_format}:error"] = response.text[:500]
            continue
        sizes.append(len(first_image(body)))
        if i == 0:
            continue  # first request of a shape: excluded from the figures
        stages = server_timing(response)
        stages["client"] = elapsed - float(response.headers["x-total-ms"]) / 1e3
        totals.append(elapsed)
        parts.append(stages)
    if not totals:
        return {"statuses": sorted(set(statuses))}
    overhead = [t - p["generate"] for t, p in zip(totals, parts, strict=True)]
    p50_ms = lambda values: round(float(np.median(values)) * 1e3, 1)  # noqa: E731
    return {
        "http_total_s": summary(totals),
        "engine_generate_s": summary([p["generate"] for p in parts]),
        "overhead_ms_p50": p50_ms(overhead),
        "overhead_ms_p95": round(float(np.percentile(overhead, 95)) * 1e3, 1),
        "overhead_fraction_p50": round(float(np.median(overhead)) / float(np.median(totals)), 4),
        "overhead_without_encode_ms_p50": p50_ms([o - p["encode"] for o, p in zip(overhead, parts, strict=True)]),
        "parts_ms_p50": {key: p50_ms([p[key] for p in parts]) for key in parts[0] if key != "generate"},
        "image_bytes_p50": int(np.median(sizes)),
        "statuses": sorted(set(statuses)),
    }


def cache_timings(http: Any, model: str, side: int, steps: int, n: int, photo: Path | None = None) -> dict:
    """Each case ``n`` times after one untimed request (which fills the caches it then hits): the p50 of the HTTP
    latency and of the ingress's ``parse`` and the engine's ``generate``, then what the caches save at the p50.

    The prompts are new to the server on every run, so ``t2i:new_prompt`` always runs the text encoder; every edit
    has one prompt, which the caches keep after its first request, so the edit cases differ in their reference only.
    A chained edit's reference is a PNG result, whose pixels the engine has not encoded: it saves the decode alone.
    """
    import numpy as np

    token, size = secrets.token_hex(4), f"{side}x{side}"
    fresh, again = reference_files(n + 1, side, photo), reference_files(1, side, photo)[0]

    def generation(prompt: str, seed: int) -> tuple[str, dict]:
        body = {"model": model, "prompt": prompt, "size": size, "seed": seed, "num_inference_steps": steps}
        return "/v1/images/generations", {"json": body}

    def edit(reference: bytes, seed: int) -> tuple[str, dict]:
        form = {"model": model, "prompt": f"make the car blue {token}", "size": size, "seed": seed}
        form["num_inference_steps"] = steps
        data = {key: str(value) for key, value in form.items()}  # multipart fields are strings
        return "/v1/images/edits", {"data": data, "files": {"image": ("reference", reference)}}

    cases: dict[str, Callable[[int, bytes | None], tuple[str, dict]]] = {
        "t2i:new_prompt": lambda i, _: generation(f"a photo of a red car {token} {i}", i),
        "t2i:same_prompt": lambda i, _: generation(f"a photo of a red car {token}", i),
        "edit:new_reference": lambda i, _: edit(fresh[i], i),
        "edit:chained": lambda i, last: edit(last or again, i),  # the previous result (at first a new file)
        "edit:same_reference": lambda i, _: edit(again, i),  # kept since the chained case's first request
    }
    out: dict[str, Any] = {}
    p50 = lambda values: round(float(np.median(values)) * 1e3, 1)  # noqa: E731
    for name, case in cases.items():
        totals, parse, generate, statuses, last = [], [], [], [], None
        for i in range(n + 1):
            path, request = case(i, last)  # files made and results decoded outside the timed span
            start = time.perf_counter()
            response = http.post(path, **request)
            elapsed = time.perf_counter() - start
            statuses.append(response.status_code)
            if response.status_code != 200:
                out[f"{name}:error"] = response.text[:500]
                break
            last = first_image(response.json())
            if i:
                stages = server_timing(response)
                totals.append(elapsed)
                parse.append(stages["parse"])
                generate.append(stages["generate"])
        out[name] = {
            "n": len(totals),
            "http_ms_p50": p50(totals) if totals else None,
            "statuses": sorted(set(statuses)),
        }
        if totals:
            out[name].update(parse_ms_p50=p50(parse), generate_ms_p50=p50(generate))
        print(f"caches {model} {name}", json.dumps(out[name]), flush=True)
    timed = {name: out[name]["http_ms_p50"] for name in cases}
    if all(timed.values()):
        out["same_prompt_saves_ms"] = round(timed["t2i:new_prompt"] - timed["t2i:same_prompt"], 1)
        out["chained_speedup"] = round(timed["edit:new_reference"] / timed["edit:chained"], 3)
        out["same_reference_speedup"] = round(timed["edit:new_reference"] / timed["edit:same_reference"], 3)
    return out


def plain_diffusers(source: str, side: int, steps: int, n: int) -> dict:
    """The same requests through the plain diffusers pipeline a user writes (eager bf16, PIL images out): the
    call alone, and the call plus saving the PNG, each ``n`` times after one untimed call."""
    import torch

    from deployments.engine.flux2_engine import FAMILY_DEFAULTS
    from deployments.engine.synthetic.random_weights import build_random_pipeline
    from deployments.engine.synthetic.tiny import TINY_BUILDERS

    family = family_of_source(source)
    if cuda_ok() and source not in TINY_BUILDERS:
        pipeline = build_random_pipeline(source, device="cuda", dtype=torch.bfloat16)
        what = "diffusers pipeline call, eager bf16, output_type pil"
    else:  # no GPU (or a tiny source): the family's tiny pipeline, float32 on the CPU, as the engine runs it there
        tiny = source if source in TINY_BUILDERS else f"tiny-{family}"
        pipeline = TINY_BUILDERS[tiny]()
        what = f"{tiny} diffusers pipeline call, float32 on the CPU, output_type pil"
    pipeline.set_progress_bar_config(disable=True)
    guidance = FAMILY_DEFAULTS[family][1]
    out: dict = {"what": what}
    for name, refs in (("t2i", 0), ("edit1", 1)):
        for label, save in (("call", False), ("call+png", True)):
            latencies = []
            for i in range(n + 1):
                sync()
                start = time.perf_counter()
                image = run_plain(pipeline, make_request(side, side, refs, steps, seed=i), steps, guidance, "pil")[0]
                if save:
                    image.save(io.BytesIO(), format="PNG")
                sync()
                if i:
                    latencies.append(time.perf_counter() - start)
            out[f"{name}:{label}"] = summary(latencies)
            print(f"plain {name}:{label}", json.dumps(out[f"{name}:{label}"]), flush=True)
    del pipeline
    free_cuda()
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("serve", __doc__)
    parser.add_argument("--source", help="the model to serve (required without --url)")
    parser.add_argument("--cache", help="compile cache folder (required without --url)")
    parser.add_argument("--url", help="time a server already running here instead (its models: --models)")
    parser.add_argument("--models", default=None, help="--url: model ids, comma-separated (default: the first)")
    parser.add_argument("--json", required=True)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--num-cpus", type=int, default=8)
    parser.add_argument("--gpu", type=int, default=1)
    parser.add_argument("--compile", default="regional")
    parser.add_argument("--formats", default="png", help="output formats to time, comma-separated")
    parser.add_argument("--option", action="append", default=[], help="ModelConfig overrides, key=value,...")
    parser.add_argument("--variant", default=None, help="a second model with these overrides, key=value,...")
    parser.add_argument("--plain", action="store_true", help="first time plain diffusers on the same requests")
    parser.add_argument("--caches", action="store_true", help="also time what the prompt and reference caches save")
    parser.add_argument("--reference", type=Path, default=None, help="references from this photograph, not noise")
    return parser


def service_config(args: argparse.Namespace) -> dict:
    """The served app: the model warmed for t2i and one-reference edits at ``--size``, and ``--variant``'s copy."""
    side = args.size
    model = {
        "name": "bench",
        "source": args.source,
        "compile": args.compile,
        "compile_cache_dir": args.cache,
        "warmup_shapes": [
            {"width": side, "height": side, "references": 0},
            {"width": side, "height": side, "references": 1},
        ],
        "default_size": [side, side],
    }
    for option in args.option:
        model.update(parse_overrides(option))
    gpus = (0.5 if args.variant else 1) if args.gpu else 0
    model["deployment_options"] = {"ray_actor_options": {"num_gpus": gpus, "num_cpus": 0.5}}
    models = [model]
    if args.variant:
        models.append({**model, "name": "variant", **parse_overrides(args.variant)})
    return {
        "models": models,
        "limits": {"max_side": 2048, "max_steps": 100},
        "ingress_options": {"max_ongoing_requests": 64},
    }


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.url and not (args.source and args.cache):
        parser.error("--source and --cache are required without --url")
    result: dict = {"source": args.source, "url": args.url, "steps": args.steps, "size": args.size}
    result.update(options=args.option, variant=args.variant)
    if args.url:
        measure(args.url, args.models.split(",") if args.models else None, args, result)
    else:
        serve_and_measure(args, result)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)


def serve_and_measure(args: argparse.Namespace, result: dict) -> None:
    """Plain diffusers first (``--plain``), then Ray Serve with the app, measured, then stopped."""
    import ray
    from ray import serve

    from deployments.app import build_app
    from deployments.engine.parallel import free_port

    service = service_config(args)
    if args.plain:  # before Serve holds the GPU: the baseline runs alone, in this process
        result["plain"] = plain_diffusers(args.source, args.size, args.steps, args.n)
    t0 = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, num_gpus=args.gpu, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    result["ray_start_s"] = round(time.perf_counter() - t0, 2)
    t1 = time.perf_counter()
    serve.run(build_app(service), name="flux2", route_prefix="/")
    result["serve_run_until_ready_s"] = round(time.perf_counter() - t1, 2)
    try:
        measure(f"http://127.0.0.1:{port}", [m["name"] for m in service["models"]], args, result)
    finally:
        serve.shutdown()
        ray.shutdown()


def measure(url: str, models: list[str] | None, args: argparse.Namespace, result: dict) -> None:
    """Each model's t2i and one-reference edit series in each format, the caches' cases (``--caches``), and how
    close its JPEG is to its PNG. Every series request is new to the caches: a prompt never sent before, a
    reference file never sent before, so the figures are those of a new request."""
    import httpx

    side, token = args.size, secrets.token_hex(4)
    with httpx.Client(base_url=url, timeout=600) as http:
        models = models or [http.get("/v1/models").json()["data"][0]["id"]]
        result["models"] = models
        files = len(models) * len(args.formats.split(",")) * (args.n + 1)
        references = iter(reference_files(files, side, args.reference))

        def fields(name: str, prompt: str, seed: int, output_format: str) -> dict:
            return {
                "model": name,
                "prompt": prompt,
                "size": f"{side}x{side}",
                "seed": seed,
                "num_inference_steps": args.steps,
                "output_format": output_format,
            }

        def t2i(seed: int, output_format: str, name: str, prompt: str | None = None) -> httpx.Response:
            prompt = prompt or f"a photo of a red car in front of a house at sunset {token} {output_format} {seed}"
            return http.post("/v1/images/generations", json=fields(name, prompt, seed, output_format))

        def edit(seed: int, output_format: str, name: str) -> httpx.Response:
            form = fields(name, f"make the car blue {token} {output_format} {seed}", seed, output_format)
            data = {key: str(value) for key, value in form.items()}  # multipart fields are strings
            return http.post("/v1/images/edits", data=data, files={"image": ("reference", next(references))})

        for model_name in models:
            prefix = "" if model_name == models[0] else f"{model_name} "
            for name, call in (("t2i", t2i), ("edit1", edit)):
                for output_format in args.formats.split(","):
                    key = f"{prefix}{name}:{output_format}"
                    timed = lambda i, fmt, call=call, model_name=model_name: call(i, fmt, model_name)  # noqa: E731
                    result[key] = series(timed, output_format, args.n, result)
                    print(key, json.dumps(result[key]), flush=True)

        for model_name in models if args.caches else []:
            caches = cache_timings(http, model_name, side, args.steps, args.n, args.reference)
            result[f"{model_name} caches"] = caches

        for model_name in models:  # JPEG vs the exact pixels of the same request
            prompt = f"a photo of a red car {token} fidelity"
            exact = decode_rgb(first_image(t2i(99, "png", model_name, prompt).json()))
            jpeg = t2i(99, "jpeg", model_name, prompt)
            jpeg_file = first_image(jpeg.json())
            result[f"{model_name} jpeg_fidelity"] = {
                "psnr_db_vs_png": round(psnr(exact, decode_rgb(jpeg_file)), 2),
                "jpeg_bytes": len(jpeg_file),
                "x_server_timing": jpeg.headers["server-timing"],
            }
            print(model_name, result[f"{model_name} jpeg_fidelity"], flush=True)
