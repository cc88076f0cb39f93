"""The command line tells the truth quietly: one stderr line per error, a traceback only with --debug, a fast
`--help`, and galleries that say what each result is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from aion_assets.platform.settings import PROJECT_ROOT

AION = PROJECT_ROOT / ".venv" / "bin" / "aion"
HEAVY_MODULES = ("torch", "dagster", "polars", "duckdb", "mlflow", "sentence_transformers", "faiss")


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "AION_HOME": str(home), "AION_RELEASES_DIR": "", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, cwd=home)


def test_help_imports_no_heavy_module(tmp_path: Path) -> None:
    probe = ("import sys; from aion_assets.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    result = _run([sys.executable, "-c", probe], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "search" in result.stdout and "sql" in result.stdout  # the lazy commands are listed
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_every_lazy_command_resolves_to_its_module_command() -> None:
    import click

    from aion_assets.cli import LAZY_COMMANDS, main

    with click.Context(main) as ctx:
        for name in LAZY_COMMANDS:
            command = main.get_command(ctx, name)
            assert isinstance(command, click.Command) and command.name == name


UNEXPECTED_FAILURE = (
    "from aion_assets.cli import main\n"
    "@main.command()\n"
    "def explode():\n"
    "    raise RuntimeError('the disk is on fire\\nsecond line of detail')\n"
    "main(prog_name='aion')\n"
)


def test_an_unexpected_error_is_one_line_and_debug_shows_its_traceback(tmp_path: Path) -> None:
    quiet = _run([sys.executable, "-c", UNEXPECTED_FAILURE, "explode"], tmp_path)
    assert quiet.returncode == 1
    assert quiet.stderr.strip().splitlines() == ["error: the disk is on fire"]
    loud = _run([sys.executable, "-c", UNEXPECTED_FAILURE, "--debug", "explode"], tmp_path)
    assert loud.returncode != 0
    assert "Traceback" in loud.stderr and "RuntimeError: the disk is on fire" in loud.stderr


def test_the_real_entry_point_reports_a_missing_model_in_one_line(tmp_path: Path) -> None:
    result = _run([str(AION), "search", "a ring galaxy"], tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_bad_setting_is_a_usage_error(tmp_path: Path) -> None:
    env_home = tmp_path
    result = subprocess.run([str(AION), "sql", "select 1"], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "AION_HOME": str(env_home), "AION_SHARD_SIZE": "lots"})
    assert result.returncode == 2 and "AION_SHARD_SIZE" in result.stderr and "Traceback" not in result.stderr


def _index_over(releases: list[str]):
    from aion_assets.search.index import build_index

    ids = pl.DataFrame({"object_id": [f"obj{i}" for i in range(len(releases))], "release": releases})
    vectors = np.random.default_rng(0).normal(size=(len(releases), 8)).astype(np.float32)
    return build_index(vectors, ids, kind="flat", use_gpu=False)


def test_an_unknown_release_is_an_error_naming_the_known_ones() -> None:
    from aion_assets.search.service import check_release

    index = _index_over(["gz1-sdss", "gz1-sdss", "spacewarps-cfhtls"])
    check_release(index, None)
    check_release(index, "gz1-sdss")
    with pytest.raises(LookupError, match=r"release 'nope' is not in the index; known: gz1-sdss, spacewarps-cfhtls"):
        check_release(index, "nope")


def test_asking_for_a_gallery_of_nothing_is_an_error() -> None:
    from aion_assets.search.commands import check_gallery_results
    from aion_assets.search.service import RESULT_COLUMNS

    empty = pl.DataFrame(schema=dict.fromkeys(RESULT_COLUMNS, pl.String))
    check_gallery_results(empty, None)
    with pytest.raises(ValueError, match="no results to draw"):
        check_gallery_results(empty, "gallery.png")


def test_captions_show_rank_score_release_id_and_labels_classes_first() -> None:
    from aion_assets.search.gallery import result_caption

    caption = result_caption(1, 0.6714, "gz-decals-rings", "J151554.81+022816.8",
                             [("featured_or_disk_fraction", "0.6812"), ("ring", "1")])
    assert caption.splitlines() == ["#1 0.671", "gz-decals-rings", "J151554.81+022816.8", "ring=1",
                                    "featured_or_disk_fraction=0.68"]
    assert result_caption(2, 0.5, "unlabelled-mix", "H1").splitlines() == ["#2 0.500", "unlabelled-mix", "H1"]


def test_the_gallery_png_is_written_and_an_unwritable_path_is_one_line(tmp_path: Path) -> None:
    from aion_assets.search.gallery import result_caption, write_gallery

    images = [np.full((32, 32, 3), shade, np.uint8) for shade in (40, 200)]
    captions = [result_caption(i + 1, 0.5, "gz1-sdss", f"obj{i}", [("gz1_class", "spiral")]) for i in range(2)]
    path = write_gallery(images, captions, tmp_path / "out" / "gallery.png", title="search: spirals")
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.width == 64
    with pytest.raises(ValueError, match="no results to draw"):
        write_gallery([], [], tmp_path / "empty.png")
    with pytest.raises(OSError, match=r"cannot write the gallery /proc/x.png") as raised:
        write_gallery(images, captions, "/proc/x.png")
    assert "\n" not in str(raised.value)


def test_a_failed_step_shows_its_error_once_and_the_trace_only_when_verbose(aion_home, monkeypatch) -> None:
    from click.testing import CliRunner

    from aion_assets.cli import main

    monkeypatch.setenv("AION_RELEASES_DIR", "")
    quiet = CliRunner().invoke(main, ["materialize", "key:text_embeddings"])
    assert quiet.exit_code == 1
    assert quiet.output.count("no descriptions yet") == 1 and "Stack Trace" not in quiet.output
    verbose = CliRunner().invoke(main, ["--verbose", "materialize", "key:text_embeddings"])
    assert verbose.exit_code == 1 and "Stack Trace" in verbose.output


def test_a_retired_release_is_never_returned_by_an_index_that_still_holds_it() -> None:
    from aion_assets.search.service import check_release, ranked

    index = _index_over(["gz1-sdss"] * 20 + ["retired-rel"] * 20)
    query = np.ones(8, dtype=np.float32)
    assert set(ranked(index, query, 40)["release"]) == {"gz1-sdss", "retired-rel"}
    served = ranked(index, query, 10, served_releases={"gz1-sdss"})
    # exactly the best 10 of the served release, ranked 1..10, though the index's top 10 mix both
    assert served.equals(ranked(index, query, 10, release="gz1-sdss"))
    assert served["rank"].to_list() == list(range(1, 11))
    with pytest.raises(LookupError, match=r"release 'retired-rel' was retired .*; known: gz1-sdss"):
        check_release(index, "retired-rel", served={"gz1-sdss"})


def test_likely_artefacts_follow_every_other_result_unless_the_query_asks_for_them() -> None:
    from aion_assets.search.index import build_index
    from aion_assets.search.service import ARTEFACT_COLUMN, RESULT_COLUMNS, ranked

    rng = np.random.default_rng(1)
    n = 100
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    query = vectors[0]
    artefact = np.zeros(n, dtype=np.float32)
    plain = ranked(build_index(vectors, pl.DataFrame({"object_id": [f"o{i}" for i in range(n)],
                                                     "release": ["r"] * n}), kind="flat", use_gpu=False), query, 10)
    # the plain top 3 become likely artefacts (and one just below the threshold stays where it is)
    top = [int(o[1:]) for o in plain["object_id"].to_list()]
    artefact[top[:3]] = [0.9, 0.5, 0.99]
    artefact[top[3]] = 0.49
    ids = pl.DataFrame({"object_id": [f"o{i}" for i in range(n)], "release": ["r"] * n,
                        ARTEFACT_COLUMN: artefact})
    index = build_index(vectors, ids, kind="flat", use_gpu=False)
    kept = ranked(index, query, 10)
    assert kept.columns == [*RESULT_COLUMNS, ARTEFACT_COLUMN]
    assert kept["object_id"].to_list() == plain["object_id"].to_list()  # no demotion asked: the plain order
    demoted = ranked(index, query, 10, demote_artefacts=True)
    order = demoted["object_id"].to_list()
    # the three artefacts left the top 10 (the 64 candidates hold seven better non-artefacts and more)
    assert set(order).isdisjoint({f"o{i}" for i in top[:3]})
    assert order[:7] == plain["object_id"].to_list()[3:10]
    assert demoted["rank"].to_list() == list(range(1, 11))
    # scores stay the cosines the index gave, not the demoted ones
    assert demoted["score"].is_sorted(descending=True) and (demoted["score"] <= plain["score"][0]).all()
    every = ranked(index, query, n, demote_artefacts=True)
    assert every["object_id"].to_list()[-3:] == [f"o{top[i]}" for i in (0, 1, 2)]
    assert (every[ARTEFACT_COLUMN].to_numpy()[:-3] < 0.5).all()
