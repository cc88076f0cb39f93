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
        click.echo("no ingested cutouts: run `aion materialize group:cutouts` first (it registers and ingests the "
                   "releases in AION_RELEASES_DIR)", err=True)
        sys.exit(2)
    settings = get_settings()
    encoder = load_image_encoder(settings.image_encoder, bf16=settings.image_precision == "bf16", lake=lake)
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
@click.option("--preset", type=click.Choice(["cpu", "reference"]), default="cpu", show_default=True)
@click.option("--steps", default=50, show_default=True, help="Training steps timed.")
@click.option("--batch-size", default=512, show_default=True)
@click.option("--samples", "n_samples", default=256, show_default=True, help="Posterior samples per star.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def stellar(preset: str, steps: int, batch_size: int, n_samples: int, device: str, as_json: bool) -> None:
    """Training steps/s and posterior samples/s of the stellar emulator (CPU here, GPU where one is present)."""
    from aion_assets.stellar.bench import bench_stellar

    figures = bench_stellar(get_settings().stellar_dir, preset=preset, steps=steps, batch_size=batch_size,
                            n_samples=n_samples, device=device)
    tag = f"{preset},batch{batch_size},{figures['device']}"
    _report("stellar", figures, [
        (f"train_steps_per_s[{tag}]", figures["train_steps_per_s"], "steps/s"),
        (f"posterior_samples_per_s[{tag}]", figures["posterior_samples_per_s"], "samples/s"),
    ], as_json)


@bench.command()
@click.option("--cnn-px", default=64, show_default=True, help="Side of the scaling study's images.")
@click.option("--encoder-px", default=96, show_default=True, help="Side the EfficientNet-Lite0 finetune trains at.")
@click.option("--base-width", default=6, show_default=True, help="zoo_models' base_width (widths 1x, 2x, 4x).")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--steps", default=10, show_default=True, help="Training steps timed per model.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def zoo(cnn_px: int, encoder_px: int, base_width: int, batch_size: int, steps: int, device: str,
        as_json: bool) -> None:
    """Training images/s per model size of the Galaxy Zoo study (CPU here, GPU where one is present)."""
    from aion_assets.zoo.bench import bench_zoo
    from aion_assets.zoo.models import SIZES

    figures = bench_zoo(cnn_px=cnn_px, encoder_px=encoder_px, base_width=base_width, batch_size=batch_size,
                        steps=steps, device=device)
    rows = [(f"train_images_per_s[{size},{figures[f'{size}_params']}params,{cnn_px}px,{figures['device']}]",
             figures[f"{size}_images_per_s"], "images/s") for size in SIZES]
    rows.append((f"train_images_per_s[lite0,{encoder_px}px,{figures['device']}]", figures["lite0_images_per_s"],
                 "images/s"))
    _report("zoo", figures, rows, as_json)


@bench.command()
@click.option("--repeats", default=5, show_default=True)
@click.option("--model-version", "model_version", type=click.IntRange(1), default=None,
              help="Heads version to search with; default: the served one.")
@click.option("--json", "as_json", is_flag=True)
def search(repeats: int, model_version: int | None, as_json: bool) -> None:
    """queries/s and p50/p99 latency of text search against the built index, excluding start-up."""
    from aion_assets.search.bench import bench_search
    from aion_assets.search.service import SearchService
    from aion_assets.search.targets import TARGETS

    service = SearchService.from_environment(model_version)
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
        ("ranking_p50", figures["rank_p50_ms"], "ms"),
    ], as_json)


@bench.command()
@click.option("--n", "n", default=100_000, show_default=True, type=click.IntRange(1_000),
              help="Vectors in the index ('max': the largest this machine's memory holds).")
@click.option("--dim", default=256, show_default=True, type=click.IntRange(8, 4096))
@click.option("--vectors", default="structured,isotropic", show_default=True,
              help="Vector kinds, comma-separated: structured (like real embeddings) and/or isotropic.")
