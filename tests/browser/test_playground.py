"""The playground page in a real browser: Debian's Chromium driven by Playwright, against the real service.

Needs ``pip install playwright`` (the Python package only: no browser download) and Debian's ``chromium``
package at /usr/bin/chromium. Either missing is a test failure, not a skip: CI installs both.
Screenshots of the result go to ``test-artifacts/playground.png``; ``docs/playground.png`` (the README's)
is a copy of one, committed by hand so test runs leave the tree clean.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import API_KEYS

try:
    from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright
except ImportError as exc:  # reported by the browser fixture as a failure
    PLAYWRIGHT_IMPORT_ERROR: ImportError | None = exc
else:
    PLAYWRIGHT_IMPORT_ERROR = None

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESULT_TIMEOUT_MS = 120_000

# Collects what the progress indicator showed while a request ran, so that a fast run cannot race the test.
RECORD_PROGRESS_JS = """() => {
  const box = document.getElementById("progress");
  const bar = document.getElementById("progress-bar");
  const elapsed = document.getElementById("elapsed");
  const preview = document.getElementById("preview");
  const seen = { shown: false, elapsed: [], steps: [], preview: false };
  window.__progress = seen;
  const record = (mutations) => {
    if (box.hidden) return;
    seen.shown = true;
    seen.elapsed.push(elapsed.textContent);
    // Steps reported in one batch show up only as the old values of the attribute's mutation records.
    for (const m of mutations) {
      if (m.target === bar && m.attributeName === "aria-valuetext" && m.oldValue) seen.steps.push(m.oldValue);
    }
    if (bar.hasAttribute("aria-valuetext")) seen.steps.push(bar.getAttribute("aria-valuetext"));
    if (!preview.hidden) seen.preview = true;
  };
  new MutationObserver(record).observe(box, {
    attributes: true, attributeOldValue: true, childList: true, characterData: true, subtree: true,
  });
}"""


def gradient_png(path: Path, width: int, height: int, hue: int) -> Path:
    """A smooth, recognisable reference image (nicer in the screenshot than noise)."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [(x * 255 // max(width - 1, 1) + hue) % 256, y * 255 // max(height - 1, 1), np.full_like(x, 160)], axis=-1
    ).astype(np.uint8)
    Image.fromarray(pixels, mode="RGB").save(path, format="PNG")
    return path


def png_b64(width: int, height: int, color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def sse_event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def require_browser_tooling() -> None:
    """Fail (never skip) when the browser tooling is missing: CI installs it, so its absence is a bug there."""
    if PLAYWRIGHT_IMPORT_ERROR is not None:
        pytest.fail(
            f"Playwright for Python is not importable ({PLAYWRIGHT_IMPORT_ERROR}); install it with "
            "`pip install playwright` (the package only, the browser comes from Debian's chromium)",
            pytrace=False,
        )
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; install Debian's browser: `apt-get install -y chromium`", pytrace=False)


def test_browser_tooling_is_installed() -> None:
    """Runs first and needs no service, so a missing browser shows up as one plain failure."""
    require_browser_tooling()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    require_browser_tooling()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page_errors: list[str] = []
    foreign: list[str] = []
    page.on("pageerror", lambda err: page_errors.append(str(err)))

    def check_offline(request: Request) -> None:
        url = urlsplit(request.url)
        if url.scheme not in ("data", "blob") and url.hostname != "127.0.0.1":
            foreign.append(request.url)

    page.on("request", check_offline)
    yield page
    context.close()
    assert not page_errors, f"uncaught errors in the page: {page_errors}"
    assert not foreign, f"the page must work offline, but it fetched {foreign}"


def open_playground(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/")
    expect(page).to_have_title("FLUX.2 Playground")
    expect(page.get_by_label("Model").locator("option")).to_have_count(2)


def submit_and_wait(page: Page, button: str) -> dict[str, Any]:
    page.evaluate(RECORD_PROGRESS_JS)
    page.get_by_role("button", name=button, exact=True).click()
    expect(page.locator("#progress")).to_be_hidden(timeout=RESULT_TIMEOUT_MS)
    return page.evaluate("window.__progress")


def natural_size(page: Page) -> tuple[int, int]:
    width, height = page.get_by_role("img", name="Generated image").evaluate(
        "img => [img.naturalWidth, img.naturalHeight]"
    )
    return width, height


def test_edit_download_and_error(page: Page, base_url: str, tmp_path: Path) -> None:
    open_playground(page, base_url)

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
    """The page's SSE client, against a scripted stream: the server does not stream yet (it answers 400)."""
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

    def models(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        for entry in body["data"]:
            entry["streaming"] = True
        route.fulfill(response=response, json=body)

    def generations(route: Route) -> None:
        requests.append(route.request.post_data_json)
        if len(requests) == 1:
            headers = {"x-model": "tiny-dev", "x-model-weights": "random-tiny", "x-seed": "11"}
            route.fulfill(status=200, content_type="text/event-stream", headers=headers, body=stream)
        else:
            error = {"type": "error", "error": {"message": "the model failed mid-stream", "code": "generation_failed"}}
            route.fulfill(status=200, content_type="text/event-stream", body=sse_event("error", error))

    page.route("**/v1/models", models)
    page.route("**/v1/images/generations", generations)
    open_playground(page, base_url)
    page.get_by_label("Prompt").fill("a lighthouse at dusk")

    progress = submit_and_wait(page, "Generate")
    expect(page.locator("#error")).to_be_empty()
    assert requests[0]["stream"] is True and requests[0]["partial_images"] == 2
    assert {"step 1 of 4", "step 3 of 4", "step 4 of 4"} <= set(progress["steps"]), progress["steps"]
    assert progress["preview"], "the partial image was not shown"
    assert natural_size(page) == (80, 48)
    expect(page.locator("#meta")).to_contain_text("11")

    submit_and_wait(page, "Generate")
    expect(page.get_by_role("alert")).to_contain_text("the model failed mid-stream")


def test_api_key_prompt_under_a_route_prefix(page: Page, prod_url: str) -> None:
    """A server with API keys, mounted at /prod: the page asks for a key and resolves the API under the prefix."""
    page.goto(prod_url)
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
