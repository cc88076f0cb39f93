"""Describers: cutouts in, rows of the ``descriptions`` table out.

Two implementations of one interface, so the live one drops in where the recorded one runs:

- ``RecordedDescriber`` replays the recorded answers of a real VLM (``recorded_descriptions.jsonl``), matched on
  release + object_id and refused when the image's sha256 differs from the one the answer was made from.
- ``AnthropicDescriber`` asks Claude through the ``anthropic`` SDK. Small samples go as concurrent Messages
  requests (a thread pool of ``concurrency``); samples of ``batch_threshold`` or more go through the Message
  Batches API (half price), whose ids are recorded at submission so a killed run resumes the same batch.
  Every answer is cached content-addressed by (image sha256, model, prompt version) the moment it arrives, so
  a re-run, or a run after a kill, only sends what is missing and never pays twice. A per-run USD budget stops
  the run before the request that could pass it.

Failures are rows too, in a separate table (``description_failures``: status + reason) rather than a status
column in ``descriptions``: every row of ``descriptions`` is then a real description that downstream assets can
embed without filtering, and a failed object is visible with its reason. Status values: ``missing`` (no recorded
answer), ``refused`` (sha256 mismatch), ``unparseable`` (no valid structured answer twice), ``api_error`` /
``timeout`` / ``connection_error`` (after the SDK's retries), ``batch_errored`` / ``batch_expired`` /
``batch_canceled`` (a batch item that did not succeed). Objects left out by the budget are not failures: they are
counted in the run stats (``not_attempted``) and described by the next run.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from aion_assets.platform.settings import DEFAULT_RECORDED_DESCRIPTIONS, get_settings
from aion_assets.vlm.client import (
    Pricing,
    Unparseable,
    api_error_reason,
    make_client,
    require_text,
    tool_input,
    tool_schema,
    usage_tokens,
)
from aion_assets.vlm.prompts import DESCRIBE_PROMPT_VERSION, describe_prompt

DEFAULT_RECORDED_PATH = DEFAULT_RECORDED_DESCRIPTIONS
RECORDED_PATH_ENV = "AION_RECORDED_DESCRIPTIONS"
DEFAULT_MODEL = "claude-sonnet-4-6"

DESCRIPTION_SCHEMA: dict[str, pl.DataType] = {
    "object_id": pl.Utf8, "release": pl.Utf8, "describer": pl.Utf8, "model": pl.Utf8, "prompt_version": pl.Utf8,
    "description": pl.Utf8, "summary": pl.Utf8, "input_tokens": pl.Int64, "output_tokens": pl.Int64,
    "cost_usd": pl.Float64, "created_at": pl.Datetime("us", "UTC"),
}
FAILURE_SCHEMA: dict[str, pl.DataType] = {
    "object_id": pl.Utf8, "release": pl.Utf8, "describer": pl.Utf8, "model": pl.Utf8, "prompt_version": pl.Utf8,
    "image_sha256": pl.Utf8, "status": pl.Utf8, "reason": pl.Utf8, "created_at": pl.Datetime("us", "UTC"),
}

DESCRIBE_TOOL = tool_schema(
    "record_description",
    "Record the description of the central object and its one-sentence summary.",
    {
        "description": {"type": "string", "description": "Flowing prose, 40-110 words, as the instructions ask."},
        "summary": {"type": "string", "description": "One sentence, 8-20 words, no negation words."},
    },
)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# -- requests, results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DescribeRequest:
    release: str
    object_id: str
    image_sha256: str  # of the source image: the content address of the answer
    png: bytes | Callable[[], bytes] = field(repr=False, default=b"")

    def png_bytes(self) -> bytes:
        """The PNG the model sees; a callable is only called when a request is really sent."""
        return self.png() if callable(self.png) else self.png


@dataclass
class RunStats:
    requested: int = 0  # objects asked for
    successes: int = 0  # objects with a description (cache hits included)
    failures: int = 0  # objects with a failure row
    cache_hits: int = 0  # objects answered from the cache, nothing sent
    api_requests: int = 0  # answers paid for in this run (Messages calls made by our code + batch items)
    input_tokens: int = 0  # tokens paid in this run
    output_tokens: int = 0
    cost_usd: float = 0.0  # spent in this run
    budget_usd: float | None = None
    budget_stopped: bool = False
    not_attempted: int = 0  # objects left for the next run by the budget
    batch_ids: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        data = asdict(self)
        data["cost_usd"] = round(self.cost_usd, 6)
        data["batch_ids"] = ",".join(self.batch_ids)
        if self.budget_usd is None:
            data.pop("budget_usd")
        return data


@dataclass
class DescribeOutcome:
    rows: pl.DataFrame  # DESCRIPTION_SCHEMA
    failures: pl.DataFrame  # FAILURE_SCHEMA
    stats: RunStats


def _frame(rows: list[dict[str, Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame({name: [row[name] for row in rows] for name in schema}, schema=schema)


class Describer(ABC):
    """``describe`` returns one description row or one failure row per request (or neither, when the budget
    stopped the run before it)."""

    name: str  # the `describer` column
    model: str
    prompt_version: str

    @abstractmethod
    def describe(self, requests: Sequence[DescribeRequest]) -> DescribeOutcome: ...

    def _failure(self, request: DescribeRequest, status: str, reason: str, now: datetime) -> dict[str, Any]:
        return {
            "object_id": request.object_id, "release": request.release, "describer": self.name,
            "model": self.model, "prompt_version": self.prompt_version, "image_sha256": request.image_sha256,
            "status": status, "reason": reason, "created_at": now,
        }


# -- recorded -------------------------------------------------------------------------------------------------
def recorded_path() -> Path:
    """AION_RECORDED_DESCRIPTIONS through the settings, else the shared recorded answers."""
    return get_settings().recorded_descriptions


def _recorded_on(record: dict[str, Any]) -> datetime | None:
    """The day a recorded answer was made (its pass's ``recorded_on``, ``YYYY-MM-DD``) as midnight UTC, or None
    when the file predates that field."""
    day = record.get("recorded_on")
    if not day:
        return None
    try:
        return datetime.fromisoformat(str(day)).replace(tzinfo=timezone.utc)
    except ValueError as error:
        raise ValueError(f"recorded answer {record.get('release')}/{record.get('object_id')}: "
                         f"recorded_on {day!r} is not a date (YYYY-MM-DD)") from error


def _pass_day(record: dict[str, Any]) -> datetime:
    """Orders the passes: an undated answer counts as older than every dated one."""
    return record["recorded_on"] or datetime.min.replace(tzinfo=timezone.utc)


class RecordedDescriber(Describer):
    """Replays recorded answers: what a cache of a live VLM would return, offline, at zero cost.

    The file may hold several recorded passes (each a seeded random sample, ``recorded_on`` its date); together
    they are the recorded sample. An object answered in more than one pass replays its latest answer. A replayed
    row's ``created_at`` is the day its answer was recorded, as a live describer's cached answer keeps the time it
    arrived; an answer without ``recorded_on`` gets the replay time.
    """

    name = "vlm-recorded"

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else recorded_path()
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    record["recorded_on"] = _recorded_on(record)
                    key = (record["release"], record["object_id"])
                    if key not in self._records or _pass_day(record) >= _pass_day(self._records[key]):
                        self._records[key] = record
        models = {r["model"] for r in self._records.values()}
        versions = {r["prompt_version"] for r in self._records.values()}
        if len(models) != 1 or len(versions) != 1:
            raise ValueError(f"{self.path}: expected one model and one prompt version, got {models} / {versions}")
        self.model = models.pop()
        self.prompt_version = versions.pop()

    def recorded_keys(self) -> pl.DataFrame:
        """(release, object_id, image_sha256, recorded_on) of every recorded answer: the recorded describer's
        sample, every pass of it (``recorded_on`` null for answers recorded before passes were dated)."""
        return pl.DataFrame(
            [(r, o, rec["image_sha256"], rec["recorded_on"]) for (r, o), rec in self._records.items()],
            schema={"release": pl.Utf8, "object_id": pl.Utf8, "image_sha256": pl.Utf8,
                    "recorded_on": pl.Datetime("us", "UTC")},
            orient="row",
        )

    def describe(self, requests: Sequence[DescribeRequest]) -> DescribeOutcome:
        now = utc_now()
        rows: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for request in requests:
            record = self._records.get((request.release, request.object_id))
            if record is None:
                failures.append(self._failure(request, "missing", "no recorded answer", now))
            elif record["image_sha256"] != request.image_sha256:
                failures.append(self._failure(request, "refused", "sha256 mismatch", now))
            else:
                rows.append({
                    "object_id": request.object_id, "release": request.release, "describer": self.name,
                    "model": record["model"], "prompt_version": record["prompt_version"],
                    "description": record["description"], "summary": record["summary"],
                    "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0,
                    "created_at": record["recorded_on"] or now,
                })
        stats = RunStats(requested=len(requests), successes=len(rows), failures=len(failures))
        return DescribeOutcome(_frame(rows, DESCRIPTION_SCHEMA), _frame(failures, FAILURE_SCHEMA), stats)


# -- the response cache and batch registry --------------------------------------------------------------------
@dataclass(frozen=True)
class CachedAnswer:
    image_sha256: str
    model: str
    prompt_version: str
    description: str
    summary: str
    input_tokens: int
    output_tokens: int
    cost_usd: float  # what this answer cost, including a retried unparseable attempt
    created_at: datetime
    via: str  # "messages" | "batch"


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    model: str
    prompt_version: str
    custom_ids: tuple[str, ...]  # image sha256 of each request
    submitted_at: datetime
    status: str = "submitted"  # submitted -> collected | unavailable


class VlmStore(Protocol):
    """Where answers and open batches survive a run: ``store.WarehouseVlmStore`` (DuckDB) in the stack."""

    def cached(self, model: str, prompt_version: str, shas: Collection[str]) -> dict[str, CachedAnswer]: ...

    def save_answers(self, answers: Sequence[CachedAnswer]) -> None: ...

    def record_batch(self, record: BatchRecord) -> None: ...

    def open_batches(self, model: str, prompt_version: str) -> list[BatchRecord]: ...

    def close_batch(self, batch_id: str, status: str) -> None: ...


class MemoryVlmStore:
    """A process-local store (benchmarks, one-off scripts): same contract, nothing survives the process."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str, str], CachedAnswer] = {}
        self.batches: dict[str, BatchRecord] = {}
        self._lock = threading.Lock()

    def cached(self, model: str, prompt_version: str, shas: Collection[str]) -> dict[str, CachedAnswer]:
        with self._lock:
            return {s: a for s in shas if (a := self.answers.get((s, model, prompt_version)))}

    def save_answers(self, answers: Sequence[CachedAnswer]) -> None:
        with self._lock:
            for a in answers:
                self.answers[(a.image_sha256, a.model, a.prompt_version)] = a

    def record_batch(self, record: BatchRecord) -> None:
        self.batches[record.batch_id] = record

    def open_batches(self, model: str, prompt_version: str) -> list[BatchRecord]:
        return [b for b in self.batches.values()
                if b.status == "submitted" and b.model == model and b.prompt_version == prompt_version]

    def close_batch(self, batch_id: str, status: str) -> None:
        record = self.batches[batch_id]
        self.batches[batch_id] = BatchRecord(**{**asdict(record), "status": status})


# -- live: Anthropic ------------------------------------------------------------------------------------------
# The prices' one source is client.Pricing; the describer resource takes every default from AnthropicConfig.
_LIST_PRICES = Pricing()


@dataclass(frozen=True)
class AnthropicConfig:
    model: str = DEFAULT_MODEL
    max_tokens: int = 600
    input_price_per_mtok: float = _LIST_PRICES.input_per_mtok
    output_price_per_mtok: float = _LIST_PRICES.output_per_mtok
    batch_discount: float = _LIST_PRICES.batch_discount
    # Upper estimate of one request's input tokens (prompt ~300 + a 160 px image ~35 + tool schema ~150), used
    # only to decide whether the next request fits the budget.
    max_input_tokens: int = 1000
    concurrency: int = 8
    budget_usd: float = 10.0
    batch_threshold: int = 500
    max_batch_requests: int = 1000
    max_batch_bytes: int = 150_000_000  # the API takes up to 256 MB per batch
    poll_interval_s: float = 30.0
    timeout_s: float = 120.0
    max_retries: int = 4
    base_url: str = ""
    prompt_version: str = DESCRIBE_PROMPT_VERSION

    @property
    def pricing(self) -> Pricing:
        return Pricing(self.input_price_per_mtok, self.output_price_per_mtok, self.batch_discount)

    def request_estimate_usd(self, batch: bool = False) -> float:
        """The most one request may cost: max input tokens in, max_tokens out."""
        return self.pricing.cost(self.max_input_tokens, self.max_tokens, batch=batch)


class BudgetGate:
    """Admits a request only if spent + reserved + its estimate stays within the budget; once one is refused the
    gate stays shut, so the run stops cleanly instead of trickling on."""

    def __init__(self, budget_usd: float, spent_usd: float = 0.0) -> None:
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        self.reserved_usd = 0.0
        self.shut = False
        self._lock = threading.Lock()

    def try_reserve(self, estimate_usd: float) -> bool:
        with self._lock:
            if self.shut or self.spent_usd + self.reserved_usd + estimate_usd > self.budget_usd + 1e-12:
                self.shut = True
                return False
            self.reserved_usd += estimate_usd
            return True

    def settle(self, estimate_usd: float, actual_usd: float) -> None:
        with self._lock:
            self.reserved_usd -= estimate_usd
            self.spent_usd += actual_usd


@dataclass
class _Attempted:
    """What one image's requests produced in this run."""

    answer: CachedAnswer | None = None
    status: str = ""
    reason: str = ""
    skipped: bool = False


class AnthropicDescriber(Describer):
    name = "vlm-anthropic"

    def __init__(
        self,
        config: AnthropicConfig | None = None,
        store: VlmStore | None = None,
        client: Any | None = None,
        log: logging.Logger | Any | None = None,
        on_batch_poll: Callable[[Any], None] | None = None,
    ) -> None:
        self.config = config or AnthropicConfig()
        self.model = self.config.model
        self.prompt = describe_prompt(self.config.prompt_version)
        self.prompt_version = self.prompt.version
        self.store: VlmStore = store if store is not None else MemoryVlmStore()
        self._client = client
        self.log = log or logging.getLogger(__name__)
        # Called with each polled MessageBatch; a hook for progress reporting (and, in tests, for a kill).
        self.on_batch_poll = on_batch_poll
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.config.base_url, self.config.timeout_s, self.config.max_retries)
        return self._client

    # The request as sent: one image block (base64 PNG) and the prompt, with the answer forced into a tool call.
    def message_params(self, png: bytes) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "max_tokens": self.config.max_tokens,
            "tools": [DESCRIBE_TOOL],
            "tool_choice": {"type": "tool", "name": DESCRIBE_TOOL["name"]},
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "image", "source": {
                        "type": "base64", "media_type": "image/png", "data": base64.b64encode(png).decode("ascii"),
                    }},
                    {"type": "text", "text": self.prompt.text},
                ],
            }],
        }

    def _answer(self, sha: str, message: Any, cost_usd: float, in_tok: int, out_tok: int, via: str) -> CachedAnswer:
        fields = tool_input(message, DESCRIBE_TOOL["name"])
        return CachedAnswer(
            image_sha256=sha, model=self.config.model, prompt_version=self.prompt_version,
            description=require_text(fields, "description"), summary=require_text(fields, "summary"),
            input_tokens=in_tok, output_tokens=out_tok, cost_usd=cost_usd, created_at=utc_now(), via=via,
        )

    def _charge(self, stats: RunStats, in_tok: int, out_tok: int, cost: float) -> None:
        with self._lock:
            stats.api_requests += 1
            stats.input_tokens += in_tok
            stats.output_tokens += out_tok
            stats.cost_usd += cost

    # -- one image through the Messages API, with one retry for an answer that does not parse ------------------
    def _describe_one(self, sha: str, request: DescribeRequest, gate: BudgetGate, stats: RunStats,
                      attempts: int = 2) -> _Attempted:
        import anthropic

        estimate = self.config.request_estimate_usd()
        paid_usd, paid_in, paid_out = 0.0, 0, 0
        reasons: list[str] = []
        for attempt in range(1, attempts + 1):
            if not gate.try_reserve(estimate):
                if attempt == 1:
                    return _Attempted(skipped=True)
                reasons.append("not retried: budget")
                break
            cost = 0.0
            try:
                message = self.client.messages.create(**self.message_params(request.png_bytes()))
            except (anthropic.AuthenticationError, anthropic.PermissionDeniedError):
                gate.settle(estimate, 0.0)
                raise  # a bad key fails every request: stop the run, keep what the cache already holds
            except anthropic.APIError as error:
                gate.settle(estimate, 0.0)
                status, reason = api_error_reason(error)
                return _Attempted(status=status, reason=reason)
            except ValueError as error:  # a 200 whose body is not JSON (json.JSONDecodeError)
                gate.settle(estimate, 0.0)
                reasons.append(f"attempt {attempt}: malformed JSON response ({type(error).__name__})")
                continue
            in_tok, out_tok = usage_tokens(message)
            cost = self.config.pricing.cost(in_tok, out_tok)
            gate.settle(estimate, cost)
            self._charge(stats, in_tok, out_tok, cost)
            paid_usd, paid_in, paid_out = paid_usd + cost, paid_in + in_tok, paid_out + out_tok
            try:
                answer = self._answer(sha, message, paid_usd, paid_in, paid_out, "messages")
            except Unparseable as error:
                reasons.append(f"attempt {attempt}: {error}")
                continue
            self.store.save_answers([answer])  # at once: a kill after this point never pays for it again
            return _Attempted(answer=answer)
        return _Attempted(status="unparseable", reason="; ".join(reasons))

    def _run_concurrent(self, todo: dict[str, DescribeRequest], gate: BudgetGate, stats: RunStats,
                        attempts: int = 2) -> dict[str, _Attempted]:
        if not todo:
            return {}
        workers = max(1, min(self.config.concurrency, len(todo)))
        _ = self.client  # built once here, not raced for by the workers
        self.log.info(f"describing {len(todo)} images with {self.config.model}: {workers} concurrent requests")
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlm") as pool:
            futures = {sha: pool.submit(self._describe_one, sha, req, gate, stats, attempts)
                       for sha, req in todo.items()}
            return {sha: future.result() for sha, future in futures.items()}

    # -- the Message Batches API -------------------------------------------------------------------------------
    def _submit_batches(self, todo: dict[str, DescribeRequest], gate: BudgetGate,
                        stats: RunStats) -> list[BatchRecord]:
        estimate = self.config.request_estimate_usd(batch=True)
        records: list[BatchRecord] = []
        chunk: list[dict[str, Any]] = []
        chunk_bytes = 0

        def submit() -> None:
            nonlocal chunk, chunk_bytes
            batch = self.client.messages.batches.create(requests=chunk)
            record = BatchRecord(batch.id, self.config.model, self.prompt_version,
                                 tuple(item["custom_id"] for item in chunk), utc_now())
            self.store.record_batch(record)  # before anything else: a kill from here on resumes this batch
            stats.batch_ids.append(batch.id)
            self.log.info(f"submitted message batch {batch.id} ({len(chunk)} requests)")
            records.append(record)
            chunk, chunk_bytes = [], 0

        for sha, request in todo.items():
            if not gate.try_reserve(estimate):
                break
            params = self.message_params(request.png_bytes())
            size = len(params["messages"][0]["content"][0]["source"]["data"]) + 2000
            if chunk and (len(chunk) >= self.config.max_batch_requests or chunk_bytes + size > self.config.max_batch_bytes):
                submit()
            chunk.append({"custom_id": sha, "params": params})  # sha256 hex: 64 chars, the custom_id limit
            chunk_bytes += size
        if chunk:
            submit()
        return records

    def _collect_batch(self, record: BatchRecord, stats: RunStats, gate: BudgetGate,
                       reserved_each_usd: float = 0.0) -> dict[str, _Attempted]:
        """Poll a batch until it ends, cache its answers, close it. ``reserved_each_usd``: what the gate reserved
        per request when this run submitted it (0 for a batch resumed from an earlier run)."""
        import anthropic

        while True:
            batch = self.client.messages.batches.retrieve(record.batch_id)
            if self.on_batch_poll is not None:
                self.on_batch_poll(batch)
            if batch.processing_status == "ended":
                break
            counts = batch.request_counts
            self.log.info(f"batch {record.batch_id}: {batch.processing_status}, {counts.processing} processing")
            time.sleep(self.config.poll_interval_s)
        results: dict[str, _Attempted] = {}
        answers: list[CachedAnswer] = []
        try:
            items = list(self.client.messages.batches.results(record.batch_id))
        except anthropic.NotFoundError:
            self.log.warning(f"batch {record.batch_id}: results no longer available; its images will be resent")
            self.store.close_batch(record.batch_id, "unavailable")
            return {}
        for item in items:
            sha, result = item.custom_id, item.result
            if result.type != "succeeded":
                gate.settle(reserved_each_usd, 0.0)
                if result.type == "errored":
                    detail = getattr(getattr(result, "error", None), "error", None)
                    reason = f"{getattr(detail, 'type', 'error')}: {getattr(detail, 'message', '')}".strip(": ")
                    results[sha] = _Attempted(status="batch_errored", reason=reason[:300])
                else:
                    results[sha] = _Attempted(status=f"batch_{result.type}", reason=f"batch item {result.type}")
                continue
            in_tok, out_tok = usage_tokens(result.message)
            cost = self.config.pricing.cost(in_tok, out_tok, batch=True)
            gate.settle(reserved_each_usd, cost)
            self._charge(stats, in_tok, out_tok, cost)
            try:
                answer = self._answer(sha, result.message, cost, in_tok, out_tok, "batch")
            except Unparseable as error:
                results[sha] = _Attempted(status="unparseable", reason=f"batch answer: {error}")
                continue
            answers.append(answer)
            results[sha] = _Attempted(answer=answer)
        self.store.save_answers(answers)  # before closing: a kill in between at worst re-reads the results
        self.store.close_batch(record.batch_id, "collected")
        self.log.info(f"collected batch {record.batch_id}: {len(answers)} answers, {len(results) - len(answers)} not")
        return results

    # -- the whole run -----------------------------------------------------------------------------------------
    def describe(self, requests: Sequence[DescribeRequest]) -> DescribeOutcome:
        cfg = self.config
        stats = RunStats(requested=len(requests), budget_usd=cfg.budget_usd)
        by_sha: dict[str, list[DescribeRequest]] = {}
        for request in requests:
            by_sha.setdefault(request.image_sha256, []).append(request)

        cached = self.store.cached(cfg.model, self.prompt_version, list(by_sha))
        stats.cache_hits = sum(len(by_sha[sha]) for sha in cached)
        attempted: dict[str, _Attempted] = {sha: _Attempted(answer=a) for sha, a in cached.items()}
        gate = BudgetGate(cfg.budget_usd)

        # A batch a killed run left behind was paid for: collect it before sending anything.
        for record in self.store.open_batches(cfg.model, self.prompt_version):
            self.log.info(f"resuming message batch {record.batch_id} from an earlier run")
            stats.batch_ids.append(record.batch_id)
            for sha, result in self._collect_batch(record, stats, gate).items():
                if sha in by_sha and (sha not in attempted or attempted[sha].answer is None):
                    attempted[sha] = result

        todo = {sha: reqs[0] for sha, reqs in by_sha.items() if sha not in attempted}
        if len(todo) >= cfg.batch_threshold:
            for record in self._submit_batches(todo, gate, stats):
                attempted.update(self._collect_batch(record, stats, gate, cfg.request_estimate_usd(batch=True)))
            # Batch answers that did not parse get their one retry as a plain request.
            retry = {sha: by_sha[sha][0] for sha, r in attempted.items()
                     if r.status == "unparseable" and sha in todo}
            for sha, result in self._run_concurrent(retry, gate, stats, attempts=1).items():
                if result.answer is not None or not result.skipped:
                    if result.status == "unparseable":
                        result.reason = f"{attempted[sha].reason}; retry: {result.reason}"
                    attempted[sha] = result
        else:
            attempted.update(self._run_concurrent(todo, gate, stats))

        now = utc_now()
        rows: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for sha, reqs in by_sha.items():
            result = attempted.get(sha)
            if result is None or result.skipped:
                stats.not_attempted += len(reqs)
                continue
            for request in reqs:
                if result.answer is not None:
                    a = result.answer
                    rows.append({
                        "object_id": request.object_id, "release": request.release, "describer": self.name,
                        "model": a.model, "prompt_version": a.prompt_version, "description": a.description,
                        "summary": a.summary, "input_tokens": a.input_tokens, "output_tokens": a.output_tokens,
                        "cost_usd": a.cost_usd, "created_at": a.created_at,
                    })
                else:
                    failures.append(self._failure(request, result.status, result.reason, now))
        stats.successes, stats.failures = len(rows), len(failures)
        stats.budget_stopped = gate.shut
        if gate.shut:
            self.log.warning(
                f"budget of ${cfg.budget_usd:.2f} reached: stopped with {stats.not_attempted} objects left for the "
                f"next run (spent ${stats.cost_usd:.4f})")
        return DescribeOutcome(_frame(rows, DESCRIPTION_SCHEMA), _frame(failures, FAILURE_SCHEMA), stats)


