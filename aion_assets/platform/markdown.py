"""Small Markdown tables for the UI's metadata panel."""

from __future__ import annotations

import polars as pl


def markdown_table(frame: pl.DataFrame, max_rows: int = 10, max_chars: int = 60) -> str:
    """A small Markdown table of the first rows, for the UI's metadata panel."""
    if frame.width == 0:
        return "_(no columns)_"

    def cell(value: object) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |", "|" + " --- |" * frame.width]
    for row in frame.head(max_rows).iter_rows():
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    if frame.height > max_rows:
        lines.append(f"\n_first {max_rows} of {frame.height} rows_")
    return "\n".join(lines)
