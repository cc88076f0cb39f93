"""`aion bench vlm`: throughput of the live describer against the local fake server.

The fake server answers every ``/v1/messages`` call after ``latency_s`` (a stand-in for the model's generation
time), so descriptions/s at concurrency c would ideally be c / latency_s; what falls short of that is the client
stack (request building with a base64 PNG, the SDK, HTTP, parsing, the cache) and the server. The per-request
overhead is measured at concurrency 1: wall time per description minus the set latency, with the latency set
and with it at zero.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from aion_assets.vlm.describers import AnthropicConfig, AnthropicDescriber, DescribeRequest, MemoryVlmStore
from aion_assets.vlm.fake_server import FakeAnthropic
from aion_assets.vlm.render import png_bytes


def _bench_png(seed: int = 0, size: int = 160) -> bytes:
    """A galaxy-like 160 px cutout (a smooth blob in sky noise): about the PNG size of a real one."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - size / 2
    blob = 200 * np.exp(-(x**2 + (1.8 * y) ** 2) / (2 * 12.0**2))
    image = np.clip(blob[..., None] * np.array([1.0, 0.85, 0.7]) + rng.normal(20, 8, (size, size, 3)), 0, 255)
    return png_bytes(image.astype(np.uint8))


def _run(base_url: str, concurrency: int, n: int, png: bytes, tag: str) -> float:
    """Seconds to describe ``n`` distinct images at ``concurrency``, through the full describer."""
    import anthropic

    client = anthropic.Anthropic(api_key="fake-bench-key", base_url=base_url, max_retries=0, timeout=60.0)
    config = AnthropicConfig(base_url=base_url, concurrency=concurrency, batch_threshold=10**9, budget_usd=1e9)
    describer = AnthropicDescriber(config, store=MemoryVlmStore(), client=client)
    requests = [DescribeRequest("bench", f"{tag}-{i}", hashlib.sha256(f"{tag}-{i}".encode()).hexdigest(), png)
                for i in range(n)]
    start = time.perf_counter()
    outcome = describer.describe(requests)
    elapsed = time.perf_counter() - start
    client.close()
    if outcome.stats.successes != n:
        raise RuntimeError(f"bench run failed: {outcome.stats.failures} failures, first: "
                           f"{outcome.failures['reason'].head(1).to_list()}")
    return elapsed


def bench_vlm(
    base_url: str | None = None,
    latency_s: float = 0.1,
    concurrencies: Sequence[int] = (1, 4, 16, 64),
    n: int = 128,
) -> dict[str, Any]:
    """Descriptions/s per concurrency and the client stack's overhead per request (ms).

    ``base_url``: a running fake server whose latency is ``latency_s``; None starts one here (and a second one
    with zero latency for the overhead figure)."""
    png = _bench_png()
    own = None
    if base_url is None:
        own = FakeAnthropic(latency_s=latency_s).start()
        base_url = own.base_url
    try:
        _run(base_url, 1, 2, png, "warmup")  # imports, first connection
        rates: dict[int, float] = {}
        for concurrency in concurrencies:
            count = max(n, 2 * concurrency) if concurrency > 1 else max(8, min(n, int(4 / max(latency_s, 0.01))))
            rates[concurrency] = count / _run(base_url, concurrency, count, png, f"c{concurrency}")
        serial_s = 1.0 / rates[min(concurrencies)] if 1 in concurrencies else None
    finally:
        if own is not None:
            own.stop()
    with FakeAnthropic(latency_s=0.0) as zero:
        count = 32
        zero_latency_s = _run(zero.base_url, 1, count, png, "zero") / count
    return {
        "latency_s": latency_s,
        "png_bytes": len(png),
        "descriptions_per_s": {str(c): round(r, 2) for c, r in rates.items()},
        "ideal_per_s": {str(c): round(c / latency_s, 2) for c in rates} if latency_s > 0 else {},
        "overhead_ms_per_request": round((serial_s - latency_s) * 1000, 2) if serial_s is not None else None,
        "overhead_ms_zero_latency": round(zero_latency_s * 1000, 2),
    }


def bench_rows(result: dict[str, Any]) -> list[tuple[str, str, float, str]]:
    """(name, metric, value, unit) rows for ``Warehouse.record_bench`` from a ``bench_vlm`` result."""
    latency_ms = round(result["latency_s"] * 1000)
    rows = [("vlm", f"descriptions_per_s@c{c},latency{latency_ms}ms", float(v), "descriptions/s")
            for c, v in result["descriptions_per_s"].items()]
    if result.get("overhead_ms_per_request") is not None:
        rows.append(("vlm", f"client_overhead@latency{latency_ms}ms", float(result["overhead_ms_per_request"]),
                     "ms/request"))
    rows.append(("vlm", "client_overhead@latency0ms", float(result["overhead_ms_zero_latency"]), "ms/request"))
    return rows
