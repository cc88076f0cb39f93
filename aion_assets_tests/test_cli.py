"""The top-level CLI: what a user sees before anything has run."""

from __future__ import annotations

from click.testing import CliRunner

from aion_assets.cli import main


def test_demo_without_releases_says_how_to_point_at_them(aion_home, monkeypatch) -> None:
    monkeypatch.setenv("AION_RELEASES_DIR", "")
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "no release folder: set AION_RELEASES_DIR=/path/to/releases (a folder of release folders)"]


def test_materialize_rejects_a_selection_that_matches_nothing(aion_home) -> None:
    result = CliRunner().invoke(main, ["materialize", "key:no_such_asset"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "no_such_asset" in result.output


def test_every_documented_command_is_registered() -> None:
    import click

    with click.Context(main) as ctx:  # domain commands load on first use: ask the group, not its dict
        assert {"demo", "materialize", "releases", "sql", "search", "similar", "bench", "ui", "serve"} <= set(
            main.list_commands(ctx))
        assert {"from-coords"} <= set(main.get_command(ctx, "releases").commands)
        assert {"ingest", "embed", "search", "vlm", "app"} <= set(main.get_command(ctx, "bench").commands)


def test_a_failed_partition_stops_what_depends_on_it_and_keeps_the_rest(aion_home, copy_release, tmp_path,
                                                                       monkeypatch) -> None:
    """One release's images vanish between planning and ingestion: its run fails, the other release lands,
    and nothing downstream is built from the partial set."""
    import shutil

    import dagster as dg

    from aion_assets.cutouts.defs import register_release_partitions
    from aion_assets.definitions import build_definitions
    from aion_assets.runner import materialize, stack_instance

    copy_release("spacewarps-cfhtls", limit=5)
    broken = copy_release("gz-decals-rings", limit=5)
    monkeypatch.setenv("AION_RELEASES_DIR", str(tmp_path / "releases"))
    instance = stack_instance()
    register_release_partitions(instance, tmp_path / "releases")
    shutil.rmtree(broken)
    lines: list[str] = []
    summaries = materialize(build_definitions(), "key:raw_cutouts+", instance, progress=lines.append)
    assert [(s.partition_key, s.success) for s in summaries] == [
        ("gz-decals-rings|0000", False), ("spacewarps-cfhtls|0000", True)]
    assert lines[-1].startswith("stopping")
    assert instance.get_latest_materialization_event(dg.AssetKey("release_summary")) is None
