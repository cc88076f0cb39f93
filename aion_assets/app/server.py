"""The Starlette app over ``SearchApi``: routes from ``api.ENDPOINTS``, the page, and one-line JSON errors.

No stack trace reaches a client: a refused request is a 4xx with ``{"error": "..."}``, anything unexpected a 500
with the same shape (the trace goes to the server's log), and the server goes on serving.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import duckdb
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from aion_assets.app.api import ENDPOINTS, Endpoint, SearchApi
from aion_assets.app.openapi import openapi_document
from aion_assets.app.params import BadRequest, parse_query
from aion_assets.app.served import UnknownModelVersion
from aion_assets.search.artifacts import ModelVersionMissing
from aion_assets.search.service import AmbiguousObject, UnknownObject, UnknownRelease

STATIC_DIR = Path(__file__).parent / "static"
REQUESTS_AT_WORK = 16
log = logging.getLogger("aion.app")

# Each refusal and the status that says it; the first match wins (subclasses before their bases).
REFUSALS: tuple[tuple[type[BaseException], int], ...] = (
    (BadRequest, 400), (UnknownRelease, 400), (AmbiguousObject, 400), (PermissionError, 400),
    (UnknownModelVersion, 404), (ModelVersionMissing, 404), (UnknownObject, 404),
)


class SafeJSONResponse(JSONResponse):
    """JSON with NaN as null and dates as ISO text (DuckDB rows carry both)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), default=_iso, ensure_ascii=False, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def error(status: int, message: str) -> SafeJSONResponse:
    return SafeJSONResponse({"error": " ".join(str(message).split())[:500]}, status_code=status)


def answer(call: Callable[[], Any]) -> Response:
    """Run one endpoint's work and say how it went; the one place errors become statuses."""
    try:
        result = call()
    except tuple(kind for kind, _ in REFUSALS) as refused:
        status = next(code for kind, code in REFUSALS if isinstance(refused, kind))
        return error(status, refused.args[0] if refused.args else type(refused).__name__)
    except (duckdb.IOException, duckdb.ConnectionException) as busy:
        log.warning("warehouse unavailable: %s", busy)
        return error(503, "the warehouse is busy (a run is writing it); retry in a moment")
    except Exception:  # noqa: BLE001 - the trace is the server's, never the client's
        log.exception("request failed")
        return error(500, "internal error; the server's log has the details")
    return result if isinstance(result, Response) else SafeJSONResponse(result)


def _route(api: SearchApi, endpoint: Endpoint, limiter: anyio.CapacityLimiter) -> Route:
    path_params = {p.name for p in endpoint.params if p.location == "path"}
    query_params = [p for p in endpoint.params if p.location == "query"]
    # {object_id:path} so an id with an encoded slash reaches the check (a clear 400), not a bare 404.
    route_path = endpoint.path.replace("{object_id}", "{object_id:path}")
    method = getattr(api, endpoint.method)

    async def handle(request: Request) -> Response:
        def work() -> Any:
            values = parse_query(request.query_params, query_params)
            values.update({name: request.path_params[name] for name in path_params})
            if endpoint.media_type == "image/png":
                return _png(request, *method(**values))
            return method(**values)

        return await anyio.to_thread.run_sync(answer, work, limiter=limiter)

    return Route(route_path, handle, methods=["GET"], name=endpoint.method)


def _png(request: Request, data: bytes, etag: str) -> Response:
    headers = {"Cache-Control": "public, max-age=3600"}
    if etag:
        headers["ETag"] = f'"{etag}"'
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
    return Response(data, media_type="image/png", headers=headers)


def build_app(api: SearchApi, on_shutdown: Callable[[], None] | None = None) -> Starlette:
    document = openapi_document(ENDPOINTS)
    # A bounded number of requests at work; the rest wait their turn. Enough that the text encoder's batches can
    # fill (a request mostly waits for its batch), few enough that 32 clients do not thrash the cores (without a
    # bound, 32 clients fell from 67 to 44 requests/s).
    limiter = anyio.CapacityLimiter(REQUESTS_AT_WORK)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def openapi(request: Request) -> Response:
        return SafeJSONResponse(document)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = {404: f"no such endpoint: {request.url.path} (see /openapi.json)",
                   405: f"{request.method} is not allowed here; the API answers GET"}.get(exc.status_code, exc.detail)
        return error(exc.status_code, message)

    async def server_error(request: Request, exc: Exception) -> Response:
        return error(500, "internal error; the server's log has the details")

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        if on_shutdown is not None:
            on_shutdown()

    routes = [Route("/", page), Route("/openapi.json", openapi),
              *(_route(api, endpoint, limiter) for endpoint in ENDPOINTS),
              Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error, Exception: server_error})
