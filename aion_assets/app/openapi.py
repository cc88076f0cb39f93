"""The OpenAPI 3.1 description of the JSON API, written from the same endpoint declarations the server enforces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aion_assets.app.api import Endpoint

_NUMBER = {"type": "number"}
_TEXT = {"type": "string"}
_INT = {"type": "integer"}
_NULLABLE_NUMBER = {"type": ["number", "null"]}


def _object(required: Sequence[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


_RESULT = _object(["rank", "object_id", "release", "score", "cutout_url"], rank=_INT, object_id=_TEXT,
                  release=_TEXT, score=_NUMBER, cutout_url=_TEXT,
                  artefact_score={"type": "number", "description": "Text search with a version that scores "
                                  "artefacts: the calibrated probability that the cutout is a star, a satellite "
                                  "trail, a diffraction spike or empty sky. Likely ones (>= 0.5) are listed after "
                                  "the rest unless the query asks for artefacts."})
SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _object(["error"], error={"type": "string", "description": "What was wrong, in one line."}),
    "Result": _RESULT,
    "SearchResults": _object(
        ["query", "k", "release", "model_version", "reranked", "latency_ms", "results"], query=_TEXT, k=_INT,
        release={"type": ["string", "null"]}, model_version=_INT, reranked={"type": "boolean"},
        latency_ms=_NUMBER, results={"type": "array", "items": {"$ref": "#/components/schemas/Result"}}),
    "SimilarResults": _object(
        ["object_id", "release", "k", "results"], object_id=_TEXT, release=_TEXT, k=_INT,
        results={"type": "array", "items": {"$ref": "#/components/schemas/Result"}}),
    "ObjectDetail": _object(
        ["object_id", "release", "coordinates", "catalogue", "labels", "description", "cutout_url"],
        object_id=_TEXT, release=_TEXT, cutout_url=_TEXT,
        coordinates={"type": ["object", "null"], "properties": {"ra": _NUMBER, "dec": _NUMBER}},
        catalogue={"type": "object", "description": "The object's row of the `cutouts` table."},
        labels={"type": "object", "additionalProperties": {"type": "string"}},
        description={"type": ["object", "null"], "properties": {
            "summary": _TEXT, "description": _TEXT, "model": _TEXT, "prompt_version": _TEXT}}),
    "ConeResults": _object(
        ["ra", "dec", "radius_arcsec", "results"], ra=_NUMBER, dec=_NUMBER, radius_arcsec=_NUMBER,
        results={"type": "array", "items": _object(
            ["rank", "object_id", "release", "ra", "dec", "separation_arcsec", "cutout_url"], rank=_INT,
            object_id=_TEXT, release=_TEXT, ra=_NUMBER, dec=_NUMBER, separation_arcsec=_NUMBER,
            cutout_url=_TEXT)}),
    "ModelVersion": _object(
        ["version", "latest", "production", "has_index"], version=_INT, latest={"type": "boolean"},
        production={"type": "boolean"}, has_index={"type": "boolean"}, in_lake={"type": "boolean"},
        n_train={"type": ["integer", "null"]}, val_mrr_mean=_NULLABLE_NUMBER, ndcg_at_10_release=_NULLABLE_NUMBER,
        ndcg_at_10_survey=_NULLABLE_NUMBER, mlflow_run_id={"type": ["string", "null"]}),
    "Models": _object(
        ["default_version", "rerank_available", "releases", "versions"],
        default_version={"type": ["integer", "null"]}, rerank_available={"type": "boolean"},
        releases={"type": "array", "items": _TEXT}, loaded_versions={"type": "array", "items": _INT},
        versions={"type": "array", "items": {"$ref": "#/components/schemas/ModelVersion"}}),
    "Health": _object(["status", "default_version"], status=_TEXT, default_version={"type": ["integer", "null"]},
                      search_log_error={"type": ["string", "null"]}),
}

_ERRORS = {
    "400": "A parameter is missing, malformed or out of range; an unknown release; an ambiguous object id.",
    "404": "An unknown object id or model version.",
    "503": "The warehouse is busy; retry.",
}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    if endpoint.media_type == "image/png":
        ok = {"description": "PNG image", "content": {"image/png": {"schema": {"type": "string",
                                                                               "format": "binary"}}}}
    else:
        ok = {"description": "OK", "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{endpoint.response_schema}"}}}}
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {"get": {
        "operationId": endpoint.method, "summary": endpoint.summary,
        "parameters": [p.openapi() for p in endpoint.params],
        "responses": {"200": ok, **{code: {"description": text, "content": error_body}
                                    for code, text in _ERRORS.items()}},
    }}


def openapi_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "AION search", "version": "1",
                 "description": "Semantic search over astronomical cutouts, served from the latest materialized "
                                "model version (or one pinned per request)."},
        "paths": {endpoint.path: _operation(endpoint) for endpoint in endpoints},
        "components": {"schemas": SCHEMAS},
    }
