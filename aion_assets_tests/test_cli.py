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
    assert {"demo", "materialize", "releases", "sql", "search", "similar", "bench", "ui"} <= set(main.commands)
    assert {"from-coords"} <= set(main.commands["releases"].commands)
    assert {"ingest", "embed", "search", "vlm"} == set(main.commands["bench"].commands)
