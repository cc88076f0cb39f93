"""The search page in headless Chromium (Debian's, driven by Playwright) against a running `aion serve`: type a
query and see real images, more like this, the detail view, a shared URL, and a newer model version appearing in
the picker without a restart."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from PIL import Image

from aion_assets_tests.app_stack import build_stack, land_new_version
from aion_assets_tests.browser import launch_chromium

IMAGES_LOADED = """() => {
    const images = [...document.querySelectorAll('#gallery figure.result img')];
    return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory, sample_releases: Path, shared_data: Path):
    from playwright.sync_api import sync_playwright

    from aion_assets.app.process import running_server

    root = tmp_path_factory.mktemp("page")
    patch, instance = build_stack(root, sample_releases, shared_data)
    with running_server(log_path=root / "serve.log") as base_url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield {"base_url": base_url, "browser": browser, "instance": instance, "root": root,
               "api": httpx.Client(base_url=base_url, timeout=60)}
        browser.close()
    patch.undo()


@pytest.fixture
def page(site):
    context = site["browser"].new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def _gallery_ids(page) -> list[str]:
    return page.eval_on_selector_all("#gallery figure.result", "figures => figures.map(f => f.dataset.objectId)")


def _search(page, text: str) -> None:
    page.fill("#query", text)
    page.press("#query", "Enter")
    # The final status, not the "searching for ..." one shown while the request runs.
    page.wait_for_function(f"document.querySelector('#status').textContent.includes({'results for “' + text + '”'!r})")
    page.wait_for_function(IMAGES_LOADED)


def _first_result_of(site, page, text: str):
    """Search from a fresh page; the first tile, its object id and release."""
    page.goto(site["base_url"])
    _search(page, text)
    first = page.locator("#gallery figure.result").first
    return first, first.get_attribute("data-object-id"), first.get_attribute("data-release")


def test_typing_a_query_shows_the_ranked_gallery_with_loaded_images(site, page) -> None:
    page.goto(site["base_url"])
    _search(page, "a ring galaxy")
    expected = site["api"].get("/api/search", params={"q": "a ring galaxy", "k": 24}).json()["results"]
    assert _gallery_ids(page) == [r["object_id"] for r in expected]
    widths = page.eval_on_selector_all("#gallery img", "images => images.map(i => i.naturalWidth)")
    assert len(widths) == 24 and min(widths) > 0
    assert "q=a+ring+galaxy" in page.url or "q=a%20ring%20galaxy" in page.url
    assert page.is_hidden("#rerank-control")  # no VLM key on this server
    assert "model v1" in page.text_content("#status")


def test_more_like_this_shows_the_objects_nearest_in_image(site, page) -> None:
    first, object_id, release = _first_result_of(site, page, "an edge-on disk galaxy")
    first.locator("button.more-like-this").click()
    page.wait_for_function(f"document.querySelector('#status').textContent.includes('results similar to {object_id}')")
    page.wait_for_function(IMAGES_LOADED)
    expected = site["api"].get(f"/api/similar/{object_id}", params={"k": 24, "release": release}).json()
    assert _gallery_ids(page) == [r["object_id"] for r in expected["results"]]
    assert object_id not in _gallery_ids(page)


def test_the_detail_view_shows_labels_description_and_catalogue(site, page) -> None:
    first, object_id, release = _first_result_of(site, page, "a spiral galaxy")
    first.locator("button.details").click()
    page.wait_for_selector("#detail[open]")
    detail = site["api"].get(f"/api/objects/{object_id}", params={"release": release}).json()
    # The view fills in when the object's answer arrives: wait for its checksum, the last table's.
    page.wait_for_function(f"document.querySelector('#detail').textContent.includes({detail['catalogue']['sha256']!r})")
    assert page.text_content("#detail-title") == object_id
    shown = page.text_content("#detail")
    assert all(name in shown and value in shown for name, value in detail["labels"].items())
    assert detail["catalogue"]["sha256"] in shown
    if detail["description"]:
        assert detail["description"]["summary"] in shown
    else:
        assert "no recorded description" in shown
    page.wait_for_function("document.querySelector('#detail-image').naturalWidth > 0")
    page.click("#detail-close")
    page.wait_for_selector("#detail:not([open])", state="attached")


def test_a_shared_url_runs_its_search_and_an_error_reads_as_one_line(site, page) -> None:
    page.goto(f"{site['base_url']}/?q=a+merger+with+tidal+tails&k=5")
    page.wait_for_function(IMAGES_LOADED)
    assert page.input_value("#query") == "a merger with tidal tails" and len(_gallery_ids(page)) == 5
    page.goto(f"{site['base_url']}/?q=a+merger&release=no-such-release")
    page.wait_for_selector("#status.error")
    assert "release 'no-such-release' is not in the index" in page.text_content("#status")


def test_a_cone_search_from_the_detail_view(site, page) -> None:
    page.goto(f"{site['base_url']}/?q=a+ring+galaxy&release=gz-decals-rings&k=4")  # the release with positions
    page.wait_for_function(IMAGES_LOADED)
    first = page.locator("#gallery figure.result").first
    object_id = first.get_attribute("data-object-id")
    first.locator("button.details").click()
    page.wait_for_selector("#detail-cone:not([hidden])")
    page.click("#detail-cone")
    page.wait_for_function("document.querySelector('#status').textContent.includes('objects within')")
    page.wait_for_function(IMAGES_LOADED)
    assert _gallery_ids(page)[0] == object_id  # the object itself, at zero separation, comes first
    assert "ra=" in page.url and "dec=" in page.url


def test_a_newer_version_appears_without_a_restart_and_can_be_picked(site, page, tmp_path) -> None:
    page.goto(site["base_url"])
    page.wait_for_function("document.querySelector('#model-version option[value=\"1\"]') !== null")
    assert page.locator("#model-version option[value='2']").count() == 0
    land_new_version(site["instance"], seed=1)
    # The page polls /api/models: the new version shows up in the picker with no reload.
    page.wait_for_selector("#model-version option[value='2']", state="attached", timeout=60_000)
    page.wait_for_function("document.querySelector('#model-version option[value=\"\"]').textContent.includes('v2')")
    _search(page, "a ring galaxy with a prominent ring")
    assert "model v2" in page.text_content("#status")
    page.select_option("#model-version", "1")
    page.press("#query", "Enter")
    page.wait_for_function("document.querySelector('#status').textContent.includes('model v1')")
    page.wait_for_function(IMAGES_LOADED)
    assert "model_version=1" in page.url
    shot = tmp_path / "search-page.png"
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as image:
        assert image.width >= 1280 and image.height >= 900
