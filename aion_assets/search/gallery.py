"""A PNG grid of result cutouts, each captioned with its rank, score, release, object id and published labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LINE_HEIGHT = 12
MAX_LABELS_SHOWN = 3


def _short_value(value: str) -> str:
    """Label values as a caption shows them: fractions to two decimals, text as it is."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:g}" if number.is_integer() else f"{number:.2f}"


def _is_fraction(value: str) -> bool:
    try:
        return not float(value).is_integer()
    except (TypeError, ValueError):
        return False


def result_caption(rank: int, score: float, release: str, object_id: str,
                   labels: Sequence[tuple[str, str]] = ()) -> str:
    """Lines under one result: '#rank score', release, object id, then its labels (name=value), if published."""
    lines = [f"#{rank} {score:.3f}", release, object_id]
    # Classes (ring=1, gz1_class=spiral) say more in a caption than vote fractions: they come first.
    shown = sorted(labels, key=lambda label: (_is_fraction(label[1]), label[0]))[:MAX_LABELS_SHOWN]
    lines += [f"{name}={_short_value(value)}" for name, value in shown]
    if len(labels) > MAX_LABELS_SHOWN:
        lines.append(f"+{len(labels) - MAX_LABELS_SHOWN} more label(s)")
    return "\n".join(lines)


def write_gallery(images: list[np.ndarray], captions: list[str], path: str | Path, columns: int = 5,
                  title: str | None = None) -> Path:
    """Save uint8 HxWx3 cutouts as a captioned grid; returns the path.

    Raises ValueError with no images and OSError (naming the path) when the file cannot be written.
    """
    if not images:
        raise ValueError("no results to draw: the gallery was not written")
    height, width = images[0].shape[:2]
    caption_height = 4 + LINE_HEIGHT * max((caption.count("\n") + 1 for caption in captions), default=1)
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    top = LINE_HEIGHT + 8 if title else 0
    canvas = Image.new("RGB", (columns * width, top + rows * (height + caption_height)), "black")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        draw.text((6, 4), title, fill="white", font=font)
    for index, (image, caption) in enumerate(zip(images, captions)):
        x = (index % columns) * width
        y = top + (index // columns) * (height + caption_height)
        canvas.paste(Image.fromarray(np.asarray(image, dtype=np.uint8)), (x, y))
        for line, text in enumerate(caption.split("\n")):
            while len(text) > 1 and draw.textlength(text, font=font) > width - 6:
                text = text[:-1]  # cut to the cutout's width
            draw.text((x + 3, y + height + 2 + LINE_HEIGHT * line), text, fill="white", font=font)
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(out, format="PNG")
    except OSError as error:
        raise OSError(f"cannot write the gallery {out}: {error.strerror or error}") from error
    return out
