"""Partitions follow the watched folder: `aion materialize` registers them (the sensor's own registration), a
release whose folder vanished is retired (partitions removed, lake files kept under lake/retired/, rows gone from
the views), the demo's registration step names broken releases and counts only new partitions, and an unknown
partition is one line on stderr. Real release subsets, the cutouts group only."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from aion_assets.cli import _announce_demo_partitions, main
from aion_assets.cutouts.defs import register_release_partitions
from aion_assets.platform.lake import Lake
from aion_assets.platform.warehouse import Warehouse
from aion_assets.runner import stack_instance

SIZES = {"gz1-sdss": 4, "spacewarps-cfhtls": 3}


@pytest.fixture
def watched(copy_release: Callable[..., Path], aion_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "watched"
    for name, limit in SIZES.items():
        copy_release(name, limit=limit, dest=root)
    monkeypatch.setenv("AION_RELEASES_DIR", str(root))
    return root


def _cutout_counts(warehouse: Warehouse) -> dict[str, int]:
    rows = warehouse.query("SELECT release, count(*) AS n FROM cutouts GROUP BY release ORDER BY release")
    return dict(rows.iter_rows())


def test_materialize_registers_ingests_then_retires_a_vanished_release(
    watched: Path, lake: Lake, warehouse: Warehouse
) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["materialize", "group:cutouts"])
    assert first.exit_code == 0, first.output
    assert "2 run(s), 0 failed" in first.stdout
    assert _cutout_counts(warehouse) == SIZES  # every catalog row ingested, on a home that had no partitions

    shutil.rmtree(watched / "gz1-sdss")
    second = runner.invoke(main, ["materialize", "group:cutouts"])
    assert second.exit_code == 0, second.output
    retired_lines = [line for line in second.stdout.splitlines() if "gz1-sdss" in line]
    assert len(retired_lines) == 1 and retired_lines[0].startswith("retired release 'gz1-sdss'")
    assert "1 run(s), 0 failed" in second.stdout  # the rest of the run went on

    instance = stack_instance()
    assert instance.get_dynamic_partitions("release_shards") == ["spacewarps-cfhtls|0000"]
    # Kept, not deleted: the rows and arrays under lake/retired/<release>/<time>/<their old path>.
    [kept] = lake.iter_files("retired/gz1-sdss/*")
    assert pl.read_parquet(lake.path(kept, "tables/cutouts/gz1-sdss/0000.parquet")).height == SIZES["gz1-sdss"]
    assert lake.exists(kept, "cutouts", "gz1-sdss", "0000", "rgb.npy")
    assert lake.exists(kept, "retired.json")
    assert not lake.glob("tables/*/gz1-sdss") and not lake.exists("cutouts", "gz1-sdss")
    assert _cutout_counts(warehouse) == {"spacewarps-cfhtls": SIZES["spacewarps-cfhtls"]}
    assert warehouse.query("SELECT count(*) AS n FROM labels WHERE release = 'gz1-sdss'")["n"][0] == 0

    again = register_release_partitions(instance)
    assert again.retired == [] and again.keys == ["spacewarps-cfhtls|0000"]  # retired once, not on every run


def test_demo_registration_names_broken_releases_and_counts_only_new_partitions(
    watched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (watched / "bad-manifest").mkdir()
    (watched / "bad-manifest" / "manifest.json").write_text('{"release": ')
    instance = stack_instance()
    _announce_demo_partitions(instance, watched)
    first = capsys.readouterr().out.splitlines()
    assert first[0].startswith("skipping release folder 'bad-manifest': ")
    assert "manifest.json does not parse" in first[0]
    assert first[-1] == f"releases in {watched}: 2 new partition(s)"

    _announce_demo_partitions(instance, watched)
    assert capsys.readouterr().out.splitlines()[-1] == f"releases in {watched}: 0 new partition(s)"

    shutil.rmtree(watched / "spacewarps-cfhtls")
    _announce_demo_partitions(instance, watched)
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("retired release 'spacewarps-cfhtls'") for line in lines)
    assert lines[-1] == f"releases in {watched}: 0 new partition(s), 1 retired release(s)"
    assert instance.get_dynamic_partitions("release_shards") == ["gz1-sdss|0000"]


def test_a_broken_release_folder_is_not_retired(watched: Path) -> None:
    """A folder that is still there but broken waits for its repair: its partitions stay."""
    instance = stack_instance()
    register_release_partitions(instance)
    (watched / "gz1-sdss" / "catalog.csv").write_text("not,a,catalog\n")
    registration = register_release_partitions(instance)
    assert registration.retired == []
    assert "gz1-sdss|0000" in instance.get_dynamic_partitions("release_shards")
    assert any("gz1-sdss" in line for line in registration.report_lines())


def test_unknown_partition_is_one_line_on_stderr(watched: Path) -> None:
    result = CliRunner().invoke(main, ["materialize", "group:cutouts", "--partition", "nope"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown partition(s) nope of 'group:cutouts' "
        "(`aion releases` lists the releases; keys look like 'gz1-sdss|0000')"]


def test_unknown_selection_is_one_line_on_stderr(aion_home) -> None:
    result = CliRunner().invoke(main, ["materialize", "group:(("])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")


def test_retirement_moves_the_release_s_embeddings_and_nothing_else(lake: Lake, warehouse: Warehouse) -> None:
    """The per-shard embeddings follow their release; the text embeddings and another release stay put."""
    import numpy as np

    from aion_assets.cutouts.retirement import retire_release_files

    vector = np.zeros((2, 4), dtype=np.float32)
    for parts in [("embeddings", "image_base", "efficientnet-lite0-fp32", "gone", "0000.npy"),
                  ("embeddings", "search", "v1", "gone", "0000.npy"),
                  ("embeddings", "search", "v1", "kept", "0000.npy"),
                  ("embeddings", "text", "all-minilm-l6-v2-fp32", "descriptions.npy")]:
        lake.write_array(vector, *parts)
    retired = retire_release_files(lake, warehouse, "gone", ["gone|0000"], "its folder vanished")
    assert retired.moved == ["embeddings/image_base/efficientnet-lite0-fp32/gone", "embeddings/search/v1/gone"]
    assert lake.exists(retired.destination, "embeddings", "search", "v1", "gone", "0000.npy")
    assert lake.exists("embeddings", "search", "v1", "kept", "0000.npy")
    assert lake.exists("embeddings", "text", "all-minilm-l6-v2-fp32", "descriptions.npy")
    assert not lake.glob("embeddings/*/*/gone")
