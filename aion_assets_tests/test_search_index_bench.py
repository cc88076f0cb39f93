"""`aion bench index` on a toy size: the exact scan is the truth, IVF-PQ's recall comes from its structure, and
every figure lands in bench_results. (Speed is read from the rows, never asserted.)"""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from aion_assets.search.index_bench import bench_index, largest_n, make_vectors


def test_structured_vectors_are_unit_and_far_from_isotropic() -> None:
    structured, isotropic = make_vectors("structured", 4000, 64, 0), make_vectors("isotropic", 4000, 64, 0)
    for vectors in (structured, isotropic):
        assert abs(float((vectors ** 2).sum(axis=1).mean()) - 1.0) < 1e-5

    def top_share(v: np.ndarray) -> float:  # share of the variance in the 32 leading directions
        values = np.sort(np.linalg.eigvalsh(np.cov(v.T)))[::-1]
        return float(values[:32].sum() / values.sum())

    assert top_share(structured) > 0.8 > 0.6 > top_share(isotropic)


def test_index_kinds_against_the_exact_scan() -> None:
    rows = bench_index(12_000, 32, n_queries=30, k=10, pq_bytes=8, opq_iterations=2)
    by = {(r["vectors"], r["kind"], r["setting"]): r for r in rows}
    assert {r["kind"] for r in rows} == {"flat", "ivfpq", "hnsw"}
    assert by[("structured", "flat", "exact")]["recall_at_k"] == 1.0
    assert by[("structured", "flat", "exact")]["bytes_per_vector"] == 4 * 32
    ivfpq = {v: max(r["recall_at_k"] for r in rows if r["vectors"] == v and r["kind"] == "ivfpq")
             for v in ("structured", "isotropic")}
    assert ivfpq["structured"] >= 0.9 and ivfpq["structured"] > ivfpq["isotropic"]
    assert all(r["bytes_per_vector"] == 8 for r in rows if r["kind"] == "ivfpq")
    assert all(r["queries_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)


def test_the_command_writes_its_rows(aion_home, warehouse) -> None:
    from aion_assets.cli import main

    result = CliRunner().invoke(main, ["bench", "index", "--n", "12000", "--dim", "32", "--vectors", "structured",
                                       "--kinds", "flat", "--queries", "10"])
    assert result.exit_code == 0, result.output
    rows = warehouse.query("SELECT metric, value, unit FROM bench_results WHERE name = 'index'")
    metrics = dict(zip(rows["metric"], rows["value"]))
    assert metrics["structured.flat.exact.n12000.d32.recall_at_k"] == 1.0
    assert metrics["structured.flat.exact.n12000.d32.bytes_per_vector"] == 128


def test_the_largest_n_fits_the_memory_given() -> None:
    assert largest_n(256, 24 * 2**30) == 5_000_000  # 24 GiB / (3 copies x 1 KiB) = 8.4M -> 5M
    assert largest_n(256, 2**30) == 200_000
