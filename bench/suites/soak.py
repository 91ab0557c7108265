"""A long run of mixed traffic against a running server (e.g. ``serve run`` of a config): was anything lost?

    python -m bench soak --url http://127.0.0.1:8000 --duration 360 --workers 4 --burst 24 \
        --sizes 1024x1024,512x512 --off-sizes 768x768 --adapters a,b \
        --metrics-url http://127.0.0.1:8080/metrics --json soak.json

``--workers`` clients send one request after another for ``--duration`` seconds, each from its own seeded random
mix (``--mix`` shares, see MIX): text-to-image (JSON) and edits (multipart, 1-2 references, some masked), warm
and off-warm sizes, n 1..``--max-n``, PNG and JPEG, LoRA stacks (the ``--adapters`` a model lists, named as
``<model>/<adapter>`` or in ``lora``), streams (some hung up after their first event; those ask for
``--drop-steps`` steps, so the hang-up lands mid-run). At ``--burst-at`` of the run ``--burst`` more requests
are sent at once, above capacity: 503 with Retry-After is an allowed answer there and everywhere.

Every request carries a seed, and every answer is checked: the status, the error shape {message, type, param,
code}, ``x-seed``, ``x-model``, ``x-mask-applied`` and ``x-lora``, ``n`` images (streams: n ``.completed``
events) each decoding in the asked format at the asked size. An answer is ``ok``, ``rejected`` (503 with
Retry-After), ``dropped`` (a stream this client hung up on), ``lost`` (no answer, a timeout, a stream that
ended short or with an error event), ``mismatched`` (an answer with wrong contents) or ``unexpected`` (any
other status: the requests are all valid). With ``--metrics-url`` the Prometheus scrape gives the compile
events and OOM recoveries during the run, the last request's peak VRAM and ``ray_flux2_images_out_total``'s
delta against the images received (streamed and not); the GPUs' used memory comes from nvidia-smi.

Exit status 1 when anything was lost, mismatched or answered an unexpected status.

The LoRA files a soak's server names can be made first, random, for a source's transformer (no GPU needed):

    python -m deployments.engine.synthetic.random_adapters /tmp/soak-loras --source random-klein-4b --names a,b
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import json
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.lib.cli import parse_overrides, parse_shapes, suite_parser
from bench.lib.requests import reference_images
from bench.lib.results import Results, log
from bench.lib.timing import pct

# Shares of the mix; --mix overrides them (edit: of all requests, mask and two_refs: of edits, off_warm: of
# requests when --off-sizes are given, stream: of requests, drop: of streams, lora: of requests to a model
# with adapters, jpeg: of requests).
MIX = {
    "edit": 0.5,
    "mask": 0.3,
    "two_refs": 0.3,
    "off_warm": 0.2,
    "stream": 0.2,
    "drop": 0.3,
    "lora": 0.5,
    "jpeg": 0.25,
}
PROMPTS = ("a red car in front of a house at sunset", "a watercolor fox in snow", "make it look like a night scene")
ERROR_KEYS = {"message", "type", "param", "code"}
FORMATS = {"png": "PNG", "jpeg": "JPEG"}
VERDICTS = ("ok", "rejected", "dropped", "lost", "mismatched", "unexpected")
FAILED = ("lost", "mismatched", "unexpected")
MAX_SEED = 2**62 - 64  # image i uses seed + i
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``1024x1024,512x512`` -> [(1024, 1024), (512, 512)]."""
    return [(width, height) for width, height, _ in parse_shapes(text)]