# -- choosing a describer, and what identifies its output ------------------------------------------------------
DESCRIBER_ENV = "AION_DESCRIBER"
DESCRIBER_KINDS = ("recorded", "anthropic")


def choose_describer(kind: str = "") -> tuple[str, str]:
    """(kind, why): an explicit kind wins, then AION_DESCRIBER, then "anthropic" only when ANTHROPIC_API_KEY is set,
    else "recorded". ``why`` is what the UI shows, e.g. "recorded (no ANTHROPIC_API_KEY)"."""
    from aion_assets.vlm.client import API_KEY_ENV, has_api_key

    if kind:
        chosen, why = kind, "configured"
    elif get_settings().describer:
        chosen, why = get_settings().describer, f"{DESCRIBER_ENV}"
    elif has_api_key():
        chosen, why = "anthropic", f"{API_KEY_ENV} is set"
    else:
        chosen, why = "recorded", f"no {API_KEY_ENV}"
    if chosen not in DESCRIBER_KINDS:
        raise ValueError(f"unknown describer {chosen!r} (from {why}); choose one of {', '.join(DESCRIBER_KINDS)}")
    return chosen, why


def recorded_fingerprint(path: str | Path | None = None) -> tuple[str, str]:
    """(model, short content hash) of a recorded-answers file, or ("recorded", "missing") when it is absent."""
    import hashlib

    target = Path(path) if path else recorded_path()
    if not target.is_file():
        return "recorded", "missing"
    data = target.read_bytes()
    first = json.loads(data.split(b"\n", 1)[0])
    return first.get("model", "recorded"), hashlib.sha256(data).hexdigest()[:12]


def describer_code_version(kind: str = "", model: str = DEFAULT_MODEL, prompt_version: str = DESCRIBE_PROMPT_VERSION,
                           recorded: str | Path | None = None) -> str:
    """The code version of ``vlm_descriptions``: describer kind + model + prompt version and content hash (and,
    for the recorded describer, the answers file's hash). Any change marks the descriptions and everything
    downstream as changed in the UI."""
    chosen, _ = choose_describer(kind)
    prompt = describe_prompt(prompt_version)
    if chosen == "recorded":
        recorded_model, answers = recorded_fingerprint(recorded)
        return f"recorded|{recorded_model}|prompt {prompt.version_id}|answers {answers}"
    return f"anthropic|{model}|prompt {prompt.version_id}"


def descriptions_content_hash(rows: pl.DataFrame) -> str:
    """A hash of what the descriptions say (not when they were made): the asset's data version."""
    import hashlib

    columns = ["release", "object_id", "describer", "model", "prompt_version", "description", "summary"]
    ordered = rows.select(columns).sort(["release", "object_id", "describer", "model", "prompt_version"])
    digest = hashlib.sha256()
    for row in ordered.iter_rows():
        digest.update(json.dumps(row, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()
