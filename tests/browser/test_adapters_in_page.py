"""LoRA adapters in the page (issue 16), in Chromium against the real service: the picker follows
``GET /v1/models``, sends exactly the chosen stack (JSON for generations, ``lora[][name]`` / ``lora[][scale]``
fields for edits, streamed), and the page's image is the one a direct request with that stack returns.

The app serves two tiny random adapters on one model, with max_scale 2 (not the default 4, so that a page that
hard-coded it would fail), and a second model without adapters.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments.engine.synthetic.tiny import build_tiny_klein
from tests.browser.pages import (
    ARTIFACTS,
    Page,
    capture_posts,
    expect,
    gradient_png,
    newest_result,
    open_playground,
    shown_meta,
    shown_result,
    submit_and_wait,
)
from tests.helpers import served_app
from tests.lora_files import save_peft_lora

SHAPES = [{"width": 64, "height": 64, "references": 0}, {"width": 64, "height": 64, "references": 1}]
STREAM_FIELDS = ("stream", "partial_images")  # the page streams; the direct requests do not


@pytest.fixture(scope="module")
def adapters_page_url(ray_cluster: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("page-loras")
    transformer = build_tiny_klein().transformer
    adapters = [
        {"name": "a", "source": str(save_peft_lora(transformer, root / "a", seed=1, rank=4))},
        {"name": "b", "source": str(save_peft_lora(transformer, root / "b", seed=2, rank=2))},
    ]
    options = {"ray_actor_options": {"num_cpus": 0.1}}
    models = [
        {
            "name": "tiny-klein",
            "source": "tiny-klein",
            "warmup_shapes": SHAPES,
            "lora": {"adapters": adapters, "max_rank": 4, "max_per_request": 2, "max_scale": 2},
            "deployment_options": options,
        },
        {"name": "plain", "source": "tiny-klein", "warmup_shapes": SHAPES[:1], "deployment_options": options},
    ]
    with served_app(
        {"models": models, "ingress_options": options}, "adapters-page", "/adapters-page", ray_cluster["http"]
    ) as url:
        yield url


def fill_request(page: Page, prompt: str, seed: int) -> None:
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_label("Size").select_option("64x64")
    page.get_by_label("Steps").fill("2")
    page.get_by_label("Seed").fill(str(seed))


def b64_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["data"][0]["b64_json"]


def shown_b64(page: Page) -> str:
    return base64.b64encode(shown_result(page)).decode()


def test_the_chosen_stack_is_sent_and_gives_the_direct_requests_image(page: Page, adapters_page_url: str) -> None:
    posts = capture_posts(page, "/v1/images/generations")
    open_playground(page, adapters_page_url, models=2)  # /v1/models lists 4 cards: the adapters' are not models here
    values = page.get_by_label("Model").locator("option").evaluate_all("options => options.map(o => o.value)")
    assert values == ["tiny-klein", "plain"]
    expect(page.locator("#adapters-section")).to_be_visible()

    # Adapter 1 by keyboard: the new row's select has the focus, four steps left from the default 1.
    page.get_by_role("button", name="Add adapter").click()
    first = page.get_by_role("combobox", name="Adapter 1")
    expect(first).to_be_focused()
    expect(first).to_have_value("a")
    slider = page.get_by_role("slider", name="Adapter 1 scale")
    expect(slider).to_have_value("1")
    slider.focus()
    for _ in range(4):
        page.keyboard.press("ArrowLeft")
    expect(slider).to_have_value("0.8")
    expect(page.get_by_role("spinbutton", name="Adapter 1 scale value")).to_have_value("0.8")

    # Adapter 2 gets the adapter not yet chosen, and a typed scale moves its slider.
    page.get_by_role("button", name="Add adapter").click()
    second = page.get_by_role("combobox", name="Adapter 2")
    expect(second).to_have_value("b")
    expect(second.locator("option[value='a']")).to_be_disabled()  # the server refuses an adapter named twice
    page.get_by_role("spinbutton", name="Adapter 2 scale value").fill("-0.5")
    page.keyboard.press("Tab")
    expect(page.get_by_role("slider", name="Adapter 2 scale")).to_have_value("-0.5")
    expect(page.get_by_role("button", name="Add adapter")).to_be_disabled()  # max_per_request 2

    fill_request(page, "a red car", seed=3)
    submit_and_wait(page, "Generate")
    newest_result(page, "a:0.8+b:-0.5")
    assert shown_meta(page)["LoRA"] == "a:0.8+b:-0.5"

    (sent,) = posts
    assert sent["model"] == "tiny-klein" and sent["stream"] is True
    assert sent["lora"] == [{"name": "a", "scale": 0.8}, {"name": "b", "scale": -0.5}]
    direct = {key: value for key, value in sent.items() if key not in STREAM_FIELDS}
    response = httpx.post(f"{adapters_page_url}/v1/images/generations", json=direct, timeout=120)
    assert response.headers["x-lora"] == "a:0.8+b:-0.5"
    assert b64_of(response) == shown_b64(page)
    base = {key: value for key, value in direct.items() if key != "lora"}
    assert b64_of(httpx.post(f"{adapters_page_url}/v1/images/generations", json=base, timeout=120)) != shown_b64(page)


def test_edits_send_the_stack_as_form_fields_with_the_mask_and_when_chained(
    page: Page, adapters_page_url: str, tmp_path: Path
) -> None:
    posts = capture_posts(page, "/v1/images/edits")
    open_playground(page, adapters_page_url, models=2)
    source = gradient_png(tmp_path / "photo.png", 64, 64, 40).read_bytes()
    upload = {"name": "photo.png", "mimeType": "image/png", "buffer": source}  # bytes, so capture_posts sees them
    page.get_by_label("Drop images here or browse").set_input_files(upload)
    page.get_by_role("application", name="Mask painter over reference image 1").focus()
    page.keyboard.press("Space")  # a dab in the middle
    expect(page.locator("#mode")).to_contain_text("masked")

    page.get_by_role("button", name="Add adapter").click()
    page.get_by_role("combobox", name="Adapter 1").select_option("b")
    page.get_by_role("spinbutton", name="Adapter 1 scale value").fill("1.5")
    page.keyboard.press("Tab")
    page.get_by_role("button", name="Add adapter").click()  # adapter a, at the default scale 1
    fill_request(page, "a blue door", seed=5)
    submit_and_wait(page, "Edit")
    newest_result(page, "a:1+b:1.5")
    first = shown_result(page)

    # One scale for every name, paired by order, as the server reads them.
    (sent,) = posts
    stack = {"lora[][name]": [b"b", b"a"], "lora[][scale]": [b"1.5", b"1"]}
    assert {key: sent[key] for key in stack} == stack and sent["model"] == [b"tiny-klein"]
    fields = {key: [v.decode() for v in values] for key, values in sent.items() if key not in ("image[]", "mask")}
    direct = {key: values for key, values in fields.items() if key not in STREAM_FIELDS}
    files = [("image[]", ("photo.png", source, "image/png")), ("mask", ("mask.png", sent["mask"][0], "image/png"))]
    response = httpx.post(f"{adapters_page_url}/v1/images/edits", data=direct, files=files, timeout=120)
    assert response.headers["x-lora"] == "a:1+b:1.5" and response.headers["x-mask-applied"] == "true"
    assert b64_of(response) == shown_b64(page)

    # The result, its mask kept, edited again: the stack stays chosen and goes with it.
    page.get_by_role("button", name="Edit this result").click()
    expect(page.get_by_role("img", name="Reference 1: flux2-5.png")).to_be_visible()
    fill_request(page, "now a green door", seed=6)
    submit_and_wait(page, "Edit")
    newest_result(page, "seed 6")
    assert len(posts) == 2 and posts[1]["image[]"] == [first]
    assert {key: posts[1][key] for key in stack} == stack
    expect(page.get_by_role("navigation", name="This page's results").get_by_role("button")).to_contain_text(
        ["a:1+b:1.5", "a:1+b:1.5"]
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground-lora.png"), full_page=True)


def test_scales_are_bounded_and_a_model_without_adapters_has_none(page: Page, adapters_page_url: str) -> None:
    posts = capture_posts(page, "/v1/images/generations")
    open_playground(page, adapters_page_url, models=2)
    expect(page.locator("#adapters-hint")).to_contain_text("Up to 2 of this model's adapters")
    expect(page.locator("#adapters-hint")).to_contain_text("\N{MINUS SIGN}2 to 2")

    page.get_by_role("button", name="Add adapter").click()
    slider = page.get_by_role("slider", name="Adapter 1 scale")
    number = page.get_by_role("spinbutton", name="Adapter 1 scale value")
    for name, value in [("min", "-2"), ("max", "2"), ("step", "0.05")]:
        expect(slider).to_have_attribute(name, value)
        expect(number).to_have_attribute(name, value)
    slider.focus()
    page.keyboard.press("End")
    expect(number).to_have_value("2")
    page.keyboard.press("Home")
    expect(number).to_have_value("-2")
    # Typed scales are brought within max_scale and onto the slider's steps.
    for typed, kept in [("9", "2"), ("-7", "-2"), ("0.83", "0.85")]:
        number.fill(typed)
        page.keyboard.press("Tab")
        expect(number).to_have_value(kept)
        expect(slider).to_have_value(kept)

    # Remove by keyboard: the remaining row becomes adapter 1 and takes the focus.
    page.get_by_role("button", name="Add adapter").click()
    page.get_by_role("button", name="Remove adapter 1 (a)").focus()
    page.keyboard.press("Enter")
    remaining = page.get_by_role("combobox", name="Adapter 1")
    expect(remaining).to_have_value("b")
    expect(remaining).to_be_focused()
    expect(page.get_by_role("button", name="Add adapter")).to_be_enabled()

    # A model without adapters: no adapters section, no lora field, no adapters in the results.
    page.get_by_label("Model").select_option("plain")
    expect(page.locator("#adapters-section")).to_be_hidden()
    fill_request(page, "a plain car", seed=8)
    submit_and_wait(page, "Generate")
    newest_result(page, "seed 8")
    (sent,) = posts
    assert sent["model"] == "plain" and "lora" not in sent
    expect(page.locator("#history-list .adapters")).to_have_count(0)
    assert "LoRA" not in shown_meta(page)

    # Back to the model with adapters: the section again, no adapter chosen.
    page.get_by_label("Model").select_option("tiny-klein")
    expect(page.locator("#adapters-section")).to_be_visible()
    expect(page.locator("#adapters-rows li")).to_have_count(0)