@click.option("--kinds", default="flat,ivfpq,hnsw", show_default=True, help="Index kinds, comma-separated.")
@click.option("--queries", default=200, show_default=True, type=click.IntRange(10))
@click.option("--pq-bytes", default=64, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True)
def index(n: int, dim: int, vectors: str, kinds: str, queries: int, pq_bytes: int, as_json: bool) -> None:
    """Build seconds, bytes per vector, recall@100 against exact search, queries/s and p50/p99 latency of the
    exact scan, IVF-PQ (trained once, added per partition, merged on disk, re-ranked exactly) and HNSW."""
    from aion_assets.search.index_bench import bench_index

    rows = bench_index(n, dim, vector_kinds=_names(vectors), kinds=_names(kinds), n_queries=queries,
                       pq_bytes=pq_bytes)
    if as_json:
        click.echo(json.dumps(rows))
    _, warehouse = _stack()
    for row in rows:
        label = f"{row['vectors']}.{row['kind']}.{row['setting'].replace(' ', '_')}.n{row['n']}.d{row['d']}"
        for metric, unit in (("build_s", "s"), ("bytes_per_vector", "bytes"), ("recall_at_k", "recall@100"),
                             ("queries_per_s", "queries/s"), ("p50_ms", "ms"), ("p99_ms", "ms")):
            warehouse.record_bench("index", f"{label}.{metric}", row[metric], unit)
        if not as_json:
            click.echo(f"{row['vectors']:<10} {row['kind']:<6} {row['setting']:<32} build {row['build_s']:8.1f} s  "
                       f"{row['bytes_per_vector']:6.0f} B/vec  recall@100 {row['recall_at_k']:.3f}  "
                       f"{row['queries_per_s']:8.1f} q/s  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms")


def _names(listed: str) -> list[str]:
    return [name.strip() for name in listed.split(",") if name.strip()]


@bench.command()
@click.option("--requests", "max_requests", default=400, show_default=True, type=click.IntRange(1),
              help="At most this many requests per level.")
