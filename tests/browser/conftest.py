"""The browser suites' fixtures: Debian's Chromium through Playwright, and a page that must stay offline."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.browser.pages import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Browser,
    Page,
    Request,
    require_browser_tooling,
    sync_playwright,
)


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