def build_parser() -> argparse.ArgumentParser:
    parser = suite_parser("soak", __doc__)
    parser.add_argument("--url", help="the server, e.g. http://127.0.0.1:8000 (required)")
    parser.add_argument("--json", help="the report: progress every --progress-s, all of it at the end (required)")
    parser.add_argument("--duration", type=float, default=360.0, help="seconds of traffic")
    parser.add_argument("--workers", type=int, default=4, help="clients sending back to back")
    parser.add_argument("--burst", type=int, default=16, help="requests sent at once (0: no burst)")
    parser.add_argument("--burst-at", type=float, default=0.5, help="when, as a fraction of --duration")
    parser.add_argument("--sizes", type=parse_sizes, default=[], help="warm sizes, WxH,... (required)")
    parser.add_argument("--off-sizes", type=parse_sizes, default=[], help="sizes outside the warm-up, WxH,...")
    parser.add_argument("--models", default=None, help="model ids, comma-separated (default: every one listed)")
    parser.add_argument("--adapters", default="", help="LoRA adapter names, comma-separated (default: none)")
    parser.add_argument("--max-n", type=int, default=4, help="images a request asks for: 1..this")
    parser.add_argument("--steps", type=int, default=None, help="num_inference_steps (default: the model's)")
    parser.add_argument("--drop-steps", type=int, default=20, help="num_inference_steps of the streams hung up on")
    parser.add_argument("--mix", type=parse_overrides, default={}, help=f"shares, key=value,... (of {MIX})")
    parser.add_argument("--seed", type=int, default=0, help="of the mix")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take before it is lost")
    parser.add_argument("--metrics-url", default=None, help="Prometheus scrape, e.g. http://127.0.0.1:8080/metrics")
    parser.add_argument("--metrics-app", default=None, help="only the series of this Serve application")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait for the counters to catch up")
    parser.add_argument("--progress-s", type=float, default=30.0, help="seconds between progress writes")
    return parser


# --- what is sent --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What a model's ``GET /v1/models`` card says that the mix needs."""

    name: str
    warm_shapes: frozenset[tuple[int, int, int]]
    adapters: tuple[str, ...]
    max_per_request: int


@dataclass(frozen=True)
class Plan:
    """One request of the mix."""

    route: str  # t2i | edit
    model: str  # the ``model`` field: a served id or <id>/<adapter>
    base: str  # the served id (x-model, the metrics' model tag)
    lora: tuple[tuple[str, float], ...]  # the ``lora`` field
    stack: tuple[str, ...]  # every adapter the request names
    width: int
    height: int
    off_warm: bool
    unwarmed_shape: bool
    n: int
    refs: int
    mask: bool
    stream: bool
    drop: bool
    partial_images: int
    output_format: str
    seed: int
    steps: int | None
    prompt: str

    @property
    def kind(self) -> str:
        """Latency and statuses are reported per kind: route, streamed or not; hung-up streams apart."""
        return "stream-drop" if self.drop else f"{self.route}-stream" if self.stream else self.route


class Mix:
    """Draws plans from a seeded generator: what each request is made of."""

    def __init__(self, args: argparse.Namespace, models: list[ModelInfo]):
        self.args = args
        self.models = models
        self.shares = {**MIX, **args.mix}

    def draw(self, rng: random.Random, allow_drop: bool = True) -> Plan:
        args, share = self.args, self.shares
        model = rng.choice(self.models)
        route = "edit" if rng.random() < share["edit"] else "t2i"
        off_warm = bool(args.off_sizes) and rng.random() < share["off_warm"]
        width, height = rng.choice(args.off_sizes if off_warm else args.sizes)
        refs = (2 if rng.random() < share["two_refs"] else 1) if route == "edit" else 0
        stream = rng.random() < share["stream"]
        drop = allow_drop and stream and rng.random() < share["drop"]
        stack = self.draw_stack(rng, model) if model.adapters and rng.random() < share["lora"] else ()
        by_name = len(stack) == 1 and rng.random() < 0.5  # model="<id>/<adapter>", no lora field
        return Plan(
            route=route,
            model=f"{model.name}/{stack[0][0]}" if by_name else model.name,
            base=model.name,
            lora=() if by_name else stack,
            stack=tuple(name for name, _ in stack),
            width=width,
            height=height,
            off_warm=off_warm,
            unwarmed_shape=(width, height, refs) not in model.warm_shapes,
            n=rng.randint(1, args.max_n),
            refs=refs,
            mask=route == "edit" and rng.random() < share["mask"],
            stream=stream,
            drop=drop,
            partial_images=rng.randint(0, 1) if stream and not drop else 0,
            output_format="jpeg" if rng.random() < share["jpeg"] else "png",
            seed=rng.randrange(MAX_SEED),
            steps=args.drop_steps if drop else args.steps,
            prompt=rng.choice(PROMPTS),
        )

    @staticmethod
    def draw_stack(rng: random.Random, model: ModelInfo) -> tuple[tuple[str, float], ...]:
        count = rng.randint(1, min(model.max_per_request, len(model.adapters)))
        return tuple((name, rng.choice((0.5, 0.8, 1.0))) for name in rng.sample(model.adapters, count))


