"""Small PNG figures for the Dagster UI's asset pages, shared by every domain. Pure (no dagster).

Figures are built on matplotlib's object API with an Agg canvas attached, never through pyplot: no backend is
selected globally, no display is needed, and nothing is left in pyplot's figure registry to leak.
"""

from __future__ import annotations

import base64
import io
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 90


def new_figure(width_in: float, height_in: float, dpi: int = DPI) -> Figure:
    """A figure that renders with Agg whatever backend pyplot (if anyone imported it) is set to."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def figure_png(fig: Figure, palette: bool = False) -> bytes:
    """The figure as PNG bytes; the figure is closed. ``palette`` stores 256 colours instead of RGB: photographs
    (cutout grids) shrink several-fold, which keeps them small enough to embed in metadata."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)  # a pyplot figure under another backend: render it with Agg all the same
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, facecolor="white")
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)  # only figures made through pyplot are registered there; a no-op for ours
    fig.clear()
    png = buffer.getvalue()
    return _to_palette(png) if palette else png


def _to_palette(png: bytes) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    buffer = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def png_markdown(png: bytes, title: str) -> str:
    """Markdown that shows the PNG inline (a data URI): what `dg.MetadataValue.md` renders on the asset page."""
    alt = title.replace("[", "(").replace("]", ")").replace("\n", " ")
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def message_png(message: str) -> bytes:
    """A one-line picture that stands in for a chart with nothing to draw, so the page says why."""
    figure = new_figure(4.0, 0.8)
    figure.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#555555")
    return figure_png(figure)


def shorten(text: str, limit: int, keep: str = "start") -> str:
    """At most ``limit`` characters on one line; ``keep="end"`` for ids, whose distinguishing digits come last."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return "…" + text[1 - limit:] if keep == "end" else text[: limit - 1] + "…"
