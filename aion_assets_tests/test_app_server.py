"""The server's error contract on an empty stack, in process: nothing served yet is a clear 404, and a failure
inside an endpoint is a one-line 500 that says nothing of the server's internals."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from aion_assets.app.api import SearchApi
from aion_assets.app.served import ServedModels
from aion_assets.app.server import build_app

SECRET = "/home/someone/private/path"


def _client(warehouse, list_versions) -> TestClient:
    served = ServedModels(warehouse.lake, make_service=lambda version: pytest.fail("nothing to load"))
    api = SearchApi(warehouse, served, None, rerank_available=lambda: False, list_versions=list_versions)
    return TestClient(build_app(api), raise_server_exceptions=False)


def test_before_any_model_search_says_what_to_materialize(warehouse) -> None:
    client = _client(warehouse, list_versions=lambda: [])
    response = client.get("/api/search", params={"q": "a ring galaxy"})
    assert response.status_code == 404 and "materialize alignment_model" in response.json()["error"]
    assert client.get("/api/models").json() == {"default_version": None, "rerank_available": False, "releases": [],
                                                 "loaded_versions": [], "versions": []}
    assert client.get("/api/health").json()["status"] == "ok"


def test_an_internal_failure_is_a_one_line_500_without_its_trace(warehouse) -> None:
    def broken() -> list:
        raise RuntimeError(f"cannot open {SECRET}")

    client = _client(warehouse, list_versions=broken)
    response = client.get("/api/models")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error; the server's log has the details"}
    assert SECRET not in response.text and "Traceback" not in response.text
    assert client.get("/api/health").status_code == 200  # and it goes on serving


def test_other_methods_and_paths_answer_json(warehouse) -> None:
    client = _client(warehouse, list_versions=lambda: [])
    posted = client.post("/api/search")
    assert posted.status_code == 405 and "GET" in posted.json()["error"]
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and "/openapi.json" in missing.json()["error"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="search-form"' in page.text
    assert client.get("/static/app.js").status_code == 200
