"""VLM re-ranking of search candidates (the AION-Search re-ranking step, Koblischke et al. 2025).

For each candidate image the model is asked a yes/no question built from the query plus a 1-10 score of how well
the image matches (structured output: a forced tool call). With ``samples`` > 1 each image is asked that many
times and the scores are averaged. Candidates are then sorted by mean score, the search similarity breaking ties;
a candidate whose every sample failed keeps no score and goes after the scored ones, in similarity order.

Rows go to the DuckDB table ``rerank_results`` (query, object_id, release, rank_before, rank_after, score,
similarity, answer, samples_ok, model, cost_usd, run_id, created_at). Without ``ANTHROPIC_API_KEY`` building the
client raises ``MissingApiKey`` before anything is sent or written.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import polars as pl

from aion_assets.platform.warehouse import Warehouse
from aion_assets.vlm.client import (
    MissingApiKey,
    Pricing,
    Unparseable,
    make_client,
    tool_input,
    tool_schema,
    usage_tokens,
)
from aion_assets.vlm.describers import DEFAULT_MODEL
from aion_assets.vlm.prompts import RERANK_PROMPT_VERSION, rerank_prompt

__all__ = ["MissingApiKey", "RerankRow", "rerank", "rerank_frame", "save_rerank", "RERANK_SCHEMA"]

JUDGE_TOOL = tool_schema(
    "judge_match",
    "Record whether the image shows what the search query asks for, and how well (1-10).",
    {
        "answer": {"type": "string", "enum": ["yes", "no"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
    },
)

RERANK_SCHEMA: dict[str, pl.DataType] = {
    "query": pl.Utf8, "object_id": pl.Utf8, "release": pl.Utf8, "rank_before": pl.Int32, "rank_after": pl.Int32,
    "score": pl.Float64, "similarity": pl.Float64, "answer": pl.Utf8, "samples_ok": pl.Int32, "model": pl.Utf8,
    "cost_usd": pl.Float64, "run_id": pl.Utf8, "created_at": pl.Datetime("us", "UTC"),
}

Candidate = tuple[str, str, float, "bytes | Callable[[], bytes]"]  # (release, object_id, similarity, png)


@dataclass
class RerankRow:
    query: str
    object_id: str
    release: str
    rank_before: int  # 1-based position in the search results given
    rank_after: int
    score: float | None  # mean 1-10 score over the samples that parsed; None when none did
    similarity: float
    answer: str  # majority yes/no over the parsed samples ("" when none)
    samples_ok: int
    model: str
    cost_usd: float
    run_id: str
    created_at: datetime


def _judge_once(client: Any, params: dict[str, Any], pricing: Pricing) -> tuple[int | None, str, float]:
    """(score or None, answer, cost) for one sample; an answer that does not parse is asked once more."""
    import anthropic

    cost = 0.0
    for _attempt in (1, 2):
        try:
            message = client.messages.create(**params)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError):
            raise
        except anthropic.APIError:
            return None, "", cost  # the SDK already retried; this sample is lost
        except ValueError:  # a body that is not JSON
            continue
        cost += pricing.cost(*usage_tokens(message))
        try:
            fields = tool_input(message, JUDGE_TOOL["name"])
            score = fields.get("score")
            if isinstance(score, str) and score.strip().isdigit():
                score = int(score)
            if not isinstance(score, (int, float)) or isinstance(score, bool) or not 1 <= score <= 10:
                raise Unparseable(f"score {score!r} not in 1-10")
            answer = str(fields.get("answer", "")).strip().lower()
            return int(round(score)), answer if answer in ("yes", "no") else "", cost
        except Unparseable:
            continue
    return None, "", cost


def rerank(
    query: str,
    candidates: Sequence[Candidate],
    client: Any | None = None,
    samples: int = 1,
    *,
    model: str = DEFAULT_MODEL,
    max_tokens: int = 200,
    pricing: Pricing | None = None,
    concurrency: int = 8,
    prompt_version: str = RERANK_PROMPT_VERSION,
    log: logging.Logger | Any | None = None,
) -> list[RerankRow]:
    """Re-rank ``candidates`` (in search order) by the VLM's judgement; rows sorted by ``rank_after``."""
    if samples < 1:
        raise ValueError("samples must be >= 1")
    client = client if client is not None else make_client(what="re-ranking")
    pricing = pricing or Pricing()
    log = log or logging.getLogger(__name__)
    text = rerank_prompt(prompt_version).text.replace("{query}", query.strip())
    run_id, created_at = uuid.uuid4().hex, datetime.now(timezone.utc)

    def judge(candidate: Candidate) -> tuple[list[int], list[str], float]:
        png = candidate[3]() if callable(candidate[3]) else candidate[3]
        params = {
            "model": model, "max_tokens": max_tokens, "tools": [JUDGE_TOOL],
            "tool_choice": {"type": "tool", "name": JUDGE_TOOL["name"]},
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": base64.b64encode(png).decode("ascii")}},
                {"type": "text", "text": text},
            ]}],
        }
        scores, answers, cost = [], [], 0.0
        for _ in range(samples):
            score, answer, sample_cost = _judge_once(client, params, pricing)
            cost += sample_cost
            if score is not None:
                scores.append(score)
                answers.append(answer)
        return scores, answers, cost

    log.info(f"re-ranking {len(candidates)} candidates with {model}, {samples} sample(s) each")
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(candidates) or 1))) as pool:
        judged = list(pool.map(judge, candidates))

    rows = []
    for index, (candidate, (scores, answers, cost)) in enumerate(zip(candidates, judged), start=1):
        release, object_id, similarity = candidate[0], candidate[1], float(candidate[2])
        yes = sum(a == "yes" for a in answers)
        rows.append(RerankRow(
            query=query, object_id=object_id, release=release, rank_before=index, rank_after=0,
            score=sum(scores) / len(scores) if scores else None, similarity=similarity,
            answer=("yes" if yes * 2 > len(answers) else "no") if answers else "", samples_ok=len(scores),
            model=model, cost_usd=cost, run_id=run_id, created_at=created_at,
        ))
    rows.sort(key=lambda r: (r.score is None, -(r.score or 0.0), -r.similarity, r.rank_before))
    for rank, row in enumerate(rows, start=1):
        row.rank_after = rank
    unscored = sum(r.score is None for r in rows)
    if unscored:
        log.warning(f"{unscored} of {len(rows)} candidates got no valid judgement; kept in similarity order")
    return rows


def rerank_frame(rows: Sequence[RerankRow]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=RERANK_SCHEMA)
    data = [asdict(r) for r in rows]
    return pl.DataFrame({name: [d[name] for d in data] for name in RERANK_SCHEMA}, schema=RERANK_SCHEMA)


def save_rerank(warehouse: Warehouse, rows: Sequence[RerankRow]) -> int:
    """Append one re-ranking run to ``rerank_results``; returns the rows written."""
    frame = rerank_frame(rows)
    if frame.height:
        warehouse.append("rerank_results", frame)
    return frame.height
