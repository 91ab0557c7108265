"""The playground page in a real browser: Debian's Chromium driven by Playwright, against the real service.

Needs ``pip install playwright`` (the Python package only: no browser download) and Debian's ``chromium``
package at /usr/bin/chromium. Either missing is a test failure, not a skip: CI installs both.
Screenshots go to ``test-artifacts/``; ``docs/playground.png`` (the README's) is a copy of
``test-artifacts/playground-edit.png`` (test_edit_in_page.py), committed by hand so test runs leave the tree clean.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.browser.pages import (
    ARTIFACTS,
    RESULT_TIMEOUT_MS,
    Page,
    Route,
    expect,
    gradient_png,
    natural_size,
    open_playground,
    require_browser_tooling,
    shown_meta,
    submit_and_wait,
)
from tests.helpers import API_KEYS


def png_b64(width: int, height: int, color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def sse_event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def test_browser_tooling_is_installed() -> None:
    """Runs first and needs no service, so a missing browser shows up as one plain failure."""
    require_browser_tooling()


def test_edit_download_and_error(page: Page, base_url: str, tmp_path: Path) -> None:
    open_playground(page, base_url, models=2)

    banner = page.locator("#demo-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Demo model serving")
    expect(banner).to_contain_text("random weights")

    refs = [gradient_png(tmp_path / "a.png", 96, 80, 0), gradient_png(tmp_path / "b.png", 64, 64, 128)]
    page.get_by_label("Drop images here or browse").set_input_files(refs)
    expect(page.get_by_role("list", name="Reference images").get_by_role("listitem")).to_have_count(2)
    expect(page.get_by_role("img", name="Reference 1: a.png")).to_be_visible()
    expect(page.get_by_role("img", name="Reference 2: b.png")).to_be_visible()
    expect(page.locator("#mode")).to_contain_text("edit with 2 reference images")

    page.get_by_label("Prompt").fill("Turn the gradient into a watercolor sunset over the sea")
    page.get_by_label("Size").select_option("custom")
    page.get_by_label("Width").fill("128")
    page.get_by_label("Height").fill("96")
    page.get_by_label("Steps").fill("20")  # long enough on the tiny model for the elapsed time to move
    page.get_by_label("Seed").fill("7")

    progress = submit_and_wait(page, "Edit")
    expect(page.locator("#error")).to_be_empty()
    result = page.get_by_role("img", name="Generated image")
    expect(result).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    assert progress["shown"], "the progress indicator never appeared"
    assert len(set(progress["elapsed"])) >= 2, f"the elapsed time did not move: {progress['elapsed']}"
    assert natural_size(page) == (128, 96)
    meta = page.locator("#meta")
    expect(meta).to_contain_text("128x96")
    expect(meta).to_contain_text("7")
    # Issue 15: a streamed result showed "Generate 0 ms". Its time now comes from the progress events.
    timings = shown_meta(page)
    assert "Generate" not in timings, timings  # a stream carries no x-generate-ms header
    assert timings["Denoising"].endswith((" ms", " s")) and float(timings["Denoising"].split()[0]) > 0, timings
    assert float(timings["Round trip"].split()[0]) > 0, timings

    # Before/after slider: keyboard moves the divider.
    slider = page.get_by_role("slider", name="Before and after comparison")
    expect(slider).to_have_value("50")
    slider.focus()
    page.keyboard.press("Home")
    expect(slider).to_have_value("0")
    assert page.locator("#compare").evaluate("el => el.style.getPropertyValue('--split')") == "0%"
    slider.press("End")
    slider.evaluate("el => { el.value = '45'; el.dispatchEvent(new Event('input', { bubbles: true })); }")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)

    download_link = page.get_by_role("link", name="Download PNG")
    with page.expect_download() as download_info:
        download_link.click()
    download = download_info.value
    assert download.suggested_filename == "flux2-7.png"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with Image.open(saved) as image:
        image.load()
        assert image.format == "PNG"
        assert image.size == (128, 96)

    # No references left: text-to-image through /v1/images/generations, no before/after slider.
    page.get_by_role("button", name="Remove reference 2 (b.png)").click()
    page.get_by_role("button", name="Remove reference 1 (a.png)").click()
    expect(page.get_by_role("list", name="Reference images").get_by_role("listitem")).to_have_count(0)
    page.get_by_label("Size").select_option("auto")
    page.get_by_label("Output format").select_option("webp")
    page.get_by_label("Steps").fill("")
    submit_and_wait(page, "Generate")
    expect(page.locator("#error")).to_be_empty()
    expect(page.locator("#meta")).to_contain_text("64x64", timeout=RESULT_TIMEOUT_MS)
    assert natural_size(page) == (64, 64)
    expect(page.get_by_role("slider", name="Before and after comparison")).to_be_hidden()
    expect(page.get_by_role("link", name="Download WebP")).to_have_attribute("download", "flux2-7.webp")

    # A text file named like a PNG: the page sends it and shows the API's own error message.
    bad = {"name": "x.png", "mimeType": "image/png", "buffer": b"this is plain text, not an image"}
    page.get_by_label("Drop images here or browse").set_input_files(bad)
    expect(page.get_by_role("list", name="Reference images").get_by_role("listitem")).to_have_count(1)
    api_error = httpx.post(
        f"{base_url}/v1/images/edits",
        files=[("image[]", (bad["name"], bad["buffer"], bad["mimeType"]))],
        data={"prompt": "x", "size": "auto"},
        timeout=60,
    ).json()["error"]
    assert api_error["code"] == "invalid_image"
    submit_and_wait(page, "Edit")
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    # The message names the decoder's exception, whose repr differs per call: compare up to it.
    expect(alert).to_contain_text(api_error["message"].split(" (")[0])
    expect(alert).to_contain_text("HTTP 400")
    expect(alert).to_contain_text("code: invalid_image")
    page.screenshot(path=str(ARTIFACTS / "playground-error.png"), full_page=True)


def test_streaming_client_used_when_the_server_advertises_it(page: Page, base_url: str) -> None:
    """The page's SSE client against a scripted stream: one without timings, and one that fails midway, which
    the real service does not do on cue."""
    events = [
        ("image_generation.progress", {"step": 1, "num_steps": 4}),
        ("image_generation.partial_image", {"b64_json": png_b64(80, 48, (90, 90, 200)), "partial_image_index": 0}),
        ("image_generation.progress", {"step": 3, "num_steps": 4}),
        ("image_generation.progress", {"step": 4, "num_steps": 4}),
        (
            "image_generation.completed",
            {"b64_json": png_b64(80, 48, (240, 120, 40)), "size": "80x48", "output_format": "png"},
        ),
    ]
    stream = "".join(sse_event(name, {"type": name, **body}) for name, body in events)
    requests: list[dict[str, Any]] = []

    def generations(route: Route) -> None:
        requests.append(route.request.post_data_json)
        if len(requests) == 1:
            headers = {"x-model": "tiny-dev", "x-model-weights": "random-tiny", "x-seed": "11"}
            route.fulfill(status=200, content_type="text/event-stream", headers=headers, body=stream)
        else:
            error = {"type": "error", "error": {"message": "the model failed mid-stream", "code": "generation_failed"}}
            route.fulfill(status=200, content_type="text/event-stream", body=sse_event("error", error))

    page.route("**/v1/images/generations", generations)
    open_playground(page, base_url, models=2)
    page.get_by_label("Prompt").fill("a lighthouse at dusk")

    progress = submit_and_wait(page, "Generate")
    expect(page.locator("#error")).to_be_empty()
    assert requests[0]["stream"] is True and requests[0]["partial_images"] == 2
    assert {"step 1 of 4", "step 3 of 4", "step 4 of 4"} <= set(progress["steps"]), progress["steps"]
    assert progress["preview"], "the partial image was not shown"
    assert natural_size(page) == (80, 48)
    expect(page.locator("#meta")).to_contain_text("11")
    # The stream reported no server timing: none is shown (not a zero); only the page's own round trip is.
    timings = shown_meta(page)
    assert not {"Generate", "Denoising"} & set(timings), timings
    assert float(timings["Round trip"].split()[0]) > 0, timings

    submit_and_wait(page, "Generate")
    expect(page.get_by_role("alert")).to_contain_text("the model failed mid-stream")


def test_api_key_prompt_under_a_route_prefix(page: Page, prod_url: str) -> None:
    """A server with API keys, mounted at /prod: the page asks for a key and resolves the API under the prefix."""
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(prod_url)  # no trailing slash: the page's own files must still come from under /prod
    key = page.get_by_role("textbox", name="API key")
    expect(key).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Incorrect or missing API key")

    key.fill("not-a-key")
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("alert")).to_contain_text("HTTP 401")
    expect(key).to_be_visible()

    key.fill(API_KEYS[0])
    page.get_by_role("button", name="Connect").click()
    expect(key).to_be_hidden()
    expect(page.locator("#error")).to_be_empty()
    expect(page.get_by_label("Model").locator("option")).to_have_count(1)
    expect(page.get_by_label("Model")).to_have_value("flux2")
    expect(page.locator("#demo-banner")).to_be_visible()

    page.get_by_label("Prompt").fill("a red bicycle")
    submit_and_wait(page, "Generate")
    expect(page.locator("#error")).to_be_empty()
    expect(page.locator("#meta")).to_contain_text("64x64", timeout=RESULT_TIMEOUT_MS)
    assert natural_size(page) == (64, 64)
    own = [url for url in fetched if "/static/" in url or "/v1/" in url]
    assert own and all(url.startswith(f"{prod_url}/") for url in own), own
