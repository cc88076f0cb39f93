"""The Dagster UI as a person uses it, in headless Chromium against a real `dagster-webserver` over a stack the
demo's runner materialized: the asset graph draws every group, and retrieval_eval's page shows the plot of its
latest materialization."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from aion_assets_tests.app_stack import build_stack
from aion_assets_tests.browser import launch_chromium


@pytest.fixture(scope="module")
def ui(tmp_path_factory, sample_releases: Path, shared_data: Path):
    from playwright.sync_api import sync_playwright

    from aion_assets_tests.servers import running_webserver

    root = tmp_path_factory.mktemp("ui")
    patch, _ = build_stack(root, sample_releases, shared_data)
    with running_webserver() as base_url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        yield {"base_url": base_url, "page": page}
        browser.close()
    patch.undo()


def _groups() -> set[str]:
    from aion_assets.definitions import build_definitions

    graph = build_definitions().resolve_asset_graph()
    return {graph.get(key).group_name for key in graph.get_all_asset_keys()}


def test_ui_asset_graph_draws_every_group(ui, tmp_path) -> None:
    page = ui["page"]
    page.goto(f"{ui['base_url']}/asset-groups")
    # A fresh instance greets its first visitor with a community dialog over the graph: dismiss it as a person
    # would (the choice is kept by the instance, so it shows once).
    page.get_by_role("dialog").get_by_role("button", name="Skip").click()
    page.get_by_role("dialog").wait_for(state="detached")
    expected = _groups()
    page.wait_for_function(f"""() => {{
        const drawn = new Set([...document.querySelectorAll('svg foreignObject')].map(n => n.textContent.trim()));
        return {sorted(expected)!r}.every(group => drawn.has(group));
    }}""")
    drawn = page.eval_on_selector_all("svg foreignObject", "nodes => nodes.map(n => n.textContent.trim())")
    assert expected <= set(drawn)
    shot = tmp_path / "asset-graph.png"
    page.screenshot(path=str(shot))
    with Image.open(shot) as image:
        assert image.size == (1600, 1000)


def test_ui_retrieval_eval_page_shows_the_latest_plot(ui, tmp_path) -> None:
    page = ui["page"]
    page.goto(f"{ui['base_url']}/assets/retrieval_eval")
    figures = page.locator("tr", has_text="figures").first
    figures.get_by_text("[Show Markdown]").click()
    # The plot is a PNG inside the materialization's metadata: it must really decode in the browser.
    page.wait_for_function("""() => [...document.querySelectorAll('[role=dialog] img')]
        .some(i => i.src.startsWith('data:image/png') && i.complete && i.naturalWidth > 200)""")
    shot = tmp_path / "retrieval-eval-plot.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
