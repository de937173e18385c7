"""The OpenAPI document (recharge_server/openapi.yaml) and the server agree: fields, types, limits, outcomes, errors."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from cardmgmt.recharge import Outcome
from ivr import fields, protocol
from recharge_server import sales_point
from recharge_server.api import ERRORS

DOC = Path(__file__).resolve().parents[2] / "recharge_server" / "openapi.yaml"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(DOC.read_text(encoding="utf-8"))


def _resolver(spec: dict[str, Any]) -> Any:
    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    return resolve


def test_it_is_openapi_3(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.0")
    assert set(spec["paths"]) == {f"/v1/{e}" for e in protocol.REQUESTS} | {"/v1/sales", "/v1/health", "/metrics"}


def _fields_agree(resolve: Any, schema: dict[str, Any], fields: tuple[protocol.Field, ...]) -> None:
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == [f.name for f in fields]
    for f in fields:
        prop = resolve(schema["properties"][f.name])
        assert prop["type"] == f.kind, f.name
        if f.kind == "string":
            assert prop["pattern"] == f"^{f.pattern}$", f.name
            assert prop["maxLength"] == f.max_length, f.name
        else:
            assert (prop["minimum"], prop["maximum"]) == (f.minimum, f.maximum), f.name


@pytest.mark.parametrize("endpoint", sorted(protocol.REQUESTS))
def test_request_fields_agree(spec: dict[str, Any], endpoint: str) -> None:
    resolve = _resolver(spec)
    op = spec["paths"][f"/v1/{endpoint}"]["post"]
    schema = resolve(op["requestBody"]["content"]["application/json"]["schema"])
    fields = protocol.REQUESTS[endpoint]
    _fields_agree(resolve, schema, fields)
    assert schema["required"] == [f.name for f in fields]


def test_the_sale_request_agrees(spec: dict[str, Any]) -> None:
    resolve = _resolver(spec)
    op = spec["paths"][sales_point.PATH]["post"]
    schema = resolve(op["requestBody"]["content"]["application/json"]["schema"])
    _fields_agree(resolve, schema, sales_point.SALE_FIELDS)
    assert schema["required"] == ["key"]
    assert [tuple(one["required"]) for one in schema["oneOf"]] == list(sales_point.SHAPES)


def test_outcomes_agree(spec: dict[str, Any]) -> None:
    assert spec["components"]["schemas"]["Outcome"]["enum"] == [o.value for o in Outcome]


def test_error_codes_agree(spec: dict[str, Any]) -> None:
    assert set(spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"]) == set(ERRORS)


def test_the_signing_headers_and_the_body_limit_are_documented(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert {s["name"] for s in schemes.values()} == set(protocol.SIGNED_HEADERS)
    assert spec["security"] == [{name: [] for name in schemes}]
    assert str(protocol.MAX_BODY) in spec["info"]["description"]
    assert spec["paths"]["/v1/health"]["get"]["security"] == []


def test_the_pin_length_in_the_description_is_the_pin_length(spec: dict[str, Any]) -> None:
    assert f"a card PIN has {fields.PIN_DIGITS})" in spec["components"]["schemas"]["Pin"]["description"]


def test_the_busy_refusal_is_documented_as_the_server_sends_it(spec: dict[str, Any]) -> None:
    from recharge_server.api import BUSY, RETRY_AFTER

    resolve = _resolver(spec)
    schema = resolve(spec["components"]["schemas"]["ServiceUnavailable"])
    assert schema["properties"]["error"]["enum"] == [BUSY]
    assert schema["properties"]["outcome"]["enum"] == [protocol.SERVICE_UNAVAILABLE]
    response = spec["components"]["responses"]["ServiceUnavailable"]
    assert "Retry-After" in response["headers"] and int(RETRY_AFTER) >= response["headers"]["Retry-After"]["schema"]["minimum"]
    for endpoint in protocol.REQUESTS:
        assert spec["paths"][f"/v1/{endpoint}"]["post"]["responses"]["503"] == {"$ref": "#/components/responses/ServiceUnavailable"}
