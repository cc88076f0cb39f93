"""`aion bench stellar` trains and samples for real on the catalogue and writes its figures to bench_results."""

from __future__ import annotations

import json

from click.testing import CliRunner

from aion_assets.platform.settings import AionSettings


def test_bench_stellar_writes_training_and_sampling_rows(aion_home: AionSettings) -> None:
    from aion_assets.cli import main
    from aion_assets.platform.warehouse import stack_warehouse

    result = CliRunner().invoke(main, ["bench", "stellar", "--steps", "3", "--batch-size", "32", "--samples", "8",
                                       "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["steps"] == 3 and figures["train_steps_per_s"] > 0 and figures["posterior_samples_per_s"] > 0
    assert figures["stars"] > 0 and figures["parameters"] > 1000
    rows = stack_warehouse().query("SELECT name, metric, value, unit FROM bench_results ORDER BY metric")
    assert rows["name"].to_list() == ["stellar", "stellar"]
    assert rows["unit"].to_list() == ["samples/s", "steps/s"]
    assert rows["metric"][1].startswith("train_steps_per_s[cpu,batch32,")
