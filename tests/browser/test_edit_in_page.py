"""Editing in the page (issue 17), in Chromium against the real service: a mask painted over the first
reference image, edits chained on results, and controls bounded by the server's limits and warm-up shapes.

The app here has its own limits (max_n 2, two references, 12 steps) and warm shapes, so that a page that
still hard-coded the defaults would fail. The edits are 128x96, a warm shape and the input's size: the API
then keeps every pixel outside the mask, which the tests check to the bit.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser.pages import (
    ARTIFACTS,
    RESULT_TIMEOUT_MS,
    Page,
    capture_posts,
    expect,
    gradient_png,
    natural_size,
    newest_result,
    open_playground,
    pixels,
    shown_result,
    submit_and_wait,
)
from tests.helpers import TEST_LIMITS, served_app

WIDTH, HEIGHT = 128, 96
PAGE_CONFIG = {
    "models": [
        {
            "name": "tiny-edit",
            "source": "tiny-dev",
            "warmup_shapes": [
                {"width": WIDTH, "height": HEIGHT, "references": 1},
                {"width": 96, "height": 128, "references": 0},
            ],
            "default_size": [96, 128],
            "deployment_options": {"ray_actor_options": {"num_cpus": 0.1}},
        }
    ],
    "limits": {**TEST_LIMITS, "max_n": 2, "max_reference_images": 2, "max_steps": 12},
    "ingress_options": {"ray_actor_options": {"num_cpus": 0.1}},
}
EDGE = 1e-6  # pixels whose centre lies this close to a brush's edge may fall either way in float arithmetic


@pytest.fixture(scope="module")
def edit_url(ray_cluster: dict[str, int]) -> Iterator[str]:
    with served_app(PAGE_CONFIG, "page", "/page", ray_cluster["http"]) as url:
        yield url


class Stroke:
    """A straight drag over the mask canvas, at fractions of its on-screen box, and the pixels it covered."""

    def __init__(self, page: Page, start: tuple[float, float], end: tuple[float, float], brush: int):
        set_brush(page, brush)
        canvas = page.locator("#mask-canvas")
        canvas.scroll_into_view_if_needed()
        left, top, width, height = canvas.evaluate(
            "c => { const r = c.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }"
        )
        # Whole CSS pixels, so that the pointer events carry exactly these coordinates.
        (sx, sy), (ex, ey) = [(round(left + fx * width), round(top + fy * height)) for fx, fy in (start, end)]
        page.mouse.move(sx, sy)
        page.mouse.down()
        page.mouse.move(ex, ey, steps=8)
        page.mouse.up()
        # The page maps a pointer to the image's natural pixels the same way, whatever size it is shown at.
        (x0, y0), (x1, y1) = [
            ((x - left) * WIDTH / width, (y - top) * HEIGHT / height) for x, y in ((sx, sy), (ex, ey))
        ]
        cy, cx = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((cx - x0) * dx + (cy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
        margin = (cx - (x0 + t * dx)) ** 2 + (cy - (y0 + t * dy)) ** 2 - (brush / 2) ** 2
        self.covered = margin <= 0
        self.on_edge = np.abs(margin) < EDGE


def set_brush(page: Page, size: int) -> None:
    """By keyboard, as a user without a pointer would: Home is the slider's minimum (2 px), each arrow 1 px."""
    slider = page.get_by_role("slider", name="Brush")
    slider.focus()
    page.keyboard.press("Home")
    for _ in range(size - 2):
        page.keyboard.press("ArrowRight")
    expect(slider).to_have_value(str(size))
    expect(page.locator("#brush-size-value")).to_have_text(f"{size} px")


def painted_share(page: Page) -> float:
    """The painted share the page states, once it states one: a mask file is decoded asynchronously."""
    status = page.locator("#mask-status")
    expect(status).to_contain_text("% of the first image painted")
    return float(status.inner_text().split("%")[0])


def open_with_reference(page: Page, url: str, tmp_path: Path) -> bytes:
    """Open the page and upload a 128x96 reference; the mask painter shows it, blank."""
    open_playground(page, url, models=1)
    source = gradient_png(tmp_path / "photo.png", WIDTH, HEIGHT, 40).read_bytes()
    # Handed over as bytes, not a path: the page then holds it in memory, where capture_posts can read it.
    upload = {"name": "photo.png", "mimeType": "image/png", "buffer": source}
    page.get_by_label("Drop images here or browse").set_input_files(upload)
    expect(page.get_by_role("application", name="Mask painter over reference image 1")).to_be_visible()
    expect(page.locator("#mask-status")).to_have_text("Nothing painted: the whole image may change.")
    return source


def start_edit(page: Page, url: str, tmp_path: Path) -> tuple[bytes, Stroke]:
    """Open the page with a 128x96 reference and paint one stroke over part of it."""
    source = open_with_reference(page, url, tmp_path)
    stroke = Stroke(page, (0.15, 0.4), (0.75, 0.4), brush=12)
    expect(page.locator("#mode")).to_contain_text("edit with 1 reference image, masked")
    return source, stroke


