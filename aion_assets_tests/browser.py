"""Debian's chromium driven by Playwright (never a browser Playwright downloads): how the page tests launch it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# A closed network: without these Chromium keeps trying to reach Google's services at start-up.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def launch_chromium(playwright):
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(f"Debian's chromium is needed at {CHROMIUM} (.ci/run installs it)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
