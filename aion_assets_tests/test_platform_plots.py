"""The shared PNG helpers: Agg rendering with no global state, palette PNGs, Markdown data URIs."""

from __future__ import annotations

import base64
import io
import sys

import numpy as np
from PIL import Image

from aion_assets.platform.plots import DPI, figure_png, new_figure, png_markdown, shorten


def _noise_figure():
    figure = new_figure(3.0, 2.0)
    figure.add_axes((0, 0, 1, 1)).imshow(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    return figure


def test_figure_png_is_a_png_of_the_figure_size() -> None:
    image = Image.open(io.BytesIO(figure_png(_noise_figure())))
    assert image.format == "PNG" and image.size == (3 * DPI, 2 * DPI) and image.mode in ("RGB", "RGBA")


def test_our_figures_never_enter_pyplot_and_pyplot_figures_are_closed() -> None:
    import matplotlib

    backend_before = matplotlib.rcParams._get_backend_or_none()  # None until someone resolves it
    figure_png(_noise_figure())
    assert matplotlib.rcParams._get_backend_or_none() == backend_before
    if "matplotlib.pyplot" in sys.modules:
        assert not sys.modules["matplotlib.pyplot"].get_fignums()
    import matplotlib.pyplot as plt

    made_by_pyplot = plt.figure(figsize=(2, 1), dpi=50)
    assert Image.open(io.BytesIO(figure_png(made_by_pyplot))).size == (100, 50)
    assert not plt.fignum_exists(made_by_pyplot.number)


def test_palette_png_is_smaller_and_keeps_the_picture() -> None:
    rgb = figure_png(_noise_figure())
    palette = figure_png(_noise_figure(), palette=True)
    decoded = Image.open(io.BytesIO(palette))
    assert decoded.mode == "P" and decoded.size == (3 * DPI, 2 * DPI) and len(palette) < len(rgb)
    difference = np.abs(np.asarray(decoded.convert("RGB"), dtype=int)
                        - np.asarray(Image.open(io.BytesIO(rgb)).convert("RGB"), dtype=int))
    assert difference.mean() < 20


def test_png_markdown_embeds_the_bytes_as_a_data_uri() -> None:
    png = figure_png(_noise_figure())
    markdown = png_markdown(png, "cutouts [shard 0]")
    assert markdown.startswith("![cutouts (shard 0)](data:image/png;base64,") and markdown.endswith(")")
    assert base64.b64decode(markdown.split("base64,", 1)[1][:-1]) == png


def test_shorten_keeps_the_start_or_the_end() -> None:
    assert shorten("short", 10) == "short"
    assert shorten("a reason that is far too long", 10) == "a reason …"
    assert shorten("588848901537202306", 8, keep="end") == "…7202306"
