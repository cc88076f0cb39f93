"""`aion search` and `aion similar`: a stable contract, other tools read their --json output."""

from __future__ import annotations

import json
import os
import sys

import click

RESULT_HELP = "--json prints a list of {rank, object_id, release, score}."


def _service():
    from aion_assets.platform.lake import Lake
    from aion_assets.platform.warehouse import Warehouse
    from aion_assets.search.service import SearchService

    lake = Lake(os.environ["AION_LAKE_ROOT"])
    return SearchService(lake, Warehouse(os.environ["AION_WAREHOUSE"], lake), os.environ["AION_TEXT_ENCODER"])


def _emit(results, as_json: bool, gallery: str | None, title: str, service) -> None:
    if as_json:
        click.echo(json.dumps(results.to_dicts()))
    else:
        for row in results.iter_rows(named=True):
            click.echo(f"{row['rank']:>3}  {row['score']:.4f}  {row['release']:<20} {row['object_id']}")
    if gallery:
        from aion_assets.search.gallery import write_gallery
        from aion_assets.search.thumbnails import result_images

        images = result_images(service.lake, service.warehouse, results)
        captions = [f"#{r['rank']} {r['score']:.3f}\n{r['object_id'][:24]}" for r in results.iter_rows(named=True)]
        path = write_gallery(images, captions, gallery, title=title)
        click.echo(f"gallery written to {path}", err=as_json)


def _fail(error: Exception) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(1)


@click.command(help=f"Rank cutouts by how well they match TEXT. {RESULT_HELP}")
@click.argument("text")
@click.option("--release", default=None, help="Only results from this release.")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
@click.option("--gallery", type=click.Path(dir_okay=False), help="Write a PNG grid of the results.")
def search(text: str, release: str | None, k: int, as_json: bool, gallery: str | None) -> None:
    from aion_assets.search.service import timed

    service = _service()
    try:
        results, seconds = timed(service.search, text, k=k, release=release)
    except (FileNotFoundError, LookupError, ValueError) as error:
        _fail(error)
    service.log("text", text, k, release, results.height, seconds)
    _emit(results, as_json, gallery, f"search: {text}", service)


@click.command(help=f"The image-similarity baseline: cutouts nearest to OBJECT_ID's image. {RESULT_HELP}")
@click.argument("object_id")
@click.option("--release", default=None, help="The object's release (needed when its id is in several).")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
@click.option("--gallery", type=click.Path(dir_okay=False), help="Write a PNG grid of the results.")
def similar(object_id: str, release: str | None, k: int, as_json: bool, gallery: str | None) -> None:
    from aion_assets.search.service import timed

    service = _service()
    try:
        results, seconds = timed(service.similar, object_id, k=k, release=release)
    except (FileNotFoundError, LookupError, ValueError) as error:
        _fail(error)
    service.log("similar", object_id, k, release, results.height, seconds)
    _emit(results, as_json, gallery, f"similar to {object_id}", service)


commands = [search, similar]
