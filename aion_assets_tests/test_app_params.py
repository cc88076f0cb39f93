"""The API's parameters: parsed and checked from their declarations, and documented from the same ones."""

from __future__ import annotations

import pytest

from aion_assets.app.api import ENDPOINTS
from aion_assets.app.openapi import openapi_document
from aion_assets.app.params import BadRequest, Param, check_object_id, parse_query

K = Param("k", int, "how many", default=24, minimum=1, maximum=1000)
RA = Param("ra", float, "degrees", required=True, minimum=0, maximum=360, exclusive_maximum=True)
Q = Param("q", str, "text", required=True, max_length=10)


def test_values_are_parsed_and_defaults_filled() -> None:
    assert parse_query({"k": "7", "ra": "359.5", "q": "  ring  "}, [K, RA, Q]) == {"k": 7, "ra": 359.5, "q": "ring"}
    assert parse_query({"ra": "0", "q": "x"}, [K, RA, Q])["k"] == 24


@pytest.mark.parametrize(("query", "message"), [
    ({"ra": "1", "q": "x", "k": "0"}, "k must be in [1, 1000], not 0"),
    ({"ra": "1", "q": "x", "k": "1001"}, "k must be in [1, 1000], not 1001"),
    ({"ra": "1", "q": "x", "k": "2.5"}, "k must be an integer, not '2.5'"),
    ({"ra": "360", "q": "x"}, "ra must be in [0, 360), not 360"),
    ({"ra": "nan", "q": "x"}, "ra must be a finite number"),
    ({"q": "x"}, "ra is required"),
    ({"ra": "1", "q": "   "}, "q must not be empty"),
    ({"ra": "1", "q": "x" * 11}, "q is 11 characters long; the limit is 10"),
    ({"ra": "1", "q": "x", "model": "2"}, "unknown parameter 'model'"),
])
def test_each_bad_value_is_refused_with_a_message_naming_it(query: dict, message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_query(query, [K, RA, Q])
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("object_id", ["../../etc/passwd", "a/b", "a\\b", "..", "x\x00y", "", "x" * 257])
def test_an_id_that_names_a_path_is_refused(object_id: str) -> None:
    with pytest.raises(BadRequest):
        check_object_id(object_id)


@pytest.mark.parametrize("object_id", ["J124236.60+012323.0", "588848901537202306", "AT_asteroid"])
def test_real_ids_pass(object_id: str) -> None:
    assert check_object_id(object_id) == object_id


def test_the_document_lists_every_endpoint_with_the_parameters_it_enforces() -> None:
    document = openapi_document(ENDPOINTS)
    assert document["openapi"].startswith("3.1")
    assert {"/api/search", "/api/similar/{object_id}", "/api/objects/{object_id}", "/api/cone",
            "/api/cutouts/{object_id}.png", "/api/models"} <= set(document["paths"])
    for endpoint in ENDPOINTS:
        operation = document["paths"][endpoint.path]["get"]
        assert [p["name"] for p in operation["parameters"]] == [p.name for p in endpoint.params]
        for declared, documented in zip(endpoint.params, operation["parameters"]):
            assert documented["in"] == declared.location
            if declared.maximum is not None:
                bound = "exclusiveMaximum" if declared.exclusive_maximum else "maximum"
                assert documented["schema"][bound] == declared.maximum
        referenced = operation["responses"]["200"]["content"]
        for content in referenced.values():
            ref = content["schema"].get("$ref")
            assert ref is None or ref.rsplit("/", 1)[-1] in document["components"]["schemas"]
    search = {p["name"]: p for p in document["paths"]["/api/search"]["get"]["parameters"]}
    assert search["k"]["schema"] == {"type": "integer", "default": 24, "minimum": 1, "maximum": 1000}
    assert search["q"]["required"] and search["q"]["schema"]["maxLength"] == 1000