@click.option("--seconds", "max_seconds", default=20.0, show_default=True, help="At most this long per level.")
@click.option("--clients", default="1,8,32", show_default=True, help="Concurrency levels, comma-separated.")
@click.option("--json", "as_json", is_flag=True)
def app(max_requests: int, max_seconds: float, clients: str, as_json: bool) -> None:
    """requests/s and p50/p99 latency of /api/search at 1, 8 and 32 concurrent clients, against `aion serve`
    started on a loopback port over this stack (client and server share the cores)."""
    from aion_assets.app.bench import bench_app
    from aion_assets.app.process import running_server
    from aion_assets.search.artifacts import ModelVersionMissing, read_latest_pointer

    lake, _ = _stack()
    try:
        read_latest_pointer(lake)
    except ModelVersionMissing as error:
        click.echo(str(error), err=True)
        sys.exit(2)
    levels = [int(level) for level in clients.split(",") if level.strip()]
    with running_server(["--log-source", "bench"]) as base_url:
        rows = bench_app(base_url, levels=levels, max_requests=max_requests, max_seconds=max_seconds)
    figures = {f"{r['workload']}_c{r['clients']}_{m}": r[m] for r in rows for m in ("requests_per_s", "p50_ms",
                                                                                     "p99_ms", "errors")}
    _report("app", figures, [
        (f"{r['workload']}.clients_{r['clients']}.{metric}", r[key], unit) for r in rows
        for metric, key, unit in (("requests_per_s", "requests_per_s", "requests/s"), ("latency_p50", "p50_ms", "ms"),
                                  ("latency_p99", "p99_ms", "ms"))
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


@bench.command()
@click.option("--objects", default=120, show_default=True, help="Objects copied from each release (a small demo).")
@click.option("--json", "as_json", is_flag=True)
def recover(objects: int, as_json: bool) -> None:
    """Seconds from `kill -9` of a demo (while image_base_embeddings holds the gpu slot) to the next demo's first
    step, and that resumed demo's wall time beside an uninterrupted one's (scratch stacks; tiny training)."""
    import tempfile
    from pathlib import Path

    releases_dir = get_settings().releases_dir
    if releases_dir is None:
        click.echo("no release folder: set AION_RELEASES_DIR", err=True)
        sys.exit(2)
    with tempfile.TemporaryDirectory(prefix="aion-bench-recover-") as scratch:
        figures = _bench_recover(releases_dir, Path(scratch), objects)
    _report("recover", figures, [
        ("kill_to_next_first_step_s", figures["kill_to_next_first_step_s"], "s"),
        ("resumed_demo_wall_s", figures["resumed_demo_wall_s"], "s"),
        ("uninterrupted_demo_wall_s", figures["uninterrupted_demo_wall_s"], "s"),
        ("resumed_over_uninterrupted", figures["resumed_over_uninterrupted"], "ratio"),
    ], as_json)


# A tiny training set-up: the benchmark measures recovery, not training.
BENCH_TRAINING = {"seeds": [0], "epochs": 4, "batch_size": 32, "hidden_dim": 128, "out_dim": 64}


def _bench_recover(releases_dir, scratch, objects: int) -> dict:
    import shutil
    import signal
    import subprocess
    import time
    from pathlib import Path

    import dagster as dg
    import polars as pl

    from aion_assets.platform.instance import ensure_dagster_home
    from aion_assets.platform.settings import isolated_stack_env

    releases = scratch / "releases"
    for source in sorted(path for path in releases_dir.iterdir() if (path / "catalog.csv").is_file()):
        target = releases / source.name
        (target / "images").mkdir(parents=True)
        catalog = pl.read_csv(source / "catalog.csv", infer_schema_length=0).head(objects)
        for image in catalog["image"]:
            shutil.copyfile(source / image, target / image)
        catalog.write_csv(target / "catalog.csv")
        shutil.copyfile(source / "manifest.json", target / "manifest.json")
    config_file = scratch / "tiny.json"
    config_file.write_text(json.dumps({"alignment_model": BENCH_TRAINING}))
    aion = [str(Path(sys.executable).parent / "aion"), "demo", "--config-file", str(config_file)]

    def env(home: str) -> dict[str, str]:
        return isolated_stack_env(AION_HOME=str(scratch / home), AION_RELEASES_DIR=str(releases))

    def demo(home: str) -> subprocess.Popen:
        return subprocess.Popen(aion, env=env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_for(found, timeout_s: float = 600.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if value := found():
                return value
            time.sleep(0.05)
        raise click.ClickException("timed out: see the scratch stack's runs")

    started = time.perf_counter()
    if demo("uninterrupted").wait() != 0:
        raise click.ClickException("the uninterrupted demo failed")
    uninterrupted_s = time.perf_counter() - started

    # The instance (its sqlite schema) is made here before the demo starts: this process polls it while the
    # demo runs, and two processes creating one new schema at once race.
    ensure_dagster_home(scratch / "killed" / "dagster")
    instance = dg.DagsterInstance.from_config(str(scratch / "killed" / "dagster"))
    victim = demo("killed")

    def victim_holds_gpu() -> bool:
        if victim.poll() is not None:
            raise click.ClickException(f"the demo to kill ended by itself (exit {victim.returncode})")
        return bool(instance.event_log_storage.get_concurrency_info("gpu").claimed_slots)

    wait_for(victim_holds_gpu)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.perf_counter()
    victim.wait()
    runs_before = {run.run_id for run in instance.get_runs()}
    resumed = demo("killed")

    def first_step_of_new_run() -> bool:
        return any(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
                   for run in instance.get_runs() if run.run_id not in runs_before)

    wait_for(first_step_of_new_run)
    first_step_s = time.perf_counter() - killed_at
    if resumed.wait() != 0:
        raise click.ClickException("the resumed demo failed")
    resumed_s = time.perf_counter() - killed_at
    return {"objects_per_release": objects, "kill_to_next_first_step_s": first_step_s,
            "resumed_demo_wall_s": resumed_s, "uninterrupted_demo_wall_s": uninterrupted_s,
            "resumed_over_uninterrupted": resumed_s / uninterrupted_s}


commands = [bench]
