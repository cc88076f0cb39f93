"""The live describer against a real local HTTP server (the real anthropic SDK, pointed at it with base_url).

Faults are scripted per request; counts of what the server saw prove retries happen and stop, and that nothing is
paid for twice. The store is the real DuckDB warehouse.
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import polars as pl
import pytest

from aion_assets.platform.warehouse import Warehouse
from aion_assets.vlm.describers import AnthropicConfig, AnthropicDescriber, DescribeRequest
from aion_assets.vlm.render import png_bytes
from aion_assets.vlm.store import WarehouseVlmStore
from aion_assets_tests.fake_anthropic import FakeAnthropic, Reply

MESSAGES = "/v1/messages"
BATCHES = "/v1/messages/batches"


class SimulatedKill(BaseException):
    """What a SIGKILL / Ctrl-C does to a run: not an Exception, nothing catches it."""


def requests(n: int, start: int = 0) -> list[DescribeRequest]:
    out = []
    for i in range(start, start + n):
        png = png_bytes(np.full((8, 8, 3), i % 256, dtype=np.uint8))
        out.append(DescribeRequest("test-release", f"obj-{i}", hashlib.sha256(png).hexdigest(), png))
    return out


def config(server: FakeAnthropic, **overrides) -> AnthropicConfig:
    base = dict(base_url=server.base_url, max_retries=3, timeout_s=5.0, concurrency=1, poll_interval_s=0.01,
                batch_threshold=1000)
    return AnthropicConfig(**{**base, **overrides})


@pytest.fixture
def store(warehouse: Warehouse) -> WarehouseVlmStore:
    return WarehouseVlmStore(warehouse)


def test_rate_limit_5xx_and_overload_are_retried_honouring_retry_after(fake_anthropic, dummy_api_key, store):
    fake_anthropic.script(Reply.rate_limited(retry_after_s=0.3), Reply.server_error(), Reply.overloaded())
    started = time.monotonic()
    outcome = AnthropicDescriber(config(fake_anthropic), store).describe(requests(1))
    assert time.monotonic() - started >= 0.3  # the SDK waited as the 429 asked
    assert [h.status for h in fake_anthropic.hits] == [429, 500, 529, 200]
    assert outcome.rows.height == 1 and outcome.failures.height == 0
    assert outcome.stats.api_requests == 1 and outcome.stats.input_tokens == fake_anthropic.input_tokens


def test_retries_stop_and_leave_a_failure_row(fake_anthropic, dummy_api_key, store):
    fake_anthropic.script(*[Reply.overloaded()] * 10)
    outcome = AnthropicDescriber(config(fake_anthropic, max_retries=2), store).describe(requests(1))
    assert fake_anthropic.count("POST", MESSAGES) == 3  # first try + max_retries, then no more
    assert outcome.rows.height == 0
    failure = outcome.failures.row(0, named=True)
    assert failure["status"] == "api_error" and "529" in failure["reason"] and "overloaded" in failure["reason"]


def test_a_hung_response_times_out_and_is_retried(fake_anthropic, dummy_api_key, store):
    fake_anthropic.script(Reply.hang(3.0), Reply.hang(3.0), Reply.hang(3.0))
    fast = config(fake_anthropic, timeout_s=0.4, max_retries=1)
    outcome = AnthropicDescriber(fast, store).describe(requests(2))
    # Image 1: two hung attempts -> timeout failure. Image 2: one hung attempt, then an answer.
    assert fake_anthropic.count("POST", MESSAGES) == 4
    assert outcome.failures.select("object_id", "status").rows() == [("obj-0", "timeout")]
    assert outcome.rows["object_id"].to_list() == ["obj-1"]


def test_an_unparseable_answer_is_retried_once_then_recorded_as_a_failure(fake_anthropic, dummy_api_key, store):
    fake_anthropic.script(Reply.malformed(), Reply.bad_tool_input(), Reply.bad_tool_input(), Reply.success())
    outcome = AnthropicDescriber(config(fake_anthropic), store).describe(requests(2))
    assert fake_anthropic.count("POST", MESSAGES) == 4  # two per image: never a third
    failure = outcome.failures.row(0, named=True)
    assert failure["object_id"] == "obj-0" and failure["status"] == "unparseable"
    assert "malformed JSON" in failure["reason"] and "'description' missing" in failure["reason"]
    # The second image parsed on its retry; its row carries both attempts' cost.
    row = outcome.rows.row(0, named=True)
    assert row["object_id"] == "obj-1" and row["input_tokens"] == 2 * fake_anthropic.input_tokens
    assert row["description"] and row["summary"]
    assert store.cached(row["model"], "v1", [requests(2)[0].image_sha256]) == {}  # failures are not cached


def test_cache_sends_only_what_is_missing(fake_anthropic, dummy_api_key, store, warehouse):
    first = requests(3)
    AnthropicDescriber(config(fake_anthropic, concurrency=3), store).describe(first)
    assert fake_anthropic.count("POST", MESSAGES) == 3
    # A new run (new describer, same warehouse) with the same three, one new image, and a duplicate image
    # under another object id.
    duplicate = DescribeRequest("other-release", "same-pixels", first[0].image_sha256, first[0].png)
    outcome = AnthropicDescriber(config(fake_anthropic, concurrency=3), WarehouseVlmStore(warehouse)).describe(
        first + requests(1, start=3) + [duplicate])
    assert fake_anthropic.count("POST", MESSAGES) == 4
    assert outcome.stats.cache_hits == 4 and outcome.stats.api_requests == 1
    assert outcome.rows.height == 5 and outcome.failures.height == 0
    cached_rows = outcome.rows.filter(pl.col("object_id").is_in(["obj-0", "same-pixels"]))
    assert cached_rows["input_tokens"].to_list() == [fake_anthropic.input_tokens] * 2  # what it cost when paid
    assert warehouse.query("SELECT count(*) AS n FROM vlm_cache")["n"][0] == 4


def test_budget_stops_before_the_request_that_could_pass_it_and_keeps_rows(fake_anthropic, dummy_api_key, store):
    cfg = config(fake_anthropic, budget_usd=0.02)
    # Each request may cost up to 0.012 (1000 in, 600 out at 3/15 per MTok); each really costs 0.00291.
    assert cfg.request_estimate_usd() == pytest.approx(0.012)
    outcome = AnthropicDescriber(cfg, store).describe(requests(5))
    assert outcome.stats.budget_stopped and outcome.stats.not_attempted == 2
    assert fake_anthropic.count("POST", MESSAGES) == 3 == outcome.rows.height
    assert outcome.failures.height == 0
    assert outcome.stats.cost_usd == pytest.approx(3 * 0.00291) and outcome.stats.cost_usd <= cfg.budget_usd
    # The next run with budget left describes only the rest.
    outcome = AnthropicDescriber(config(fake_anthropic, budget_usd=1.0), store).describe(requests(5))
    assert fake_anthropic.count("POST", MESSAGES) == 5
    assert outcome.rows.height == 5 and outcome.stats.cache_hits == 3 and not outcome.stats.budget_stopped


def test_batch_still_processing_then_ending_with_errored_items(fake_anthropic, dummy_api_key, store, warehouse):
    batch_requests = requests(4)
    errored = batch_requests[2].image_sha256
    fake_anthropic.batch_polls_in_progress = 2
    fake_anthropic.batch_errored = lambda custom_id: custom_id == errored
    outcome = AnthropicDescriber(config(fake_anthropic, batch_threshold=3), store).describe(batch_requests)
    assert fake_anthropic.count("POST", BATCHES) == 1 and fake_anthropic.count("POST", MESSAGES) == 0
    assert sorted(outcome.rows["object_id"]) == ["obj-0", "obj-1", "obj-3"]
    failure = outcome.failures.row(0, named=True)
    assert failure["object_id"] == "obj-2" and failure["status"] == "batch_errored"
    assert "api_error" in failure["reason"]
    # Batch prices: half the standard price.
    assert outcome.rows["cost_usd"][0] == pytest.approx(0.00291 / 2)
    batches = warehouse.query("SELECT batch_id, status, n_requests FROM vlm_batches")
    assert batches.select("status", "n_requests").rows() == [("collected", 4)]
    assert outcome.stats.batch_ids == batches["batch_id"].to_list()


def test_an_unparseable_batch_answer_gets_one_plain_retry(fake_anthropic, dummy_api_key, store):
    batch_requests = requests(3)
    bad = {batch_requests[0].image_sha256, batch_requests[1].image_sha256}
    fake_anthropic.batch_unparseable = lambda custom_id: custom_id in bad
    fake_anthropic.script(Reply.success(), Reply.bad_tool_input())
    outcome = AnthropicDescriber(config(fake_anthropic, batch_threshold=3), store).describe(batch_requests)
    assert fake_anthropic.count("POST", MESSAGES) == 2  # one retry each, no more
    assert outcome.rows.height == 2
    failure = outcome.failures.row(0, named=True)
    assert failure["status"] == "unparseable" and failure["reason"].startswith("batch answer:")
    assert "retry:" in failure["reason"]


def test_a_run_killed_mid_batch_resumes_the_same_batch(fake_anthropic, dummy_api_key, warehouse):
    batch_requests = requests(5)

    def kill(batch) -> None:
        raise SimulatedKill

    cfg = config(fake_anthropic, batch_threshold=3)
    with pytest.raises(SimulatedKill):
        AnthropicDescriber(cfg, WarehouseVlmStore(warehouse), on_batch_poll=kill).describe(batch_requests)
    assert warehouse.query("SELECT status FROM vlm_batches")["status"].to_list() == ["submitted"]

    # The next materialization: a new process would see exactly this warehouse.
    outcome = AnthropicDescriber(cfg, WarehouseVlmStore(warehouse)).describe(batch_requests)
    assert fake_anthropic.count("POST", BATCHES) == 1  # resumed, not resubmitted
    assert fake_anthropic.count("POST", MESSAGES) == 0
    assert outcome.rows.height == 5 and outcome.stats.cache_hits == 0
    assert warehouse.query("SELECT status FROM vlm_batches")["status"].to_list() == ["collected"]

    # And once more: everything from the cache, nothing sent at all.
    hits_before = len(fake_anthropic.received)
    outcome = AnthropicDescriber(cfg, WarehouseVlmStore(warehouse)).describe(batch_requests)
    assert len(fake_anthropic.received) == hits_before and outcome.stats.cache_hits == 5


def test_the_api_key_never_reaches_logs_metadata_or_tables(fake_anthropic, dummy_api_key, store, warehouse,
                                                           caplog, capsys):
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's debug logs included
    fake_anthropic.script(Reply.rate_limited(0.01), Reply.malformed())
    outcome = AnthropicDescriber(config(fake_anthropic, concurrency=2), store).describe(requests(3))
    batch = AnthropicDescriber(config(fake_anthropic, batch_threshold=2), store).describe(requests(3, start=3))
    assert outcome.rows.height + batch.rows.height >= 5

    # The key was really in play: the server received it (this SDK sends it as a bearer token).
    assert any(dummy_api_key in (h.get("x-api-key", "") + h.get("authorization", ""))
               for h in fake_anthropic.request_headers)
    assert "Retrying request" in caplog.text  # and the logs really were captured
    captured = capsys.readouterr()
    assert dummy_api_key not in caplog.text + captured.out + captured.err
    assert dummy_api_key not in repr(outcome.stats.as_metadata()) + repr(batch.stats.as_metadata())
    for frame in (outcome.rows, outcome.failures, batch.rows, batch.failures):
        assert dummy_api_key not in frame.write_csv()
    for table in warehouse.tables():
        assert dummy_api_key not in warehouse.query(f'SELECT * FROM "{table}"').write_csv()
