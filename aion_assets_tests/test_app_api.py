"""The JSON API against a running `aion serve` over a small real stack: the contract, the errors, the log, and a
newer model version picked up without a restart."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from aion_assets_tests.app_stack import build_stack, land_new_version

RESULT_FIELDS = {"rank", "object_id", "release", "score", "cutout_url"}


@pytest.fixture(scope="module")
def app(tmp_path_factory, sample_releases: Path, shared_data: Path):
    from aion_assets.app.process import running_server

    root = tmp_path_factory.mktemp("app")
    patch, instance = build_stack(root, sample_releases, shared_data)
    log = root / "serve.log"
    with running_server(log_path=log) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        yield {"client": client, "instance": instance, "root": root, "log": log}
    patch.undo()


def _warehouse():
    from aion_assets.platform.warehouse import stack_warehouse

    return stack_warehouse()


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_search_answers_ranked_results_from_the_served_version(app) -> None:
    client = app["client"]
    found = _ok(client.get("/api/search", params={"q": "a ring galaxy", "k": 7}))
    assert found["model_version"] == 1 and found["k"] == 7 and found["reranked"] is False
    assert found["latency_ms"] > 0
    results = found["results"]
    assert [r["rank"] for r in results] == list(range(1, 8))
    # a version that scores artefacts adds the score; likely artefacts come after the rest, each group by score
    assert all(set(r) - {"artefact_score"} == RESULT_FIELDS for r in results)
    likely = [r.get("artefact_score", 0.0) >= 0.5 for r in results]
    assert likely == sorted(likely)
    for group in (False, True):
        scores = [r["score"] for r, artefact in zip(results, likely) if artefact == group]
        assert scores == sorted(scores, reverse=True)

    in_release = _ok(client.get("/api/search", params={"q": "a ring galaxy", "k": 5, "release": "gz1-sdss"}))
    assert {r["release"] for r in in_release["results"]} == {"gz1-sdss"}
    pinned = _ok(client.get("/api/search", params={"q": "a ring galaxy", "k": 7, "model_version": 1}))
    assert pinned["results"] == results


def test_the_cutout_is_the_lake_image_of_that_object(app) -> None:
    from aion_assets.platform.layout import shard_dir

    client = app["client"]
    result = _ok(client.get("/api/search", params={"q": "an edge-on disk galaxy", "k": 1}))["results"][0]
    response = client.get(result["cutout_url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    warehouse = _warehouse()
    row = warehouse.query("SELECT shard, row, sha256 FROM cutouts WHERE object_id = ? AND release = ?",
                          [result["object_id"], result["release"]]).to_dicts()[0]
    stored = warehouse.lake.read_array(*shard_dir(result["release"], row["shard"]), "rgb.npy")[row["row"]]
    assert np.array_equal(shown, stored)
    again = client.get(result["cutout_url"], headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and response.headers["etag"] == f'"{row["sha256"]}"'


def test_more_like_this_excludes_the_object_itself(app) -> None:
    client = app["client"]
    first = _ok(client.get("/api/search", params={"q": "a spiral galaxy", "k": 1}))["results"][0]
    similar = _ok(client.get(f"/api/similar/{first['object_id']}", params={"k": 6, "release": first["release"]}))
    assert similar["object_id"] == first["object_id"] and similar["release"] == first["release"]
    ids = [(r["release"], r["object_id"]) for r in similar["results"]]
    assert len(ids) == 6 and (first["release"], first["object_id"]) not in ids
    scores = [r["score"] for r in similar["results"]]
    assert scores == sorted(scores, reverse=True)


def test_an_object_has_its_catalogue_row_labels_and_recorded_description(app) -> None:
    client = app["client"]
    warehouse = _warehouse()
    described = warehouse.query("SELECT object_id, release, summary FROM descriptions ORDER BY object_id LIMIT 1")
    object_id, release = described["object_id"][0], described["release"][0]
    detail = _ok(client.get(f"/api/objects/{object_id}"))
    assert detail["release"] == release and detail["description"]["summary"] == described["summary"][0]
    labels = warehouse.query("SELECT name, value FROM labels WHERE object_id = ? AND release = ?", [object_id, release])
    assert detail["labels"] == dict(labels.rows()) and detail["labels"]
    assert detail["catalogue"]["sha256"] and "shard" not in detail["catalogue"]
    assert detail["coordinates"] is None  # gz1-sdss publishes no positions
    ring = warehouse.query("SELECT object_id, ra, dec FROM cutouts WHERE release = 'gz-decals-rings' LIMIT 1")
    with_position = _ok(client.get(f"/api/objects/{ring['object_id'][0]}", params={"release": "gz-decals-rings"}))
    assert with_position["coordinates"] == {"ra": ring["ra"][0], "dec": ring["dec"][0]}
    assert with_position["description"] is None or with_position["description"]["summary"]


def test_a_cone_search_finds_what_astropy_says_is_inside(app) -> None:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    client = app["client"]
    positions = _warehouse().query("SELECT object_id, ra, dec FROM cutouts WHERE ra IS NOT NULL ORDER BY object_id")
    centre = positions.row(0, named=True)
    radius = 4 * 3600.0  # four degrees: several of the rings, not all
    found = _ok(client.get("/api/cone", params={"ra": centre["ra"], "dec": centre["dec"], "radius_arcsec": radius,
                                               "k": 1000}))
    sky = SkyCoord(positions["ra"].to_numpy() * u.deg, positions["dec"].to_numpy() * u.deg)
    separations = sky.separation(SkyCoord(centre["ra"] * u.deg, centre["dec"] * u.deg)).arcsec
    inside = set(positions["object_id"].filter(separations <= radius).to_list())
    assert {r["object_id"] for r in found["results"]} == inside and len(inside) < positions.height
    assert found["results"][0]["object_id"] == centre["object_id"]
    assert found["results"][0]["separation_arcsec"] == pytest.approx(0.0, abs=1e-3)
    by_id = dict(zip(positions["object_id"].to_list(), separations))
    for result in found["results"]:
        assert result["separation_arcsec"] == pytest.approx(by_id[result["object_id"]], abs=1e-3)
    nearest_two = _ok(client.get("/api/cone", params={"ra": centre["ra"], "dec": centre["dec"],
                                                     "radius_arcsec": radius, "k": 2}))
    assert [r["object_id"] for r in nearest_two["results"]] == [r["object_id"] for r in found["results"][:2]]


def test_models_lists_the_versions_with_their_figures(app) -> None:
    models = _ok(app["client"].get("/api/models"))
    assert models["default_version"] == 1 and models["rerank_available"] is False
    assert models["releases"] == ["gz-decals-rings", "gz1-sdss"]
    (version,) = models["versions"]
    assert version["version"] == 1 and version["latest"] and version["has_index"] and version["mlflow_run_id"]
    assert 0 <= version["ndcg_at_10_release"] <= 1 and version["n_train"] > 0


def test_the_openapi_document_describes_what_the_server_enforces(app) -> None:
    client = app["client"]
    document = _ok(client.get("/openapi.json"))
    search = {p["name"] for p in document["paths"]["/api/search"]["get"]["parameters"]}
    assert search == {"q", "k", "release", "model_version", "rerank", "candidates"}
    refused = client.get("/api/search", params={"q": "a lens", "limit": 3})
    assert refused.status_code == 400 and "limit" in refused.json()["error"]


@pytest.mark.parametrize(("path", "params", "status", "says"), [
    ("/api/search", {"q": ""}, 400, "q"),
    ("/api/search", {"q": "   \t "}, 400, "empty"),
    ("/api/search", {"q": "x" * 1001}, 400, "1000"),
    ("/api/search", {}, 400, "q is required"),
    ("/api/search", {"q": "a ring", "k": 0}, 400, "k must be in [1, 1000]"),
    ("/api/search", {"q": "a ring", "k": 1001}, 400, "k must be in [1, 1000]"),
    ("/api/search", {"q": "a ring", "k": "ten"}, 400, "integer"),
    ("/api/search", {"q": "a ring", "release": "no-such-release"}, 400, "known: gz-decals-rings, gz1-sdss"),
    ("/api/search", {"q": "a ring", "model_version": 99}, 404, "model version 99"),
    ("/api/search", {"q": "a ring", "rerank": "true"}, 400, "ANTHROPIC_API_KEY"),
    ("/api/objects/no-such-object", {}, 404, "not found"),
    ("/api/similar/no-such-object", {}, 404, "no-such-object"),
    ("/api/cutouts/no-such-object.png", {}, 404, "not found"),
    ("/api/cutouts/..%2F..%2F..%2Fetc%2Fpasswd.png", {}, 400, "never by a path"),
    ("/api/objects/%2E%2E%2Fwarehouse.duckdb", {}, 400, "never by a path"),
    ("/api/cone", {"ra": 360, "dec": 0}, 400, "ra must be in [0, 360)"),
    ("/api/cone", {"ra": -1, "dec": 0}, 400, "ra must be in"),
    ("/api/cone", {"ra": 10, "dec": 90.5}, 400, "dec must be in [-90, 90]"),
    ("/api/cone", {"ra": 10, "dec": 0, "radius_arcsec": 0}, 400, "radius_arcsec"),
    ("/api/cone", {"ra": "east", "dec": 0}, 400, "number"),
    ("/api/no-such-endpoint", {}, 404, "no such endpoint"),
])
def test_bad_input_is_a_one_line_json_error_and_the_server_goes_on(app, path, params, status, says) -> None:
    client = app["client"]
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert says in message and "\n" not in message and "Traceback" not in response.text
    assert _ok(client.get("/api/health"))["status"] == "ok"


def test_every_search_served_is_logged_without_the_warehouse_lock(app) -> None:
    client = app["client"]
    queries = [f"logged query {i}" for i in range(3)]
    for query in queries:
        _ok(client.get("/api/search", params={"q": query, "k": 4, "release": "gz1-sdss"}))
    deadline = time.monotonic() + 30  # the server writes its batch every 2 s
    rows = None
    while time.monotonic() < deadline:
        if "search_log" in _warehouse().tables():
            rows = _warehouse().query("SELECT * FROM search_log WHERE query LIKE 'logged query %' ORDER BY query")
            if rows.height == len(queries):
                break
        time.sleep(0.5)
    assert rows is not None and rows["query"].to_list() == queries
    assert set(rows["source"]) == {"app"} and set(rows["kind"]) == {"text"} and set(rows["k"]) == {4}
    assert set(rows["release"]) == {"gz1-sdss"} and set(rows["model_version"]) == {1}
    assert set(rows["n_results"]) == {4} and all(ms > 0 for ms in rows["latency_ms"])
    assert all(row["searched_at"] is not None for row in rows.to_dicts())


def test_what_people_search_for_is_an_sql_model(app) -> None:
    from aion_assets.definitions import build_definitions
    from aion_assets.runner import materialize

    client = app["client"]
    for _ in range(3):
        _ok(client.get("/api/search", params={"q": "A Merger ", "k": 3}))
    _ok(client.get("/api/search", params={"q": "a merger", "k": 3}))
    _ok(client.get("/api/cone", params={"ra": 1.0, "dec": 1.0, "radius_arcsec": 10}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        logged = _warehouse().query("SELECT count(*) AS n FROM search_log WHERE lower(trim(query)) = 'a merger'")
        if logged["n"][0] == 4:
            break
        time.sleep(0.5)
    summaries = materialize(build_definitions(), "key:search_queries", app["instance"], progress=lambda _: None)
    assert summaries and all(s.success for s in summaries)
    table = _warehouse().query("SELECT * FROM search_queries")
    merger = table.filter(table["query"] == "a merger").to_dicts()[0]
    assert merger["searches"] == 4 and merger["mean_results"] == 3
    assert not math.isnan(merger["p50_latency_ms"])
    cones = table.filter(table["kind"] == "cone")["query"].to_list()
    assert '1.000000 +1.000000 r=10"' in cones


def test_with_a_key_the_vlm_reranks_the_top_candidates(app, fake_anthropic, dummy_api_key, monkeypatch) -> None:
    from aion_assets.app.process import running_server

    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.base_url)  # a local Anthropic-compatible server
    with running_server(log_path=app["log"]) as base_url, httpx.Client(base_url=base_url, timeout=120) as client:
        assert _ok(client.get("/api/models"))["rerank_available"] is True
        found = _ok(client.get("/api/search", params={"q": "a ring galaxy", "k": 5, "rerank": "true",
                                                      "candidates": 8}))
    assert found["reranked"] is True and [r["rank"] for r in found["results"]] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in found["results"]]
    assert scores == sorted(scores, reverse=True) and all(1 <= s <= 10 for s in scores)  # the VLM's 1-10 scale
    assert fake_anthropic.count("POST", "/v1/messages") == 8
    stored = _warehouse().query("SELECT object_id FROM rerank_results ORDER BY rank_after")
    assert stored.height == 8 and stored["object_id"].head(5).to_list() == [r["object_id"] for r in found["results"]]


def test_a_newer_version_is_served_without_a_restart(app) -> None:
    from aion_assets.app.served import ServedModels
    from aion_assets.platform.settings import get_settings
    from aion_assets.search.service import SearchService, ranked

    client = app["client"]
    query = {"q": "a ring galaxy with a prominent ring", "k": 8}
    before = _ok(client.get("/api/search", params=query))
    assert before["model_version"] == 1
    warehouse = _warehouse()
    held = ServedModels(warehouse.lake, lambda v: SearchService(warehouse, get_settings().text_encoder, "unused", v))
    version, in_flight = held.service()  # a request that started on version 1
    land_new_version(app["instance"], seed=1)

    deadline = time.monotonic() + 30
    while _ok(client.get("/api/models"))["default_version"] != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    after = _ok(client.get("/api/search", params=query))
    assert after["model_version"] == 2
    assert [r["score"] for r in after["results"]] != [r["score"] for r in before["results"]]
    assert _ok(client.get("/api/search", params={**query, "model_version": 1}))["results"] == before["results"]
    versions = {v["version"]: v for v in _ok(client.get("/api/models"))["versions"]}
    assert versions[2]["latest"] and not versions[1]["latest"]
    # The request that started on version 1 finishes on version 1's heads and index.
    assert version == 1 and held.service()[0] == 2
    finished = ranked(in_flight.search_index, in_flight.encode_query(query["q"]), 8)
    assert finished["score"].to_list() == pytest.approx([r["score"] for r in before["results"]], abs=1e-6)


def test_a_remerged_index_is_served_without_a_restart(app) -> None:
    """A new shard re-merges the served version's index (a new build in its folder): a running server swaps the
    new build in by itself, and answers from the loaded one until it is ready."""
    from aion_assets.app.served import ServedModels
    from aion_assets.definitions import build_definitions
    from aion_assets.platform.layout import search_index_dir
    from aion_assets.platform.settings import get_settings
    from aion_assets.runner import materialize
    from aion_assets.search.artifacts import index_build
    from aion_assets.search.service import SearchService, ranked

    warehouse = _warehouse()
    held = ServedModels(warehouse.lake, lambda v: SearchService(warehouse, get_settings().text_encoder, "unused", v),
                        pointer_ttl_s=0.1)
    version, first = held.service()
    build = index_build(warehouse.lake, search_index_dir(version))
    summaries = materialize(build_definitions(), "key:search_index", app["instance"], progress=lambda line: None)
    assert summaries and all(s.success for s in summaries)
    assert index_build(warehouse.lake, search_index_dir(version)) not in (None, build)

    deadline = time.monotonic() + 60
    while held.service()[1] is first and time.monotonic() < deadline:
        time.sleep(0.2)
    now_version, reloaded = held.service()
    assert now_version == version and reloaded is not first
    query = first.encode_query("an edge-on disc galaxy")
    assert ranked(reloaded.search_index, query, 10)["object_id"].to_list() == \
        ranked(first.search_index, query, 10)["object_id"].to_list()
