"""`aion releases from-coords`: a release folder from a list of coordinates (the `releases` group adds it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from aion_assets.platform.settings import DEFAULT_CUTOUT_SERVICE_URL

# Not imported from from_coords: `aion` imports every command at start-up and from_coords pulls in httpx, polars
# and Pillow (a third of a second); the test checks these match from_coords' constants.
DEFAULT_SERVICE_URL = DEFAULT_CUTOUT_SERVICE_URL
SERVICE_URL_ENV = "AION_CUTOUT_SERVICE_URL"
DEFAULT_PIXSCALE = 0.262

# Exit status when the release was written but some objects could not be downloaded (listed in failed.csv).
EXIT_PARTIAL = 3


@click.command("from-coords")
@click.argument("catalog", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--layer", default="ls-dr10", show_default=True, help="Legacy Survey viewer layer.")
@click.option("--size", default=160, show_default=True, type=click.IntRange(16, 512), help="Cutout side, pixels.")
@click.option("--pixscale", default=DEFAULT_PIXSCALE, show_default=True, type=float, help="Arcsec per pixel.")
@click.option("--release", default=None, help="Release name (default: OUT_DIR's folder name).")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Requests in flight at once.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, type=float, help="Seconds per request.")
@click.option("--max-attempts", default=6, show_default=True, type=click.IntRange(1, 50),
              help="Tries per cutout before it is listed in failed.csv.")
@click.option("--backoff", "backoff_s", default=0.5, show_default=True, type=float,
              help="First retry delay in seconds; doubles each retry, with jitter.")
@click.option("--service-url", default=None,
              help=f"Cutout endpoint [default: {SERVICE_URL_ENV}, else {DEFAULT_SERVICE_URL}].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of progress and text.")
def from_coords(catalog: Path, out_dir: Path, layer: str, size: int, pixscale: float, release: str | None,
                concurrency: int, timeout_s: float, max_attempts: int, backoff_s: float, service_url: str | None,
                as_json: bool) -> None:
    """Build a release in OUT_DIR from CATALOG (CSV with ra, dec, optional object_id and label columns).

    Downloads one JPEG cutout per row from the Legacy Survey cutout service. Re-running the same command resumes:
    cutouts already present and valid are kept, failed ones are tried again; manifest.json is written last.
    """
    from aion_assets.cutouts.from_coords import (
        FAILED,
        CoordinateCatalogError,
        FetchOutcome,
        ServiceConfig,
        build_release,
        configured_service_url,
    )

    service_url = service_url or configured_service_url()

    config = ServiceConfig(url=service_url, layer=layer, pixscale=pixscale, size=size, concurrency=concurrency,
                           timeout_s=timeout_s, max_attempts=max_attempts, backoff_base_s=backoff_s)
    bar = None

    def on_plan(pending: int, present: int) -> None:
        nonlocal bar
        if as_json:
            return
        click.echo(f"{present} cutout(s) already present, {pending} to download from {service_url}")
        bar = click.progressbar(length=pending, label="downloading", show_pos=True, show_eta=True,
                                file=sys.stderr)
        bar.__enter__()

    def on_outcome(outcome: "FetchOutcome") -> None:
        if bar is not None and outcome.status != "skipped":
            bar.update(1)

    try:
        summary = build_release(catalog, out_dir, config, release=release, on_outcome=on_outcome, on_plan=on_plan)
    except CoordinateCatalogError as error:
        raise click.UsageError(str(error)) from error
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished cutouts are kept; run the same command again to resume", err=True)
        sys.exit(130)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)

    if as_json:
        click.echo(json.dumps({
            "release": summary.release, "out_dir": str(summary.out_dir), "requested": summary.requested,
            "downloaded": summary.downloaded, "skipped": summary.skipped, "failed": len(summary.failed),
            "http_requests": summary.http_requests, "bytes": summary.bytes_downloaded,
            "seconds": round(summary.seconds, 3), "manifest_written": summary.manifest_written,
        }))
    else:
        rate = summary.downloaded / summary.seconds if summary.seconds > 0 else 0.0
        click.echo(f"release {summary.release!r} in {summary.out_dir}: {summary.downloaded} downloaded, "
                   f"{summary.skipped} already present, {len(summary.failed)} failed "
                   f"({summary.http_requests} requests, {summary.bytes_downloaded / 1e6:.1f} MB, "
                   f"{summary.seconds:.1f} s, {rate:.1f} cutouts/s)")
        for object_id, reason in summary.failed[:5]:
            click.echo(f"  failed {object_id}: {reason}")
        if summary.failed:
            click.echo(f"  all failures with reasons: {summary.out_dir / FAILED}; run again to retry them")
        if not summary.manifest_written:
            click.echo("  no cutout could be downloaded: no manifest written, the folder is not a release yet")
    if summary.failed:
        sys.exit(EXIT_PARTIAL)


if __name__ == "__main__":  # lets a test (or a user without the console script) run it as a module
    from_coords()
