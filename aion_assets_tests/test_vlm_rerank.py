"""Re-ranking search candidates with the VLM (real SDK against the local fake server)."""

from __future__ import annotations

import numpy as np
import pytest

from aion_assets.platform.warehouse import Warehouse, fetch_polars
from aion_assets.vlm.client import make_client
from aion_assets.vlm.render import png_bytes
from aion_assets.vlm.rerank import MissingApiKey, rerank, save_rerank
from aion_assets_tests.fake_anthropic import Reply, brightness_score


def grey(level: int) -> bytes:
    return png_bytes(np.full((16, 16, 3), level, dtype=np.uint8))


# Search order (similarity descending) is the reverse of brightness, which is what the fake judge scores.
CANDIDATES = [
    ("rel", "a", 0.90, grey(20)),
    ("rel", "b", 0.80, grey(120)),
    ("rel", "c", 0.70, grey(250)),
    ("rel", "d", 0.60, grey(120)),  # ties with b on score: b's higher similarity keeps it first
    ("rel", "e", 0.50, grey(200)),
]


def test_rerank_orders_by_score_with_similarity_breaking_ties(fake_anthropic, dummy_api_key, warehouse: Warehouse):
    client = make_client(fake_anthropic.base_url, timeout_s=5, max_retries=1)
    rows = rerank("merging galaxies with tidal tails", CANDIDATES, client, samples=2, concurrency=3)
    assert fake_anthropic.count("POST", "/v1/messages") == 2 * len(CANDIDATES)
    assert [r.object_id for r in rows] == ["c", "e", "b", "d", "a"]
    assert [r.rank_after for r in rows] == [1, 2, 3, 4, 5]
    assert {r.object_id: r.rank_before for r in rows} == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    assert [r.score for r in rows] == [float(brightness_score(c[3])) for c in
                                       sorted(CANDIDATES, key=lambda c: (-brightness_score(c[3]), -c[2]))]
    assert rows[0].answer == "yes" and rows[-1].answer == "no" and all(r.samples_ok == 2 for r in rows)
    assert all(r.cost_usd > 0 for r in rows)

    assert save_rerank(warehouse, rows) == 5
    with warehouse.connect() as con:
        stored = fetch_polars(con, "SELECT query, object_id, rank_before, rank_after, score, model, cost_usd "
                                   "FROM rerank_results ORDER BY rank_after")
    assert stored["object_id"].to_list() == ["c", "e", "b", "d", "a"]
    assert set(stored["query"]) == {"merging galaxies with tidal tails"}


def test_a_candidate_without_a_valid_judgement_goes_last(fake_anthropic, dummy_api_key):
    client = make_client(fake_anthropic.base_url, timeout_s=5, max_retries=0)
    fake_anthropic.script(Reply.bad_tool_input(), Reply.bad_tool_input())  # the first candidate, asked twice
    rows = rerank("ring galaxy", CANDIDATES[:3], client, samples=1, concurrency=1)
    assert fake_anthropic.count("POST", "/v1/messages") == 4
    assert rows[-1].object_id == "a" and rows[-1].score is None and rows[-1].samples_ok == 0


def test_without_a_key_rerank_refuses_before_sending_or_writing(fake_anthropic, monkeypatch, warehouse: Warehouse):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(MissingApiKey, match="ANTHROPIC_API_KEY"):
        rerank("spiral galaxy", CANDIDATES, client=None)
    assert fake_anthropic.received == []
    assert "rerank_results" not in warehouse.tables()