def edit(page: Page, prompt: str, seed: int) -> bytes:
    """Submit an edit at the reference's own size (a warm shape) and return the result's file."""
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_label("Size").select_option(f"{WIDTH}x{HEIGHT}")
    page.get_by_label("Steps").fill("4")
    page.get_by_label("Seed").fill(str(seed))
    submit_and_wait(page, "Edit")
    newest_result(page, f"seed {seed}")
    assert natural_size(page) == (WIDTH, HEIGHT)
    return shown_result(page)


def rgba_png(alpha: np.ndarray) -> bytes:
    rgb = np.random.default_rng(0).integers(0, 256, (*alpha.shape, 3), dtype=np.uint8)  # colour is ignored
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def editable(mask_png: bytes) -> np.ndarray:
    """The OpenAI mask's editable pixels (alpha 0), after checking its size and that it is binary."""
    alpha = pixels(mask_png, "RGBA")[..., 3]
    assert alpha.shape == (HEIGHT, WIDTH), "the mask must have the first image's natural size"
    assert set(np.unique(alpha)) <= {0, 255}, np.unique(alpha)
    return alpha == 0


def test_painted_mask_is_sent_at_the_image_size_and_the_edit_keeps_the_rest(
    page: Page, edit_url: str, tmp_path: Path
) -> None:
    posts = capture_posts(page, "/v1/images/edits")
    source, kept_stroke = start_edit(page, edit_url, tmp_path)
    shown = page.locator("#mask-canvas").bounding_box()
    assert shown["width"] > 2 * WIDTH, "the image should be shown enlarged, so that the test covers the scaling"
    first_share = painted_share(page)

    # Keyboard: Space dabs the brush at its place (the middle), Ctrl+Z takes it back.
    page.locator("#mask-canvas").focus()
    page.keyboard.press("Space")
    assert painted_share(page) > first_share
    page.keyboard.press("Control+z")
    assert painted_share(page) == first_share

    # A second stroke, undone by the button.
    Stroke(page, (0.2, 0.85), (0.5, 0.85), brush=12)
    assert painted_share(page) > first_share
    page.get_by_role("button", name="Undo").click()
    assert painted_share(page) == first_share

    # Invert and clear, each undone.
    page.get_by_role("button", name="Invert").click()
    assert abs(painted_share(page) + first_share - 100) < 0.15
    page.get_by_role("button", name="Undo").click()
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#mask-status")).to_have_text("Nothing painted: the whole image may change.")
    page.get_by_role("button", name="Undo").click()
    assert painted_share(page) == first_share

    # The eraser cuts a thinner vertical stroke out of the first one.
    page.get_by_role("button", name="Erase").click()
    expect(page.get_by_role("button", name="Erase")).to_have_attribute("aria-pressed", "true")
    cut = Stroke(page, (0.45, 0.15), (0.45, 0.65), brush=6)
    assert painted_share(page) < first_share

    result = edit(page, "paint a bright red stripe", seed=5)

    (sent,) = posts
    assert sent["size"] == [f"{WIDTH}x{HEIGHT}".encode()] and sent["stream"] == [b"true"]
    assert sent["image[]"] == [source]
    mask = editable(sent["mask"][0])
    expected = kept_stroke.covered & ~cut.covered
    certain = ~(kept_stroke.on_edge | cut.on_edge)
    assert mask.any() and np.array_equal(mask[certain], expected[certain]), (
        f"{np.count_nonzero(mask[certain] != expected[certain])} pixels differ from the painted region"
    )

    before, after = pixels(source), pixels(result)
    assert np.array_equal(after[~mask], before[~mask]), "the edit changed pixels outside the painted region"
    assert (after[mask] != before[mask]).any(), "the painted region was not edited"


def test_edit_this_result_sends_it_as_the_reference_and_the_history_goes_back(
    page: Page, edit_url: str, tmp_path: Path
) -> None:
    posts = capture_posts(page, "/v1/images/edits")
    _, stroke = start_edit(page, edit_url, tmp_path)
    first = edit(page, "a red stripe", seed=5)
    share = painted_share(page)

    page.get_by_role("button", name="Edit this result").click()
    expect(page.get_by_role("img", name="Reference 1: flux2-5.png")).to_be_visible()
    expect(page.get_by_role("list", name="Reference images").get_by_role("listitem")).to_have_count(1)
    assert painted_share(page) == share, "the mask was to be kept"
    second = edit(page, "now make the stripe blue", seed=6)

    assert len(posts) == 2
    assert posts[1]["image[]"] == [first], "the result was not sent as the new reference"
    mask = editable(posts[1]["mask"][0])
    assert np.array_equal(mask, editable(posts[0]["mask"][0]))
    assert np.array_equal(mask[~stroke.on_edge], stroke.covered[~stroke.on_edge])
    assert np.array_equal(pixels(second)[~mask], pixels(first)[~mask]), "the chained edit changed kept pixels"

    # This page's results, newest first: back to the first one, and download it.
    history = page.get_by_role("navigation", name="This page's results").get_by_role("button")
    expect(history).to_have_count(2)
    expect(history.nth(0)).to_contain_text("now make the stripe blue")
    expect(history.nth(0)).to_contain_text("seed 6")
    expect(history.nth(0)).to_have_attribute("aria-current", "true")
    expect(history.nth(1)).to_contain_text("seed 5")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground-edit.png"), full_page=True)

    history.nth(1).click()
    expect(history.nth(1)).to_have_attribute("aria-current", "true")
    expect(page.locator("#meta")).to_contain_text("5")
    assert shown_result(page) == first
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download PNG").click()
    download = download_info.value
    assert download.suggested_filename == "flux2-5.png"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.read_bytes() == first

    # Without "keep the mask", the result comes in with a blank mask.
    page.get_by_label("keep the mask").uncheck()
    page.get_by_role("button", name="Edit this result").click()
    expect(page.locator("#mask-status")).to_have_text("Nothing painted: the whole image may change.")
    expect(page.locator("#mode")).not_to_contain_text("masked")


