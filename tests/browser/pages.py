"""Helpers of the browser suites: the tooling check, driving the playground, reading what it sent and showed."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

# The one import of Playwright for the browser suites: without it they still collect, and
# require_browser_tooling turns its absence into one plain failure.
try:
    from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright
except ImportError as exc:
    PLAYWRIGHT_IMPORT_ERROR: ImportError | None = exc
    Browser = Page = Request = Route = Any
    expect = sync_playwright = None
else:
    PLAYWRIGHT_IMPORT_ERROR = None

ROOT = Path(__file__).resolve().parents[2]
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


def gradient_png(path: Path, width: int, height: int, hue: int) -> Path:
    """A smooth, recognisable reference image (nicer in the screenshot than noise)."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [(x * 255 // max(width - 1, 1) + hue) % 256, y * 255 // max(height - 1, 1), np.full_like(x, 160)], axis=-1
    ).astype(np.uint8)
    Image.fromarray(pixels, mode="RGB").save(path, format="PNG")
    return path


def open_playground(page: Page, url: str, models: int) -> None:
    page.goto(f"{url}/")
    expect(page).to_have_title("FLUX.2 Playground")
    # The status says so once the model list is in (the one "Loading models…" option would pass a count of 1).
    expect(page.get_by_role("status")).to_have_text(f"{models} model{'' if models == 1 else 's'} available")
    expect(page.get_by_label("Model").locator("option")).to_have_count(models)


def submit_and_wait(page: Page, button: str) -> dict[str, Any]:
    page.evaluate(RECORD_PROGRESS_JS)
    page.get_by_role("button", name=button, exact=True).click()
    expect(page.locator("#progress")).to_be_hidden(timeout=RESULT_TIMEOUT_MS)
    return page.evaluate("window.__progress")


def newest_result(page: Page, text: str) -> None:
    """Wait until the newest of this page's results says ``text`` (its seed, its LoRA stack), with no error shown."""
    expect(page.locator("#error")).to_be_empty()
    newest = page.get_by_role("navigation", name="This page's results").get_by_role("button").first
    expect(newest).to_contain_text(text, timeout=RESULT_TIMEOUT_MS)


def natural_size(page: Page) -> tuple[int, int]:
    width, height = page.get_by_role("img", name="Generated image").evaluate(
        "img => [img.naturalWidth, img.naturalHeight]"
    )
    return width, height


def shown_meta(page: Page) -> dict[str, str]:
    """The result's details as the page lists them, {name: value}."""
    meta = page.locator("#meta")
    return dict(zip(meta.locator("dt").all_inner_texts(), meta.locator("dd").all_inner_texts(), strict=True))


def shown_result(page: Page) -> bytes:
    """The file behind the result on show, as the page holds it (its download link points at the same blob)."""
    b64 = page.get_by_role("img", name="Generated image").evaluate(
        """async img => {
          const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
          let text = "";
          for (const byte of bytes) text += String.fromCharCode(byte);
          return btoa(text);
        }"""
    )
    return base64.b64decode(b64)


def pixels(data: bytes, mode: str = "RGB") -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert(mode))


def capture_posts(page: Page, path: str) -> list[dict[str, Any]]:
    """The bodies the page posts to ``path`` as they go on the wire: multipart as {field: [values]}, JSON parsed.

    Playwright's request event leaves out bodies built from blobs; an intercepting route sees those held in
    memory (not files the page read from disk: upload those as bytes), then lets the request through."""
    posts: list[dict[str, Any]] = []

    def record(route: Route) -> None:
        request = route.request
        content_type = request.headers["content-type"]
        if content_type.startswith("application/json"):
            posts.append(request.post_data_json)
        else:
            posts.append(multipart_fields(request.post_data_buffer or b"", content_type.split("boundary=", 1)[1]))
        route.continue_()

    page.route(f"**{path}", record)
    return posts


def multipart_fields(body: bytes, boundary: str) -> dict[str, list[bytes]]:
    fields: dict[str, list[bytes]] = {}
    for part in body.split(b"--" + boundary.encode())[1:-1]:
        head, _, value = part[2:].partition(b"\r\n\r\n")  # each part opens with CRLF, headers end with a blank line
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        fields.setdefault(name, []).append(value[:-2])  # the CRLF before the next boundary
    return fields
