"""Fuzzing a live recharge server: whatever a correctly signed request carries, the answer is well formed.

One real server, built by ``makeService`` with the real recharge core over the
card database (SQLite and PostgreSQL) and issued cards, listens on a loopback
port of a live reactor (as in ``test_service``).  Hypothesis sends it signed
``POST`` requests whose bodies come from the request schemas of
``recharge_server/openapi.yaml``: the documented shape with conforming or random values,
with fields missing, extra or of the wrong type, huge strings, JSON that is
not an object, bytes that are not JSON, and bytes that are not UTF-8.  Every
answer must be a 200 with an outcome the contract knows, or a 4xx whose body
is one line of JSON ``{"error", "message"}`` with the status its code fixes;
never a 5xx.  Afterwards the server is healthy and still recharges a card.
"""

import http.client
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.threads import blockingCallFromThread

from cardmgmt.keys import load_api_key
from cardmgmt.marketing import Account
from cardmgmt.recharge import Outcome
from ivr import protocol
from ivr.client import RechargeClient, tls_context
from marketing_iface.null import NullMarketing
from recharge_server.api import ERRORS
from recharge_server.service import makeService
from testkit.lifecycle import sold_batch

DOC = Path(__file__).resolve().parents[2] / "recharge_server" / "openapi.yaml"
SPEC = yaml.safe_load(DOC.read_text(encoding="utf-8"))
ACCOUNT = Account("3100000001", "张三明", 12_850)  # the fuzzing hits it, wrong PINs and lockouts included
SPARE = Account("3100000002", "李四", -4_620)  # for the recharge made after the fuzzing
OUTCOMES = {o.value for o in Outcome}
ENDPOINTS = sorted(protocol.REQUESTS)


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def operation(endpoint: str) -> dict[str, Any]:
    return SPEC["paths"][f"/v1/{endpoint}"]["post"]


def request_schema(endpoint: str) -> dict[str, Any]:
    return resolve(operation(endpoint)["requestBody"]["content"]["application/json"]["schema"])


def answer_schema(endpoint: str) -> dict[str, Any]:
    return resolve(operation(endpoint)["responses"]["200"]["content"]["application/json"]["schema"])


# --- bodies -------------------------------------------------------------------------------

# Any JSON value, NaN and the infinities included (Python's json reads and writes them).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
huge_strings = st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "9", "é", "界", "\x00"]), st.integers(1000, 6000))


def conforming(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value the schema accepts."""
    if schema["type"] == "integer":
        return st.integers(schema["minimum"], schema["maximum"])
    return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: len(s) <= schema["maxLength"])


def good_value(schema: dict[str, Any], known: list[Any]) -> st.SearchStrategy[Any]:
    """A conforming value, often one the server knows."""
    return st.one_of(conforming(schema), st.sampled_from(known)) if known else conforming(schema)


def field_value(schema: dict[str, Any], known: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly conforming, sometimes of the right type with any value, sometimes anything at all."""
    same_type = st.integers() if schema["type"] == "integer" else st.text(max_size=80)
    good = good_value(schema, known)
    return st.one_of(good, good, good, same_type, json_values, huge_strings)


# Values the server knows, so that valid requests get past "unknown account" and "wrong PIN":
# the account, real PINs (given by the fixture), and a few call ids that quotes and commits share.
KNOWN: dict[str, list[Any]] = {"account_no": [ACCOUNT.account_no], "call_id": ["fz-1", "fz-2", "fz-3"], "seq": [1, 2]}


@st.composite
def shaped(draw: st.DrawFn, endpoint: str) -> dict[str, Any]:
    """The endpoint's object, each field conforming or not, now and then one missing or one extra."""
    schema = request_schema(endpoint)
    value = good_value if draw(st.booleans()) else field_value  # half of them valid throughout
    body = {name: draw(value(resolve(prop), KNOWN.get(name, []))) for name, prop in schema["properties"].items()}
    if draw(st.integers(0, 9)) == 0:
        body.pop(draw(st.sampled_from(sorted(body))))
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=12))] = draw(json_values)
    return body


def encode(obj: Any, ascii_only: bool) -> bytes:
    # Lone surrogates (from "\ud800" escapes) survive as CESU-like bytes: invalid UTF-8, which is the point.
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def not_utf8(draw: st.DrawFn, endpoint: str) -> bytes:
    """A JSON body spoiled by bytes that are not UTF-8, or encoded in Latin-1 or UTF-16."""
    text = json.dumps(draw(shaped(endpoint)), ensure_ascii=False)
    how = draw(st.sampled_from(["insert", "latin-1", "utf-16"]))
    if how == "insert":
        raw = text.encode("utf-8", "surrogatepass")
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xfe\xff"])) + raw[at:]
    return text.encode(how, "replace")


