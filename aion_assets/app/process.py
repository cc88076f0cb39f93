"""`aion serve` as a child process on a free loopback port: what the benchmark loads and the tests drive."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from aion_assets.platform.settings import subprocess_env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server(extra_args: Sequence[str] = (), env: dict[str, str] | None = None, start_timeout_s: float = 120.0,
                   log_path: Path | None = None) -> Iterator[str]:
    """Start `aion serve`, wait until /api/health answers, yield its base URL; stop it (SIGTERM: the server
    writes its pending search_log rows on the way out) when the block ends."""
    port = free_port()
    command = [sys.executable, "-c", "from aion_assets.cli import main; main()", "serve", "--port", str(port),
               *extra_args]
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(open(log_path, "ab")) if log_path else subprocess.DEVNULL
        child = subprocess.Popen(command, env=env or subprocess_env(), stdout=output, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(child, base_url, start_timeout_s, log_path)
            yield base_url
        finally:
            _stop(child)


def _wait_until_up(child: subprocess.Popen, base_url: str, timeout_s: float, log_path: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            shown = log_path.read_text()[-2000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"aion serve exited with status {child.returncode} before answering. {shown}")
        try:
            if httpx.get(f"{base_url}/api/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"aion serve did not answer within {timeout_s:.0f} s")


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
