"""`aion search` and `aion similar`: a stable contract, other tools read their --json output."""

from __future__ import annotations

import json
import sys

import click

RESULT_HELP = "--json prints a list of {rank, object_id, release, score}."


def result_options(release_help: str):
    """The options every ranked-results command shares: one contract for `search` and `similar`."""

    def decorate(command):
        for option in reversed((
            click.option("--release", default=None, help=release_help),
            click.option("--k", default=10, show_default=True, type=click.IntRange(1, 10_000)),
            click.option("--json", "as_json", is_flag=True),
            click.option("--gallery", type=click.Path(dir_okay=False), help="Write a PNG grid of the results."),
        )):
            command = option(command)
        return command

    return decorate


def _service():
    from aion_assets.search.service import SearchService

    return SearchService.from_environment()


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
@result_options(release_help="Only results from this release.")
@click.option("--rerank", is_flag=True, help="Ask the VLM about each candidate and re-order (needs ANTHROPIC_API_KEY).")
@click.option("--candidates", default=100, show_default=True, type=click.IntRange(1, 1000),
              help="How many top search results the VLM judges.")
@click.option("--samples", default=1, show_default=True, type=click.IntRange(1, 10),
              help="VLM answers averaged per candidate.")
def search(text: str, release: str | None, k: int, as_json: bool, gallery: str | None, rerank: bool,
           candidates: int, samples: int) -> None:
    from aion_assets.search.service import timed

    if rerank:
        from aion_assets.vlm.client import has_api_key

        if not has_api_key():  # before any work: nothing is searched, sent or written
            click.echo("error: --rerank needs ANTHROPIC_API_KEY (the VLM judges each candidate)", err=True)
            sys.exit(1)
    service = _service()
    try:
        results, seconds = timed(service.search, text, k=max(k, candidates) if rerank else k, release=release)
    except (FileNotFoundError, LookupError, ValueError) as error:
        _fail(error)
    service.log("text", text, k, release, results.height, seconds)
    if rerank:
        results = _reranked(service, text, results, samples).head(k)
    _emit(results, as_json, gallery, f"search: {text}", service)


@click.command(help=f"The image-similarity baseline: cutouts nearest to OBJECT_ID's image. {RESULT_HELP}")
@click.argument("object_id")
@result_options(release_help="The object's release (needed when its id is in several).")
def similar(object_id: str, release: str | None, k: int, as_json: bool, gallery: str | None) -> None:
    from aion_assets.search.service import timed

    service = _service()
    try:
        results, seconds = timed(service.similar, object_id, k=k, release=release)
    except (FileNotFoundError, LookupError, ValueError) as error:
        _fail(error)
    service.log("similar", object_id, k, release, results.height, seconds)
    _emit(results, as_json, gallery, f"similar to {object_id}", service)


def _reranked(service, text: str, results, samples: int):
    """VLM scores (1-10, averaged over samples) re-order the candidates; the run lands in rerank_results."""
    import polars as pl

    from aion_assets.search.reranking import rerank_results

    rows = rerank_results(service.lake, service.warehouse, text, results, samples=samples)
    return pl.DataFrame(
        [{"rank": row.rank_after, "object_id": row.object_id, "release": row.release,
          "score": float(row.score) if row.score is not None else 0.0} for row in rows]
    ).sort("rank")


commands = [search, similar]
