"""`aion bench app`: requests/s and latency of /api/search under concurrent clients, on loopback.

Each level runs ``clients`` concurrent loops (asyncio, one HTTP/1.1 connection each) until ``max_requests`` are
answered or ``max_seconds`` pass, after a short warm-up. Two workloads: ``unique`` sends a text never sent before
(every request encodes: the worst case) and ``repeated`` cycles a few popular queries (the server's query cache
answers the encode; what a page of users refining filters looks like). Client and server share the machine's
cores, so the figures are a floor for a server on its own host.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import numpy as np

QUERIES = ("a ring galaxy", "an edge-on disk galaxy", "a merger with tidal tails", "a strong gravitational lens",
           "a barred spiral galaxy", "a smooth round elliptical galaxy", "a blue irregular galaxy with clumps",
           "a galaxy with a dust lane", "two galaxies close together", "a face-on spiral with loose arms")


def _texts(workload: str, prefix: str) -> Iterator[str]:
    if workload == "repeated":
        return itertools.cycle(QUERIES)
    return (f"{QUERIES[i % len(QUERIES)]} ({prefix} {i})" for i in itertools.count())


async def _load(base_url: str, clients: int, workload: str, max_requests: int, max_seconds: float,
                k: int) -> dict[str, Any]:
    texts = _texts(workload, f"c{clients}")
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + max_seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while len(latencies) + errors < max_requests and time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await client.get("/api/search", params={"q": next(texts), "k": k})
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:
        began = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        wall = time.perf_counter() - began
    ms = np.asarray(latencies) * 1000.0
    return {"clients": clients, "workload": workload, "requests": len(latencies), "errors": errors,
            "requests_per_s": len(latencies) / wall if wall else 0.0,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan")}


def bench_app(base_url: str, levels: Sequence[int] = (1, 8, 32), workloads: Sequence[str] = ("unique", "repeated"),
              max_requests: int = 400, max_seconds: float = 20.0, k: int = 24, warmup: int = 20) -> list[dict]:
    """One row per (workload, clients): requests, errors, requests_per_s, p50_ms, p99_ms."""
    for workload in workloads:
        if workload not in ("unique", "repeated"):
            raise ValueError(f"unknown workload {workload!r}: unique or repeated")
    asyncio.run(_load(base_url, 1, "repeated", warmup, max_seconds, k))  # connections, caches, first touches
    return [asyncio.run(_load(base_url, clients, workload, max_requests, max_seconds, k))
            for workload in workloads for clients in levels]
