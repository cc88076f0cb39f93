"""`bench_vlm` runs end to end against the fake server, and concurrency really overlaps requests."""

from __future__ import annotations

from aion_assets.vlm.bench import bench_rows, bench_vlm


def test_bench_vlm_concurrency_overlaps_latency() -> None:
    result = bench_vlm(latency_s=0.05, concurrencies=(1, 4), n=8)
    serial, parallel = result["descriptions_per_s"]["1"], result["descriptions_per_s"]["4"]
    assert serial <= 1 / 0.05 * 1.05  # cannot beat the server's latency one at a time
    assert parallel > 2 * serial
    assert result["overhead_ms_zero_latency"] > 0
    rows = bench_rows(result)
    assert {metric for _, metric, _, _ in rows} >= {"descriptions_per_s@c1,latency50ms", "client_overhead@latency0ms"}