def bodies(endpoint: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(encode, shaped(endpoint), st.booleans()),
        st.builds(encode, shaped(endpoint), st.booleans()),
        st.builds(encode, json_values, st.booleans()),  # JSON, not an object (or an object of anything)
        not_utf8(endpoint),
        st.binary(max_size=300),  # not JSON at all
        st.builds(lambda n: b"[" * n + b"]" * n, st.integers(500, 2000)),  # deep nesting
        st.builds(lambda s: json.dumps({"call_id": s, "seq": 1}).encode(), huge_strings),  # over MAX_BODY
    )


cases = st.sampled_from(ENDPOINTS).flatmap(lambda e: st.tuples(st.just(e), bodies(e)))


# --- the server ---------------------------------------------------------------------------


TLS: dict[int, Any] = {}  # port -> a client context trusting that installation's CA


@pytest.fixture
def live(bench: Any, live_reactor: Any) -> Any:
    pins = sorted(sold_batch(bench, "FZ1", quantity=4).items())
    settings_ = bench.system.settings
    server = makeService(settings_, "A", "127.0.0.1", 0, None, live_reactor, marketing=NullMarketing([ACCOUNT, SPARE]))
    blockingCallFromThread(live_reactor, server.startService)
    try:
        TLS[server.port] = tls_context(str(settings_.key_dir / "tls-ca.pem"))
        yield {"port": server.port, "key": load_api_key(settings_.key_dir), "pins": pins}
    finally:
        if server.running:
            blockingCallFromThread(live_reactor, server.stopService)


def post(port: int, key: bytes, endpoint: str, body: bytes) -> tuple[int, bytes, str]:
    path = f"/v1/{endpoint}"
    headers = protocol.sign(key, "POST", path, body, time.time(), client="hotline") | {"Content-Type": "application/json"}
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=TLS[port])
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("content-type") or ""
    finally:
        conn.close()


JSON_TYPES = {"string": str, "integer": int, "boolean": bool}


def check_answer(endpoint: str, status: int, raw: bytes, content_type: str) -> None:
    assert status < 500, f"{endpoint}: HTTP {status}: {raw[:300]!r}"
    assert content_type.startswith("application/json"), content_type
    assert b"\n" not in raw and b"\r" not in raw, raw[:300]
    answer = json.loads(raw)
    assert isinstance(answer, dict)
    if status == 200:
        schema = answer_schema(endpoint)
        assert answer["outcome"] in OUTCOMES, answer
        for name, prop in schema["properties"].items():
            if name in answer:
                kind = resolve(prop)["type"]
                assert isinstance(answer[name], JSON_TYPES[kind]), (name, answer)
        return
    assert 400 <= status < 500, status
    assert set(answer) == {"error", "message"}, answer
    assert ERRORS.get(answer["error"]) == status, answer
    assert isinstance(answer["message"], str) and answer["message"].strip(), answer


def test_signed_fuzzed_bodies_get_a_well_formed_answer_and_the_server_keeps_serving(live: Any) -> None:
    seen: Counter[int] = Counter()
    outcomes: Counter[str] = Counter()
    KNOWN["pin"] = [pin for _serial, pin in live["pins"][:3]]  # the fourth card is kept for the end

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(case=cases)
    def one_request(case: tuple[str, bytes]) -> None:
        endpoint, body = case
        status, raw, content_type = post(live["port"], live["key"], endpoint, body)
        seen[status] += 1
        check_answer(endpoint, status, raw, content_type)
        if status == 200:
            outcomes[json.loads(raw)["outcome"]] += 1

    try:
        one_request()
    finally:
        KNOWN.pop("pin", None)
        print(f"statuses {dict(seen)}, outcomes {dict(outcomes)}")
    # Both sides of the gate were reached: the core answered, and bad requests were refused.
    assert seen[200] and seen[400], seen
    # Still healthy, and a real recharge still goes through.
    conn = http.client.HTTPSConnection("127.0.0.1", live["port"], timeout=5, context=TLS[live["port"]])
    conn.request("GET", "/v1/health")
    health = json.loads(conn.getresponse().read())
    conn.close()
    assert health["db"] == "ok", health
    client = RechargeClient([("127.0.0.1", live["port"])], live["key"], timeout=5, total_timeout=10, tls=TLS[live["port"]])
    _serial, pin = live["pins"][3]
    quote = client.quote(call_id="fuzz-after", seq=1, account_no=SPARE.account_no, pin=pin, caller="")
    assert quote["outcome"] == "ok", quote
    assert client.commit(call_id="fuzz-after", seq=1)["outcome"] == "ok"