@functools.lru_cache(maxsize=64)
def reference_png(width: int, height: int, index: int) -> bytes:
    """A blocky random reference image (compresses well, so bodies stay small at 1024²)."""
    buffer = io.BytesIO()
    Image.fromarray(reference_images(1, width, height, seed=index)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


@functools.lru_cache(maxsize=16)
def mask_png(width: int, height: int) -> bytes:
    """The first reference's size, alpha 0 (editable) in the middle half, 255 elsewhere."""
    alpha = np.full((height, width), 255, dtype=np.uint8)
    alpha[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 0
    pixels = np.dstack([np.zeros((height, width, 3), dtype=np.uint8), alpha])
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def fields(plan: Plan) -> dict[str, Any]:
    """The request's parameters, typed as JSON carries them."""
    body: dict[str, Any] = {
        "model": plan.model,
        "prompt": plan.prompt,
        "size": f"{plan.width}x{plan.height}",
        "n": plan.n,
        "seed": plan.seed,
        "output_format": plan.output_format,
    }
    if plan.steps is not None:
        body["num_inference_steps"] = plan.steps
    if plan.stream:
        body |= {"stream": True, "partial_images": plan.partial_images}
    return body


def request_kwargs(plan: Plan) -> dict[str, Any]:
    """``httpx`` arguments of the request: a JSON body, or a multipart form with its files."""
    lora = [{"name": name, "scale": scale} for name, scale in plan.lora]
    if plan.route == "t2i":
        return {"url": "/v1/images/generations", "json": fields(plan) | ({"lora": lora} if lora else {})}
    data: dict[str, Any] = {
        key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in fields(plan).items()
    }
    if lora:
        data |= {"lora[][name]": [a["name"] for a in lora], "lora[][scale]": [str(a["scale"]) for a in lora]}
    files = [
        ("image[]", (f"ref{i}.png", reference_png(plan.width, plan.height, i), "image/png")) for i in range(plan.refs)
    ]
    if plan.mask:
        files.append(("mask", ("mask.png", mask_png(plan.width, plan.height), "image/png")))
    return {"url": "/v1/images/edits", "data": data, "files": files}


# --- what comes back -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One request's answer, judged."""

    plan: Plan
    phase: str  # steady | burst
    started_s: float  # since the traffic started
    latency_s: float  # until the whole answer (a hung-up stream: its first event)
    status: int | None  # None: no answer
    verdict: str
    detail: str = ""
    images: int = 0  # images the answer delivered (len(data), or .completed events)

    def summary(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "kind": plan.kind,
            "phase": self.phase,
            "model": plan.model,
            "size": f"{plan.width}x{plan.height}",
            "n": plan.n,
            "refs": plan.refs,
            "mask": plan.mask,
            "lora": list(plan.stack),
            "seed": plan.seed,
            "started_s": round(self.started_s, 2),
            "status": self.status,
            "verdict": self.verdict,
            "detail": self.detail[:500],
        }


def image_problem(b64: Any, plan: Plan) -> str | None:
    """Why one ``b64_json`` is not an image of the asked format and size, or None."""
    try:
        image = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
        image.load()
    except Exception as exc:
        return f"image does not decode ({type(exc).__name__}: {exc})"
    if image.format != FORMATS[plan.output_format]:
        return f"{image.format} image, asked for {plan.output_format}"
    if image.size != (plan.width, plan.height):
        return f"image of {image.size[0]}x{image.size[1]}, asked for {plan.width}x{plan.height}"
    return None


def header_problems(headers: httpx.Headers, plan: Plan) -> list[str]:
    problems = []
    if headers.get("x-seed") != str(plan.seed):
        problems.append(f"x-seed {headers.get('x-seed')} for seed {plan.seed}")
    if headers.get("x-model") != plan.base:
        problems.append(f"x-model {headers.get('x-model')} for {plan.base}")
    stack = {part.split(":")[0] for part in headers.get("x-lora", "").split("+") if part}
    if stack != set(plan.stack):
        problems.append(f"x-lora {headers.get('x-lora')!r} for {sorted(plan.stack)}")
    if plan.mask and not plan.stream and headers.get("x-mask-applied") != "true":
        problems.append(f"x-mask-applied {headers.get('x-mask-applied')} for a masked edit")
    return problems


def error_problem(error: Any) -> str | None:
    """Why an error object is not {message, type, param, code}, or None."""
    if not isinstance(error, dict):
        return f"error is a {type(error).__name__}, not an object"
    if set(error) != ERROR_KEYS:
        return f"error keys {sorted(error)}, not {sorted(ERROR_KEYS)}"
    return None


def judge_error(status: int, headers: httpx.Headers, content: bytes) -> tuple[str, str]:
    """(verdict, detail) of a non-200 answer: only a 503 with Retry-After and the error shape is allowed."""
    try:
        error = json.loads(content).get("error")
    except (ValueError, AttributeError):
        error = None
    shape = error_problem(error)
    said = (
        f"{status} {error.get('code')}: {str(error.get('message'))[:200]}" if isinstance(error, dict) else f"{status}"
    )
    if status == 503 and "retry-after" in headers:
        return ("mismatched", f"{said}; {shape}") if shape else ("rejected", said)
    return "unexpected", f"{said}; {shape}" if shape else said


def judge_answer(response: httpx.Response, plan: Plan) -> tuple[str, str, int]:
    """(verdict, detail, images delivered) of a JSON answer."""
    if response.status_code != 200:
        return (*judge_error(response.status_code, response.headers, response.content), 0)
    problems = header_problems(response.headers, plan)
    try:
        data = response.json()["data"]
    except (ValueError, KeyError, TypeError) as exc:
        return "mismatched", f"body is not an images response ({type(exc).__name__})", 0
    problems += [problem for item in data if (problem := image_problem(item.get("b64_json"), plan))]
    if len(data) != plan.n:
        problems.append(f"{len(data)} images for n={plan.n}")
    return ("mismatched" if problems else "ok"), "; ".join(problems), len(data)


def sse_events(response: httpx.Response) -> Iterator[tuple[str | None, Any]]:
    """(event name, parsed data) of each server-sent event."""
    name = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            yield name, json.loads(line.removeprefix("data:"))
            name = None


def judge_stream(response: httpx.Response, plan: Plan) -> tuple[str, str, int]:
    """(verdict, detail, images delivered) of a streamed answer, read to its end or hung up after one event."""
    if response.status_code != 200:
        response.read()
        return (*judge_error(response.status_code, response.headers, response.content), 0)
    problems = header_problems(response.headers, plan)
    prefix = "image_generation" if plan.route == "t2i" else "image_edit"
    completed = 0
    for name, event in sse_events(response):
        kind = event.get("type") if isinstance(event, dict) else None
        if name != kind:
            problems.append(f"event {name} carries type {kind}")
        if kind == "error":
            shape = error_problem(event.get("error"))
            return "lost", f"stream error after {completed} images: {event.get('error')}; {shape or ''}", completed
        if not str(kind).startswith(f"{prefix}."):
            problems.append(f"event {kind} in a {prefix} stream")
        if plan.drop:
            return ("mismatched" if problems else "dropped"), "; ".join(problems), 0
        if kind in (f"{prefix}.partial_image", f"{prefix}.completed"):
            problem = image_problem(event.get("b64_json"), plan)
            problems += [f"{kind}: {problem}"] if problem else []
        if kind == f"{prefix}.completed":
            completed += 1
    if completed < plan.n:
        return "lost", f"stream ended after {completed} of {plan.n} .completed events", completed
    if completed > plan.n:
        problems.append(f"{completed} .completed events for n={plan.n}")
    return ("mismatched" if problems else "ok"), "; ".join(problems), completed


def send(client: httpx.Client, plan: Plan, phase: str, t0: float) -> Outcome:
    """Send one request and judge its answer; no answer in time is a lost one."""
    started = time.monotonic()
    status = None
    try:
        if plan.stream:
            with client.stream("POST", **request_kwargs(plan)) as response:
                status = response.status_code
                verdict, detail, images = judge_stream(response, plan)
        else:
            response = client.post(**request_kwargs(plan))
            status = response.status_code
            verdict, detail, images = judge_answer(response, plan)
    except (httpx.HTTPError, ValueError) as exc:  # no answer, or a stream cut off or garbled
        verdict, detail, images = "lost", f"{type(exc).__name__}: {exc}", 0
    return Outcome(plan, phase, started - t0, time.monotonic() - started, status, verdict, detail, images)


# --- traffic -------------------------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Where the run stands: its outcomes (appended from the client threads) and its clock."""

    t0: float
    stop_at: float
    outcomes: list[Outcome] = field(default_factory=list)


def worker(index: int, args: argparse.Namespace, mix: Mix, traffic: Traffic) -> None:
    """One client sending back to back until the traffic stops, from its own seeded draws."""
    rng = random.Random(f"{args.seed}:worker:{index}")
    with httpx.Client(base_url=args.url, timeout=args.timeout) as client:
        while time.monotonic() < traffic.stop_at:
            traffic.outcomes.append(send(client, mix.draw(rng), "steady", traffic.t0))


def burst(args: argparse.Namespace, mix: Mix, traffic: Traffic) -> None:
    """``--burst`` requests released together at ``--burst-at`` of the run, each from a client of its own."""
    rng = random.Random(f"{args.seed}:burst")
    plans = [mix.draw(rng, allow_drop=False) for _ in range(args.burst)]
    gate = threading.Barrier(args.burst)
    time.sleep(max(0.0, traffic.t0 + args.burst_at * args.duration - time.monotonic()))

    def one(plan: Plan) -> None:
        with httpx.Client(base_url=args.url, timeout=args.timeout) as client:
            gate.wait()
            traffic.outcomes.append(send(client, plan, "burst", traffic.t0))

    threads = [threading.Thread(target=one, args=(plan,), daemon=True) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def drive(args: argparse.Namespace, mix: Mix, results: Results) -> Traffic:
    """The workers and the burst until the duration is over and every answer is in; progress as it goes."""
    t0 = time.monotonic()
    traffic = Traffic(t0=t0, stop_at=t0 + args.duration)
    threads = [threading.Thread(target=worker, args=(i, args, mix, traffic), daemon=True) for i in range(args.workers)]
    if args.burst:
        threads.append(threading.Thread(target=burst, args=(args, mix, traffic), daemon=True))
    for thread in threads:
        thread.start()
    next_progress = t0 + args.progress_s
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.5)
        if time.monotonic() >= next_progress:
            next_progress += args.progress_s
            verdicts = Counter(outcome.verdict for outcome in list(traffic.outcomes))
            results["progress"] = {"elapsed_s": round(time.monotonic() - t0, 1), **verdicts}
    return traffic


# --- metrics and memory --------------------------------------------------------------------------------------

Sample = tuple[str, dict[str, str], float]


def scrape(url: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition."""
    samples = []
    for line in httpx.get(url, timeout=10).text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        samples.append((name, dict(LABEL.findall(labels)), float(value)))
    return samples


def series(samples: list[Sample], name: str, models: set[str], app: str | None) -> list[float]:
    """The values of ``name`` for these models (every replica's series), of ``app`` when given."""
    return [
        value
        for sample_name, labels, value in samples
        if sample_name == name and labels.get("model") in models and app in (None, labels.get("application"))
    ]


COUNTERS = ("images_out", "compile_events", "oom_recoveries")


def counters(samples: list[Sample], models: set[str], app: str | None) -> dict[str, Any]:
    """The counters summed over the models' series; the peak VRAM gauge per model."""
    totals: dict[str, Any] = {key: sum(series(samples, f"ray_flux2_{key}_total", models, app)) for key in COUNTERS}
    peaks = {model: max(series(samples, "ray_flux2_peak_vram_bytes", {model}, app), default=0.0) for model in models}
    return totals | {"peak_vram_bytes": peaks}


def settled_counters(args: argparse.Namespace, models: set[str], before: dict[str, Any], images: int) -> dict:
    """The counters once the images counter has caught up with the images received, or after ``--settle``
    seconds (Ray exports a process's metrics every few seconds)."""
    deadline = time.monotonic() + args.settle
    while True:
        now = counters(scrape(args.metrics_url), models, args.metrics_app)
        if now["images_out"] - before["images_out"] == images or time.monotonic() >= deadline:
            return now
        time.sleep(1.0)


def gpu_memory() -> list[dict[str, int]] | None:
    """Used and total MiB of each GPU (nvidia-smi, so this process makes no CUDA context); None without one."""
    query = ["nvidia-smi", "--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [[int(cell) for cell in line.split(",")] for line in out.splitlines() if line.strip()]
    return [{"gpu": index, "used_mib": used, "total_mib": total} for index, used, total in rows]


# --- the report ----------------------------------------------------------------------------------------------


def latency(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(pct(values, 50), 3), "p99": round(pct(values, 99), 3)}


def latency_by_kind(outcomes: list[Outcome], duration: float) -> dict[str, dict]:
    """p50/p99 of the steady traffic's answered requests per kind, over the first and the last quarter of the run
    (by start time): whether latency drifts."""
    table: dict[str, dict] = {}
    for kind in sorted({outcome.plan.kind for outcome in outcomes}):
        mine = [o for o in outcomes if o.plan.kind == kind and o.phase == "steady" and o.verdict in ("ok", "dropped")]
        table[kind] = {
            "first_quarter": latency([o.latency_s for o in mine if o.started_s < duration / 4]),
            "last_quarter": latency([o.latency_s for o in mine if o.started_s >= 3 * duration / 4]),
        }
    return table


def mix_counts(outcomes: list[Outcome]) -> dict[str, Any]:
    plans = [outcome.plan for outcome in outcomes]
    return {
        "t2i": sum(p.route == "t2i" for p in plans),
        "edit": sum(p.route == "edit" for p in plans),
        "masked": sum(p.mask for p in plans),
        "two_refs": sum(p.refs == 2 for p in plans),
        "off_warm_size": sum(p.off_warm for p in plans),
        "unwarmed_shape": sum(p.unwarmed_shape for p in plans),
        "lora": sum(bool(p.stack) for p in plans),
        "lora_stacks": dict(Counter("+".join(sorted(p.stack)) for p in plans if p.stack)),
        "streamed": sum(p.stream for p in plans),
        "dropped": sum(p.drop for p in plans),
        "jpeg": sum(p.output_format == "jpeg" for p in plans),
        "n": dict(sorted(Counter(p.n for p in plans).items())),
        "models": dict(Counter(p.model for p in plans)),
    }


def summarize(args: argparse.Namespace, outcomes: list[Outcome]) -> dict[str, Any]:
    statuses: dict[str, Counter] = {}
    for outcome in outcomes:
        statuses.setdefault(outcome.plan.kind, Counter())[str(outcome.status or "none")] += 1
    burst = [outcome for outcome in outcomes if outcome.phase == "burst"]
    answered = [o.latency_s for o in burst if o.verdict == "ok"]
    received = {
        "non_streamed": sum(o.images for o in outcomes if o.status == 200 and not o.plan.stream),
        "streamed": sum(o.images for o in outcomes if o.status == 200 and o.plan.stream),
    }
    return {
        "requests": len(outcomes),
        "verdicts": {verdict: sum(o.verdict == verdict for o in outcomes) for verdict in VERDICTS},
        "statuses_by_kind": {kind: dict(sorted(counts.items())) for kind, counts in sorted(statuses.items())},
        "latency_s": latency_by_kind(outcomes, args.duration),
        "burst": {
            "requests": len(burst),
            "verdicts": dict(Counter(o.verdict for o in burst)),
            "ok_latency_s": latency(answered),
        },
        "unexpected_5xx": sum(o.verdict == "unexpected" and (o.status or 0) >= 500 for o in outcomes),
        "mix": mix_counts(outcomes),
        "images_received": received,
        "problems": [o.summary() for o in outcomes if o.verdict in FAILED][:50],
    }


def metrics_report(before: dict[str, Any], after: dict[str, Any], received: dict[str, int]) -> dict[str, Any]:
    """The counters' deltas over the run; the images counter beside the images received, streamed and not."""
    delta = {key: after[key] - before[key] for key in COUNTERS}
    total = received["non_streamed"] + received["streamed"]
    return {
        "images_out_delta": delta["images_out"],
        "images_received": total,
        "images_match": delta["images_out"] == total,
        "compile_events_delta": delta["compile_events"],
        "oom_recoveries_delta": delta["oom_recoveries"],
        "peak_vram_gib_last_request": {
            model: round(peak / 2**30, 2) for model, peak in after["peak_vram_bytes"].items()
        },
    }


def verdict_of(report: dict[str, Any]) -> list[str]:
    """Why the run failed (empty: it passed)."""
    verdicts = report["verdicts"]
    return [f"{verdicts[key]} {key}" for key in FAILED if verdicts[key]] + (
        [f"{report['unexpected_5xx']} unexpected 5xx"] if report["unexpected_5xx"] else []
    )


def print_table(report: dict[str, Any]) -> None:
    verdicts = " ".join(f"{key} {value}" for key, value in report["verdicts"].items())
    print(f"\nsoak: {report['requests']} requests in {report['wall_s']} s: {verdicts}")
    print(f"{'kind':<14}{'statuses':<28}{'p50 / p99 s, first quarter':>30}{'last quarter':>22}")
    for kind, statuses in report["statuses_by_kind"].items():
        times = report["latency_s"].get(kind, {})
        cells = [
            f"{times[q]['p50']:.3f} / {times[q]['p99']:.3f} ({times[q]['n']})" if times.get(q, {}).get("n") else "-"
            for q in ("first_quarter", "last_quarter")
        ]
        print(f"{kind:<14}{json.dumps(statuses):<28}{cells[0]:>30}{cells[1]:>22}")
    burst = report["burst"]
    ok = burst["ok_latency_s"]
    answered = f"ok p50 / p99 {ok.get('p50')} / {ok.get('p99')} s"
    print(f"burst: {burst['requests']} at once: {json.dumps(burst['verdicts'])}; {answered}")
    metrics = report["metrics"]
    received = report["images_received"]
    if "images_out_delta" in metrics:
        print(
            f"images counter delta {metrics['images_out_delta']:g} vs received {metrics['images_received']} "
            f"(non-streamed {received['non_streamed']} + streamed {received['streamed']}); compile events "
            f"{metrics['compile_events_delta']:g} ({report['mix']['unwarmed_shape']} requests at unwarmed shapes), "
            f"OOM recoveries {metrics['oom_recoveries_delta']:g}, peak VRAM {metrics['peak_vram_gib_last_request']} GiB"
        )
    memory = [report[key] or "absent (no nvidia-smi)" for key in ("gpu_memory_start", "gpu_memory_end")]
    print(f"GPU memory: start {memory[0]}, end {memory[1]}")
    print("PASSED" if report["passed"] else f"FAILED: {', '.join(report['failures'])}", flush=True)


# --- the run -------------------------------------------------------------------------------------------------


def served_models(args: argparse.Namespace) -> list[ModelInfo]:
    """The models to send to, from the server's listing; each named adapter must be one of some model's."""
    cards = httpx.get(f"{args.url}/v1/models", timeout=30).raise_for_status().json()["data"]
    bases = {card["id"]: card for card in cards if card.get("parent") is None}
    names = args.models.split(",") if args.models else list(bases)
    unknown = [name for name in names if name not in bases]
    if unknown:
        raise SystemExit(f"models {unknown} are not served; the server lists {sorted(bases)}")
    wanted = [name for name in args.adapters.split(",") if name]
    models = [
        ModelInfo(
            name=name,
            warm_shapes=frozenset((s["width"], s["height"], s["references"]) for s in bases[name]["warmup_shapes"]),
            adapters=tuple(a for a in wanted if a in bases[name]["lora"]["adapters"]),
            max_per_request=bases[name]["lora"]["max_per_request"],
        )
        for name in names
    ]
    orphans = set(wanted) - {adapter for model in models for adapter in model.adapters}
    if orphans:
        raise SystemExit(f"adapters {sorted(orphans)} belong to none of the models {names}")
    return models


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole soak; returns the report it also writes to ``--json``."""
    results = Results(args.json)
    models = served_models(args)
    names = {model.name for model in models}
    results["setup"] = {
        "url": args.url,
        "models": [m.name for m in models],
        "adapters": {m.name: m.adapters for m in models},
    }
    before = counters(scrape(args.metrics_url), names, args.metrics_app) if args.metrics_url else None
    memory_start = gpu_memory()
    log(f"soak: {args.workers} workers for {args.duration:g} s, a burst of {args.burst} at {args.burst_at:g}")
    start = time.monotonic()
    traffic = drive(args, Mix(args, models), results)
    report = {"wall_s": round(time.monotonic() - start, 1), **summarize(args, traffic.outcomes)}
    report["metrics"] = {"skipped": "no --metrics-url"}
    if before is not None:
        received = sum(report["images_received"].values())
        report["metrics"] = metrics_report(
            before, settled_counters(args, names, before, received), report["images_received"]
        )
    report |= {"gpu_memory_start": memory_start, "gpu_memory_end": gpu_memory()}
    report["failures"] = verdict_of(report)
    report["passed"] = not report["failures"]
    results.data.update(report)
    results.flush()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.url and args.json and args.sizes):
        parser.error("--url, --json and --sizes are required")
    report = run(args)
    print_table(report)
    if not report["passed"]:
        sys.exit(1)
