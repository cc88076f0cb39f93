"""`aion bench zoo` trains every model size for real and writes one images/s row per size to bench_results."""

from __future__ import annotations

import json

from click.testing import CliRunner

from aion_assets.platform.settings import AionSettings


def test_bench_zoo_writes_a_row_per_model_size(aion_home: AionSettings) -> None:
    from aion_assets.cli import main
    from aion_assets.platform.warehouse import stack_warehouse

    result = CliRunner().invoke(main, ["bench", "zoo", "--cnn-px", "32", "--encoder-px", "32", "--batch-size", "4",
                                       "--steps", "2", "--base-width", "2", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["small_params"] < figures["medium_params"] < figures["large_params"]
    assert all(figures[f"{size}_images_per_s"] > 0 for size in ("small", "medium", "large", "lite0"))
    rows = stack_warehouse().query("SELECT name, metric, unit FROM bench_results ORDER BY metric")
    assert rows["name"].to_list() == ["zoo"] * 4 and set(rows["unit"]) == {"images/s"}
    assert rows["metric"][0].startswith("train_images_per_s[large,")
