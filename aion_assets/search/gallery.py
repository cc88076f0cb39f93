"""A PNG grid of result cutouts, each captioned with its rank, object id and score."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CAPTION_HEIGHT = 28


def write_gallery(images: list[np.ndarray], captions: list[str], path: str | Path, columns: int = 5,
                  title: str | None = None) -> Path:
    """Save uint8 HxWx3 cutouts as a captioned grid; returns the path."""
    if not images:
        raise ValueError("no results to draw")
    height, width = images[0].shape[:2]
    rows = math.ceil(len(images) / columns)
    top = CAPTION_HEIGHT if title else 0
    canvas = Image.new("RGB", (columns * width, top + rows * (height + CAPTION_HEIGHT)), "black")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        draw.text((6, 6), title, fill="white", font=font)
    for index, (image, caption) in enumerate(zip(images, captions)):
        x = (index % columns) * width
        y = top + (index // columns) * (height + CAPTION_HEIGHT)
        canvas.paste(Image.fromarray(np.asarray(image, dtype=np.uint8)), (x, y))
        for line, text in enumerate(caption.split("\n")[:2]):
            draw.text((x + 3, y + height + 2 + 12 * line), text, fill="white", font=font)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, format="PNG")
    return out
