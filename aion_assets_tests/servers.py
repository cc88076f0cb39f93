"""A real `dagster-webserver` over the stack the environment names, on a free loopback port, for tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from aion_assets.app.process import free_port
from aion_assets.platform.settings import PROJECT_ROOT, get_settings, subprocess_env

BIN = Path(sys.executable).parent


def asset_keys(base_url: str) -> set[str]:
    """The asset keys the webserver's GraphQL API lists (empty while the code location loads)."""
    request = urllib.request.Request(
        f"{base_url}/graphql", data=json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = json.load(response)
    return {"/".join(node["assetKey"]["path"]) for node in (payload.get("data") or {}).get("assetNodes") or []}


@contextlib.contextmanager
def running_webserver(timeout_s: float = 240) -> Iterator[str]:
    """Start the webserver on the settings' Dagster instance; yield its URL once the code location has loaded."""
    from aion_assets.platform.instance import ensure_dagster_home

    settings = get_settings()
    ensure_dagster_home(settings.dagster_home, settings.profile)
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1",
         "-p", str(port)],
        cwd=PROJECT_ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"webserver exited: {server.stderr.read()[-2000:]}")
            with contextlib.suppress(OSError):
                if asset_keys(base_url):
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the webserver listed no assets within {timeout_s:.0f} s")
            time.sleep(1)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextlib.contextmanager
def running_daemon(log_path: Path) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` on the settings' instance (its sensors, the automation sensor and the run queue),
    in its own process group: stopping it also stops the code server and the runs it launched."""
    settings = get_settings()
    from aion_assets.platform.instance import ensure_dagster_home

    ensure_dagster_home(settings.dagster_home, settings.profile)
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
            cwd=PROJECT_ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield daemon
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=30)
            # whatever of its group outlived it (a code server it left behind when a test failed mid-run)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
