"""`aion bench NAME`: measured figures, printed and written as rows of the `bench_results` table.

Benchmarks are not tests: speed and memory targets are read from these rows, never asserted by timed tests.
"""

from __future__ import annotations

import json
import sys

import click

from aion_assets.platform.settings import get_settings


def _stack():
    from aion_assets.platform.warehouse import stack_warehouse

    warehouse = stack_warehouse()
    return warehouse.lake, warehouse


def _report(name: str, figures: dict, rows: list[tuple[str, float, str]], as_json: bool) -> None:
    _, warehouse = _stack()
    for metric, value, unit in rows:
        warehouse.record_bench(name, metric, value, unit)
    if as_json:
        click.echo(json.dumps({k: v for k, v in figures.items() if isinstance(v, (int, float, str))}))
    else:
        for metric, value, unit in rows:
            click.echo(f"{name:<8} {metric:<40} {value:>12.3f} {unit}")


@click.group()
def bench() -> None:
    """Run a benchmark; rows land in the bench_results table."""


@bench.command()
@click.option("--release", default="gz1-sdss", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def ingest(release: str, as_json: bool) -> None:
    """cutouts/s and MB/s ingesting a whole release (into a scratch lake; the real tables are untouched)."""
    from aion_assets.cutouts.bench import bench_ingest

    root = get_settings().releases_dir
    if root is None or not (root / release).is_dir():
        shown = str(root) if root else ""
        click.echo(f"release {release!r} not found under AION_RELEASES_DIR={shown!r}", err=True)
        sys.exit(2)
    _, warehouse = _stack()
    figures = bench_ingest(root / release, warehouse)  # records its own rows
    click.echo(json.dumps(figures, default=str) if as_json else
               "\n".join(f"ingest   {k:<40} {v}" for k, v in figures.items()))


@bench.command()
@click.option("--limit", default=2048, show_default=True, help="Cutouts to embed (from the ingested lake).")
@click.option("--batch-size", default=None, type=int, help="Default: the encoder's preferred size.")
@click.option("--json", "as_json", is_flag=True)
def embed(limit: int, batch_size: int | None, as_json: bool) -> None:
    """image_base_embeddings end to end (lake read + preprocessing + forward) beside the forward pass alone."""
    from aion_assets.encoders.bench import bench_embed
    from aion_assets.encoders.image import iter_lake_cutouts, load_image_encoder
    from aion_assets.platform.layout import ShardKey

    lake, warehouse = _stack()
    keys = sorted({ShardKey(*path.split("/")[1:3]) for path in lake.iter_files("cutouts/*/*/rgb.npy")})
    if not keys:
        click.echo("no ingested cutouts: run `aion materialize group:cutouts` first", err=True)
        sys.exit(2)
    settings = get_settings()
    encoder = load_image_encoder(settings.image_encoder, bf16=settings.image_precision == "bf16")
    shards, taken = [], 0
    for array in iter_lake_cutouts(lake, keys, encoder.input_kind):
        shards.append(array[: limit - taken])
        taken += len(shards[-1])
        if taken >= limit:
            break
    figures = bench_embed(encoder, shards, batch_size=batch_size)
    _report("embed", figures, [
        ("cutouts_per_s_end_to_end", figures["end_to_end_per_s"], "cutouts/s"),
        ("cutouts_per_s_forward_only", figures["forward_per_s"], "cutouts/s"),
        ("end_to_end_over_forward", figures["ratio"], "ratio"),
    ], as_json)


@bench.command()
@click.option("--repeats", default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def search(repeats: int, as_json: bool) -> None:
    """queries/s and p50/p99 latency of text search against the built index, excluding start-up."""
    from aion_assets.search.bench import bench_search
    from aion_assets.search.service import SearchService
    from aion_assets.search.targets import TARGETS

    service = SearchService.from_environment()
    queries = [t.query for t in TARGETS] + ["an elliptical galaxy", "a barred spiral galaxy",
                                            "a blue irregular galaxy with star-forming clumps"]
    try:
        figures = bench_search(service.search_index, service.encode_query, queries, repeats=repeats)
    except FileNotFoundError as error:
        click.echo(str(error), err=True)
        sys.exit(2)
    _report("search", figures, [
        ("queries_per_s", figures["queries_per_s"], "queries/s"),
        ("latency_p50", figures["p50_ms"], "ms"),
        ("latency_p99", figures["p99_ms"], "ms"),
    ], as_json)


@bench.command()
@click.option("--latency", default=0.1, show_default=True, help="Seconds the fake server waits per request.")
@click.option("--n", default=128, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def vlm(latency: float, n: int, as_json: bool) -> None:
    """descriptions/s at concurrency 1, 4, 16, 64 against a local fake Anthropic server, and client overhead."""
    from aion_assets.vlm.bench import bench_rows, bench_vlm

    figures = bench_vlm(latency_s=latency, n=n)
    _report("vlm", figures, [(metric, value, unit) for _, metric, value, unit in bench_rows(figures)], as_json)


commands = [bench]
