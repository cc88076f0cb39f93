"""`aion search` and `aion similar`: a stable contract, other tools read their --json output."""

from __future__ import annotations

import json
import sys

import click

RESULT_HELP = ("--json prints a list of {rank, object_id, release, score}; a text search with a version that scores "
               "artefacts adds artefact_score (likely artefacts are listed after the rest unless TEXT asks for them).")


def result_options(release_help: str):
    """The options every ranked-results command shares: one contract for `search` and `similar`."""

    def decorate(command):
        for option in reversed((
            click.option("--release", default=None, help=release_help),
            click.option("--k", default=10, show_default=True, type=click.IntRange(1, 10_000)),
            click.option("--json", "as_json", is_flag=True),
            click.option("--gallery", type=click.Path(dir_okay=False), help="Write a PNG grid of the results."),
            click.option("--model-version", "model_version", type=click.IntRange(1), default=None,
                         help="Heads version to search with (see `aion models`); default: the latest."),
        )):
            command = option(command)
        return command

    return decorate


def _service(model_version: int | None = None):
    from aion_assets.search.service import SearchService

    return SearchService.from_environment(model_version)


def _emit(results, as_json: bool, gallery: str | None, title: str, service) -> None:
    if as_json:
        click.echo(json.dumps(results.to_dicts()))
    else:
        for row in results.iter_rows(named=True):
            artefact = f"  artefact {row['artefact_score']:.2f}" if row.get("artefact_score") is not None else ""
            click.echo(f"{row['rank']:>3}  {row['score']:.4f}  {row['release']:<20} {row['object_id']}{artefact}")
    if gallery:
        from aion_assets.search.gallery import write_gallery
        from aion_assets.search.thumbnails import result_captions, result_images

        images = result_images(service.lake, service.warehouse, results)
        path = write_gallery(images, result_captions(service.warehouse, results), gallery, title=title)
        click.echo(f"gallery written to {path}", err=as_json)


def _fail(error: Exception) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(1)


def check_gallery_results(results, gallery: str | None) -> None:
    """Nothing to draw is an error before anything is printed (the gallery was asked for)."""
    if gallery and results.is_empty():
        raise ValueError("no results to draw: the gallery was not written")


@click.command(help=f"Rank cutouts by how well they match TEXT. {RESULT_HELP}")
@click.argument("text")
@result_options(release_help="Only results from this release.")
@click.option("--rerank", is_flag=True, help="Ask the VLM about each candidate and re-order (needs ANTHROPIC_API_KEY).")
@click.option("--candidates", default=100, show_default=True, type=click.IntRange(1, 1000),
              help="How many top search results the VLM judges.")
@click.option("--samples", default=1, show_default=True, type=click.IntRange(1, 10),
              help="VLM answers averaged per candidate.")
def search(text: str, release: str | None, k: int, as_json: bool, gallery: str | None, model_version: int | None,
           rerank: bool, candidates: int, samples: int) -> None:
    from aion_assets.search.service import check_release, timed

    if rerank:
        from aion_assets.vlm.client import has_api_key

        if not has_api_key():  # before any work: nothing is searched, sent or written
            click.echo("error: --rerank needs ANTHROPIC_API_KEY (the VLM judges each candidate)", err=True)
            sys.exit(1)
    service = _service(model_version)
    try:
        check_release(service.search_index, release, service.served_releases)
        results, seconds = timed(service.search, text, k=max(k, candidates) if rerank else k, release=release)
        check_gallery_results(results, gallery)
    except (FileNotFoundError, LookupError, ValueError) as error:
        _fail(error)
    service.log("text", text, k, release, results.height, seconds)
    if rerank:
        from aion_assets.search.reranking import reranked_results

        results = reranked_results(service.lake, service.warehouse, text, results, samples).head(k)
    _emit(results, as_json, gallery, f"search: {text}", service)


@click.command(help=f"The image-similarity baseline: cutouts nearest to OBJECT_ID's image. {RESULT_HELP}")
@click.argument("object_id")
@result_options(release_help="The object's release (needed when its id is in several).")
def similar(object_id: str, release: str | None, k: int, as_json: bool, gallery: str | None,
            model_version: int | None) -> None:
    from aion_assets.search.service import check_release, timed

    service = _service(model_version)
    try:
        _ = service.model_version  # a version the lake does not hold is an error here too
        check_release(service.similarity_index, release, service.served_releases)
        results, seconds = timed(service.similar, object_id, k=k, release=release)
        check_gallery_results(results, gallery)
    except (FileNotFoundError, LookupError, ValueError) as error:
        _fail(error)
    service.log("similar", object_id, k, release, results.height, seconds)
    _emit(results, as_json, gallery, f"similar to {object_id}", service)


def _stack():
    from aion_assets.platform.settings import get_settings
    from aion_assets.platform.warehouse import stack_warehouse

    warehouse = stack_warehouse()
    return warehouse.lake, warehouse, get_settings().mlflow_tracking_uri


@click.command(help="The heads versions: MLflow run, training-set size, headline figures, whether their index "
               "exists, which one is served (latest) and which is marked production.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of version objects.")
def models(as_json: bool) -> None:
    from aion_assets.search.versions import list_versions

    infos = list_versions(*_stack())
    if as_json:
        click.echo(json.dumps([info.as_dict() for info in infos]))
        return
    if not infos:
        click.echo("no model versions yet: materialize alignment_model (or run `aion demo`)")
        return
    click.echo(f"{'version':>7}  {'latest':<6} {'prod':<5} {'index':<5} {'n_train':>7} {'val_mrr':>7} "
               f"{'ndcg@10 release':>15} {'ndcg@10 survey':>14}  mlflow run")

    def number(value, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for info in infos:
        click.echo(f"{info.version:>7}  {'yes' if info.latest else '':<6} {'yes' if info.production else '':<5} "
                   f"{'yes' if info.has_index else 'no':<5} {info.n_train if info.n_train is not None else '-':>7} "
                   f"{number(info.val_mrr_mean):>7} {number(info.ndcg_at_10_release):>15} "
                   f"{number(info.ndcg_at_10_survey):>14}  {info.mlflow_run_id or '-'}")


@click.command(help="Remove old heads versions' lake files (heads, search embeddings, index, evaluation pools), "
               "keeping the KEEP newest; never the served version nor one marked production in MLflow. MLflow's "
               "runs and registered versions are left as they are.")
@click.option("--keep", type=click.IntRange(1), required=True, help="How many of the newest versions to keep.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
def prune(keep: int, dry_run: bool) -> None:
    from aion_assets.search.versions import list_versions, versions_to_prune
    from aion_assets.search.versions import prune as prune_versions

    lake, warehouse, tracking_uri = _stack()
    doomed = versions_to_prune(list_versions(lake, warehouse, tracking_uri), keep)
    if not doomed:
        click.echo(f"nothing to prune: at most {keep} version(s) beyond the served and production ones")
        return
    if dry_run:
        click.echo(f"would remove version(s) {', '.join(map(str, doomed))}")
        return
    for version, removed in prune_versions(lake, doomed).items():
        click.echo(f"removed version {version}: {', '.join(removed) or 'nothing left in the lake'}")


commands = [search, similar, models, prune]
