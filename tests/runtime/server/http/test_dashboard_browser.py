"""/dashboard in a real headless Chromium (Debian's `chromium` package, driven by Playwright):
the page loads, draws the radix tree after a few requests, shows the pool and hit rate, and logs
no console error; without the key it asks for one. Skipped, saying why, without Chromium or
Playwright. `RADIXSERVE_DASHBOARD_SCREENSHOT=docs/dashboard.png` saves its screenshot."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.runtime.server.http.conftest import ServerProcess

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("RADIXSERVE_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
)
DRAW_TIMEOUT_MS = 60_000
SYSTEM = (
    "You are a travel assistant. Suggest one museum and one park in the city the user names, "
    "in a single short sentence, and mention nothing else at all. City: "
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no Chromium: apt-get install -y chromium (or set RADIXSERVE_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_the_dashboard_draws_the_tree_without_console_errors(
    browser: Any, server: ServerProcess, client: httpx.Client
) -> None:
    for city in ("Paris", "Rome", "Vienna", "Oslo"):
        # 35 + over 16 tokens: two shared pages of 16 tokens, and one of each prompt's own
        text = SYSTEM + city + ". I will stay there for three days in the spring with my family."
        body = {"text": text, "sampling_params": {"max_new_tokens": 8, "temperature": 0}}
        assert client.post("/generate", json=body).status_code == 200
    page = browser.new_page(viewport={"width": 1200, "height": 860})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.base_url}/dashboard#key={server.api_key}")
    page.wait_for_function(
        "Number(document.getElementById('tree').dataset.nodes || 0) >= 3",
        timeout=DRAW_TIMEOUT_MS,
    )
    assert page.locator("#tree-svg rect.node").count() >= 3
    assert page.inner_text("#hit-rate").endswith("%")
    assert page.inner_text("#kv-usage").endswith("%")
    assert page.locator("#pool-bar div").count() == 4
    assert "error" not in page.get_attribute("#status", "class") or ""
    shot = os.environ.get("RADIXSERVE_DASHBOARD_SCREENSHOT")
    if shot:
        page.wait_for_timeout(8000)  # a few refreshes: the history chart has points
        page.screenshot(path=shot)
    page.close()
    assert errors == []


def test_without_the_key_the_page_asks_for_it(browser: Any, server: ServerProcess) -> None:
    page = browser.new_page()
    page.goto(f"{server.base_url}/dashboard")
    page.wait_for_selector("#key-form.shown", timeout=DRAW_TIMEOUT_MS)
    assert "API key" in page.inner_text("#status")
    page.fill("#key", str(server.api_key))
    page.click("#key-form button")
    page.wait_for_function(
        "document.getElementById('tree').dataset.nodes !== undefined", timeout=DRAW_TIMEOUT_MS
    )
    assert not page.locator("#key-form.shown").count()
    page.close()
