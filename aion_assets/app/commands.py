"""`aion serve`: the search page and JSON API on loopback (or where told)."""

from __future__ import annotations

import click


@click.command(help="Serve the search page and JSON API (/openapi.json describes it) from the latest model "
               "version; a newer one is picked up without a restart.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; 0.0.0.0 exposes the app to the network.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535))
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option("--log-source", default="app", hidden=True, help="Who searched, in search_log (the benchmark's "
              "server says 'bench', so its load is not counted as people's searches).")
def serve(host: str, port: int, access_log: bool, log_source: str) -> None:
    import uvicorn

    from aion_assets.app.stack import app_from_environment

    app = app_from_environment(log_source=log_source)
    click.echo(f"serving on http://{host}:{port}/  (API description: /openapi.json)")
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="warning")
