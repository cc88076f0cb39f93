"""`aion releases`: what the watched folder holds, and `aion releases from-coords` to build a release."""

from __future__ import annotations

import json
from pathlib import Path

import click


def _releases_root(explicit: str | None) -> Path | None:
    from aion_assets.platform.settings import default_releases_dir

    if explicit:
        return Path(explicit).expanduser().resolve()
    return default_releases_dir()


def release_rows(root: Path | None) -> list[dict]:
    """One row per release folder: name, objects, shards, status ok/broken and the reason."""
    from aion_assets.cutouts.releases import ReleaseError, discover_release_dirs, env_shard_size, load_release

    rows: list[dict] = []
    shard_size = env_shard_size()
    for folder in discover_release_dirs(root):
        try:
            release = load_release(folder, shard_size)
        except ReleaseError as error:
            rows.append({"folder": folder.name, "release": error.release, "objects": None, "shards": None,
                         "labels": [], "status": "broken", "reason": error.reason, "fingerprint": None})
            continue
        rows.append({
            "folder": folder.name, "release": release.name, "objects": release.n_objects,
            "shards": len(release.shard_keys(shard_size)), "labels": release.label_columns,
            "status": "ok", "reason": "", "fingerprint": release.fingerprint,
            "format": "hdf5" if release.hdf5 else str(release.manifest.get("image_format", "")),
        })
    return rows


@click.group(name="releases", invoke_without_command=True)
@click.option("--dir", "releases_dir", default=None, help="Watched folder (default: AION_RELEASES_DIR).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def releases(ctx: click.Context, releases_dir: str | None, as_json: bool) -> None:
    """List the survey releases in the watched folder (objects, shards, ok/broken with the reason)."""
    if ctx.invoked_subcommand is not None:
        return
    root = _releases_root(releases_dir)
    rows = release_rows(root)
    if as_json:
        click.echo(json.dumps({"releases_dir": str(root) if root else None, "releases": rows}, indent=2))
        return
    if root is None:
        click.echo("no watched folder: set AION_RELEASES_DIR to a folder of release folders "
                   "(each with manifest.json and catalog.csv)")
        return
    from aion_assets.cutouts.releases import env_shard_size

    click.echo(f"releases in {root} (shard size {env_shard_size()}):")
    if not rows:
        click.echo("  (none: a release is a subfolder with manifest.json)")
    width = max([len(r["release"] or r["folder"]) for r in rows] + [7])
    for row in rows:
        name = row["release"] or row["folder"]
        if row["status"] == "ok":
            click.echo(f"  {name:<{width}}  {row['objects']:>9,} objects  {row['shards']:>4} shard(s)  ok")
        else:
            click.echo(f"  {name:<{width}}  {'-':>9}          {'-':>4}           broken: {row['reason']}")


def _from_coords_command() -> click.Command | None:
    # Written by another part of the project; the group works (without the subcommand) until it exists.
    try:
        from aion_assets.cutouts.from_coords_cli import from_coords
    except ImportError:
        return None
    return from_coords


_from_coords = _from_coords_command()
if _from_coords is not None:
    releases.add_command(_from_coords, name="from-coords")

commands: list[click.Command] = [releases]
