"""The image routes' response headers: what ran (``x-model``, ``x-seed``, ...) and where the time went.

The timing headers put the ingress's wall clock around the replica's own timings: ``x-queue-ms`` from arrival
to the start of generation, ``x-total-ms`` to the rendered body, and ``Server-Timing`` split into stages that
add up to the total.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployments.types import ImageRequest, ImageResult, Route


@dataclass(frozen=True)
class Clock:
    """Wall-clock marks (``time.time()``) of one request in the ingress."""

    arrived: float  # the route began
    parsed: float  # body read, validated, references decoded: handed to the model
    returned: float  # the model's result back
    done: float  # the response body rendered


def stages(result: ImageResult, clock: Clock) -> dict[str, float]:
    """Server-Timing's stages in seconds; together they are the request's whole time in the ingress."""
    timings = result.timings
    waited = max(0.0, timings.started_at - clock.parsed)  # Serve's queue, then the replica's
    return {
        "parse": clock.parsed - clock.arrived,  # read the body, validate, decode reference images
        "queue": waited,
        "adapter": timings.adapter_s,  # LoRA adapters read (first use) and switched in
        "generate": timings.generate_s,
        "handle": clock.returned - clock.parsed - waited - timings.adapter_s - timings.generate_s - timings.output_s,
        "encode": timings.output_s + clock.done - clock.returned,  # images off the GPU, encoding, base64, JSON
    }


def image_headers(target: Route, result: ImageResult, clock: Clock) -> dict[str, str]:
    """The headers of an answered image request."""
    split = stages(result, clock)
    return {
        "x-model": target.model.served_name,
        "x-model-weights": result.weights,
        "x-lora": target.adapters.id,
        "x-seed": str(result.seed),
        "x-num-inference-steps": str(result.num_inference_steps),
        "x-mask-applied": str(result.mask_applied).lower(),
        "x-step-cache": str(result.step_cache).lower(),
        "x-batch-size": str(result.timings.batch_size),
        "x-generate-ms": f"{result.timings.generate_s * 1000:.1f}",
        "x-queue-ms": f"{(split['parse'] + split['queue']) * 1000:.1f}",  # from arrival to the start of generation
        "x-total-ms": f"{(clock.done - clock.arrived) * 1000:.1f}",
        "server-timing": ", ".join(f"{key};dur={value * 1000:.1f}" for key, value in split.items()),
    }


def stream_headers(target: Route, request: ImageRequest) -> dict[str, str]:
    """The headers of a streamed request: sent before the result, so only what the request fixed."""
    return {"x-model": target.model.served_name, "x-seed": str(request.seed), "x-lora": target.adapters.id}
