"""The JSON API: each endpoint's parameters (declared once, in ``ENDPOINTS``) and what it answers. No dagster,
no Starlette: ``server.py`` routes requests here and turns the errors below into one-line JSON answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import polars as pl

from aion_assets.app.objects import cone_search, cutout_png, locate, object_detail
from aion_assets.app.params import Param, check_object_id, object_id_param
from aion_assets.app.served import ServedModels
from aion_assets.platform.warehouse import Warehouse
from aion_assets.search.search_log import BufferedSearchLog, SearchRecord
from aion_assets.search.service import check_release

MODELS_REFRESH_S = 10.0


@dataclass(frozen=True)
class Endpoint:
    path: str  # as OpenAPI writes it
    method: str  # the SearchApi method that answers
    summary: str
    params: tuple[Param, ...] = ()
    media_type: str = "application/json"
    response_schema: str | None = None  # a name in openapi.SCHEMAS


K = Param("k", int, "How many results.", default=24, minimum=1, maximum=1000)
RELEASE = Param("release", str, "Only results from this release (one of /api/models `releases`).", max_length=200)
OBJECT_RELEASE = Param("release", str, "The object's release; needed only when its id is in several.",
                       max_length=200)

ENDPOINTS = (
    Endpoint("/api/search", "search", "Rank cutouts by how well they match a typed description.", (
        Param("q", str, "What to look for, in words.", required=True, max_length=1000),
        K, RELEASE,
        Param("model_version", int, "Heads version to search with; default: the latest.", minimum=1),
        Param("rerank", bool, "Let the VLM judge the top candidates and re-order them (needs a key on the "
              "server: see /api/models `rerank_available`).", default=False),
        Param("candidates", int, "With rerank: how many top results the VLM judges (at least k).", minimum=1,
              maximum=200),
    ), response_schema="SearchResults"),
    Endpoint("/api/similar/{object_id}", "similar", "Cutouts whose images look most like this object's.",
             (object_id_param(), Param("k", int, "How many results.", default=24, minimum=1, maximum=1000),
              OBJECT_RELEASE), response_schema="SimilarResults"),
    Endpoint("/api/objects/{object_id}", "object", "One object: catalogue row, coordinates, labels, description.",
             (object_id_param(), OBJECT_RELEASE), response_schema="ObjectDetail"),
    Endpoint("/api/cone", "cone", "Objects within a radius of a sky position, nearest first.", (
        Param("ra", float, "Right ascension, degrees.", required=True, minimum=0, maximum=360,
              exclusive_maximum=True),
        Param("dec", float, "Declination, degrees.", required=True, minimum=-90, maximum=90),
        Param("radius_arcsec", float, "Search radius, arcseconds.", default=60.0, minimum=0,
              exclusive_minimum=True, maximum=36000),
        Param("k", int, "At most this many objects.", default=100, minimum=1, maximum=1000), RELEASE,
    ), response_schema="ConeResults"),
    Endpoint("/api/cutouts/{object_id}.png", "cutout", "The object's cutout image, as the models saw it.",
             (object_id_param(), OBJECT_RELEASE), media_type="image/png"),
    Endpoint("/api/models", "models", "The heads versions, their headline figures, and what this server serves.",
             response_schema="Models"),
    Endpoint("/api/health", "health", "Whether the server is up, and which version it serves by default.",
             response_schema="Health"),
)


def cutout_url(object_id: str, release: str) -> str:
    return f"/api/cutouts/{quote(object_id, safe='')}.png?release={quote(release, safe='')}"


def _with_cutout_urls(results: pl.DataFrame) -> list[dict[str, Any]]:
    return [{**row, "cutout_url": cutout_url(row["object_id"], row["release"])} for row in results.to_dicts()]


class SearchApi:
    """The answers, over one warehouse and the versions ``served`` holds."""

    def __init__(self, warehouse: Warehouse, served: ServedModels, search_log: BufferedSearchLog | None,
                 rerank_available: Callable[[], bool], list_versions: Callable[[], list[dict[str, Any]]],
                 log_source: str = "app") -> None:
        self.warehouse = warehouse
        self.log_source = log_source
        self.served = served
        self.search_log = search_log
        self.rerank_available = rerank_available
        self._list_versions = list_versions
        self._versions: list[dict[str, Any]] | None = None
        self._versions_read_at = 0.0
        self._versions_lock = threading.Lock()

    def search(self, q: str, k: int, release: str | None, model_version: int | None, rerank: bool,
               candidates: int | None) -> dict[str, Any]:
        if rerank and not self.rerank_available():
            raise PermissionError("rerank needs ANTHROPIC_API_KEY on the server; search without rerank")
        started = time.perf_counter()
        version, service = self.served.service(model_version)  # held to the end: one version per request
        check_release(service.search_index, release, service.served_releases)
        results = service.search(q, k=max(k, candidates or k) if rerank else k, release=release)
        if rerank:
            from aion_assets.search.reranking import reranked_results

            results = reranked_results(service.lake, service.warehouse, q, results).head(k)
        latency_ms = (time.perf_counter() - started) * 1000.0
        self._log("text", q, k, release, version, latency_ms, results.height)
        return {"query": q, "k": k, "release": release, "model_version": version, "reranked": rerank,
                "latency_ms": round(latency_ms, 3), "results": _with_cutout_urls(results)}

    def similar(self, object_id: str, k: int, release: str | None) -> dict[str, Any]:
        check_object_id(object_id)
        started = time.perf_counter()
        _, service = self.served.service()  # the image-similarity index is the same for every version
        _, found_release = service.similarity_row(object_id, release)
        results = service.similar(object_id, k=k, release=release)
        self._log("similar", object_id, k, release, None, (time.perf_counter() - started) * 1000.0, results.height)
        return {"object_id": object_id, "release": found_release, "k": k, "results": _with_cutout_urls(results)}

    def object(self, object_id: str, release: str | None) -> dict[str, Any]:
        detail = object_detail(self.warehouse, check_object_id(object_id), release)
        return {**detail, "cutout_url": cutout_url(detail["object_id"], detail["release"])}

    def cone(self, ra: float, dec: float, radius_arcsec: float, k: int, release: str | None) -> dict[str, Any]:
        started = time.perf_counter()
        found = cone_search(self.warehouse, ra, dec, radius_arcsec, k, release)
        self._log("cone", f"{ra:.6f} {dec:+.6f} r={radius_arcsec:g}\"", k, release, None,
                  (time.perf_counter() - started) * 1000.0, found.height)
        return {"ra": ra, "dec": dec, "radius_arcsec": radius_arcsec, "results": _with_cutout_urls(found)}

    def cutout(self, object_id: str, release: str | None) -> tuple[bytes, str]:
        """The PNG and its ETag (the source image's sha256: the same pixels, the same tag)."""
        row = locate(self.warehouse, check_object_id(object_id), release)
        return cutout_png(self.warehouse.lake, row), str(row.get("sha256") or "")

    def models(self) -> dict[str, Any]:
        releases = sorted(self._served_releases())
        return {"default_version": self.served.latest_version(), "rerank_available": self.rerank_available(),
                "releases": releases, "loaded_versions": self.served.loaded_versions(),
                "versions": self._cached_versions()}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "default_version": self.served.latest_version(),
                "search_log_error": self.search_log.last_error if self.search_log else None}

    # -- helpers -----------------------------------------------------------------------------------------------
    def _served_releases(self) -> set[str]:
        try:
            _, service = self.served.service()
        except LookupError:
            return set()
        return service.served_releases or set()

    def _cached_versions(self) -> list[dict[str, Any]]:
        """MLflow's and the lake's view of the versions, read at most every ``MODELS_REFRESH_S``; the latest
        flag always follows the pointer now (the page learns of a new version within the poll)."""
        latest = self.served.latest_version()
        with self._versions_lock:
            stale = self._versions is None or time.monotonic() - self._versions_read_at > MODELS_REFRESH_S
            if stale or not any(v["version"] == latest for v in self._versions):
                self._versions, self._versions_read_at = self._list_versions(), time.monotonic()
            return [{**v, "latest": v["version"] == latest} for v in self._versions]

    def _log(self, kind: str, query: str, k: int, release: str | None, version: int | None, latency_ms: float,
             n_results: int) -> None:
        if self.search_log is not None:
            self.search_log.record(SearchRecord(source=self.log_source, kind=kind, query=query, k=k, release=release,
                                                model_version=version, latency_ms=latency_ms, n_results=n_results))