def test_controls_follow_the_servers_limits_and_warm_shapes(page: Page, edit_url: str, tmp_path: Path) -> None:
    open_playground(page, edit_url, models=1)

    # Sizes: Auto, the warm-up shapes first, then the presets that fit max_side 512, then custom.
    size = page.get_by_label("Size")
    values = size.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert values == ["auto", f"{WIDTH}x{HEIGHT}", "96x128", "512x512", "custom"], values
    warm = size.locator("optgroup[label='Warmed up'] option")
    expect(warm).to_have_text(
        [f"{WIDTH} \N{MULTIPLICATION SIGN} {HEIGHT} (4:3)", "96 \N{MULTIPLICATION SIGN} 128 (3:4)"]
    )

    # n up to max_n (2), steps up to max_steps (12): typed values past them are brought back.
    page.get_by_text("Advanced").click()
    count = page.get_by_role("spinbutton", name="Images", exact=True)
    expect(count).to_have_attribute("max", "2")
    count.fill("8")
    count.press("Tab")
    expect(count).to_have_value("2")
    expect(page.get_by_label("Steps")).to_have_attribute("max", "12")

    # At most max_reference_images (2) references.
    expect(page.locator("#refs-hint")).to_contain_text("up to 2 images")
    files = [gradient_png(tmp_path / f"{i}.png", 64, 64, 60 * i) for i in range(3)]
    page.get_by_label("Drop images here or browse").set_input_files(files)
    expect(page.get_by_role("list", name="Reference images").get_by_role("listitem")).to_have_count(2)
    expect(page.get_by_role("alert")).to_contain_text("at most 2 reference images")
    for i in (2, 1):
        page.get_by_role("button", name=f"Remove reference {i} ({i - 1}.png)").click()

    # Two images at a warm text-to-image shape: both in this page's results, with seeds 40 and 41.
    page.get_by_label("Prompt").fill("two foxes")
    size.select_option("96x128")
    page.get_by_label("Steps").fill("2")
    page.get_by_label("Seed").fill("40")
    submit_and_wait(page, "Generate")
    expect(page.locator("#error")).to_be_empty()
    history = page.get_by_role("navigation", name="This page's results").get_by_role("button")
    expect(history).to_have_count(2, timeout=RESULT_TIMEOUT_MS)
    expect(history).to_contain_text(["seed 40", "seed 41"])
    assert natural_size(page) == (96, 128)


def test_a_mask_file_loads_into_the_painter_and_is_sent(page: Page, edit_url: str, tmp_path: Path) -> None:
    posts = capture_posts(page, "/v1/images/edits")
    source = open_with_reference(page, edit_url, tmp_path)
    mask_file = page.get_by_label("Or load a mask file")

    small = {"name": "small.png", "mimeType": "image/png", "buffer": rgba_png(np.zeros((64, 64), np.uint8))}
    mask_file.set_input_files(small)
    expect(page.get_by_role("alert")).to_contain_text(
        f"The mask is 64\N{MULTIPLICATION SIGN}64, the first image {WIDTH}\N{MULTIPLICATION SIGN}{HEIGHT}"
    )
    expect(page.locator("#mask-status")).to_have_text("Nothing painted: the whole image may change.")

    alpha = np.full((HEIGHT, WIDTH), 255, np.uint8)
    alpha[20:50, 30:90] = 0  # the editable rectangle
    alpha[60:70, 10:20] = 128  # half transparent is not editable: only alpha 0 is
    mask_file.set_input_files({"name": "mask.png", "mimeType": "image/png", "buffer": rgba_png(alpha)})
    expect(page.locator("#error")).to_be_empty()
    assert painted_share(page) == round(100 * 30 * 60 / (WIDTH * HEIGHT), 1)

    result = edit(page, "a window in the wall", seed=9)
    (sent,) = posts
    mask = editable(sent["mask"][0])
    assert np.array_equal(mask, alpha == 0)
    assert np.array_equal(pixels(result)[~mask], pixels(source)[~mask])
