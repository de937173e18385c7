"""Unit tests for ivr.protocol: request signing and the request field schema."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr import protocol
from ivr.protocol import BadSignature, InvalidRequest, MissingHeaders, StaleRequest, sign, validate_request, verify

KEY = bytes(range(32))
NOW = 1_780_000_000.0
BODY = b'{"call_id":"1700000000.1","seq":1}'


def signed(**kw):  # type: ignore[no-untyped-def]
    args = {"key": KEY, "method": "POST", "path": "/v1/commit", "body": BODY, "now": NOW} | kw
    return sign(args["key"], args["method"], args["path"], args["body"], args["now"], client=args.get("client", "hotline"))


def test_a_signed_request_verifies_and_yields_its_nonce() -> None:
    headers = signed()
    assert set(headers) == {"X-Client", "X-Timestamp", "X-Nonce", "X-Signature"}
    assert headers["X-Timestamp"] == str(int(NOW))
    assert verify(KEY, "POST", "/v1/commit", BODY, headers, NOW) == headers["X-Nonce"]


def test_every_signature_has_a_new_128_bit_nonce() -> None:
    nonces = {signed()["X-Nonce"] for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in nonces)


def test_the_signature_is_the_documented_hmac() -> None:
    import hashlib
    import hmac

    h = sign(KEY, "POST", "/v1/commit", BODY, NOW, nonce="0" * 32, client="pos-7")
    text = f"POST\n/v1/commit\npos-7\n{int(NOW)}\n{'0' * 32}\n{hashlib.sha256(BODY).hexdigest()}".encode()
    assert h["X-Signature"] == hmac.new(KEY, text, hashlib.sha256).hexdigest()


def test_header_names_are_matched_without_regard_to_case() -> None:
    headers = {k.lower(): v for k, v in signed().items()}
    assert verify(KEY, "POST", "/v1/commit", BODY, headers, NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"body": BODY.replace(b"1}", b"2}")},
        {"path": "/v1/quote"},
        {"method": "PUT"},
        {"key": bytes(32)},
    ],
    ids=["body", "path", "method", "key"],
)
def test_any_change_breaks_the_signature(change: dict) -> None:  # type: ignore[type-arg]
    headers = signed()
    args = {"key": KEY, "method": "POST", "path": "/v1/commit", "body": BODY} | change
    with pytest.raises(BadSignature):
        verify(args["key"], args["method"], args["path"], args["body"], headers, NOW)


def test_a_tampered_timestamp_or_nonce_breaks_the_signature() -> None:
    for name, value in (("X-Timestamp", str(int(NOW) + 1)), ("X-Nonce", "f" * 32)):
        headers = signed() | {name: value}
        with pytest.raises(BadSignature):
            verify(KEY, "POST", "/v1/commit", BODY, headers, NOW)


@pytest.mark.parametrize("offset", [-31, 31, -3600, 10**6])
def test_a_request_outside_the_skew_is_stale(offset: int) -> None:
    headers = signed(now=NOW + offset)
    with pytest.raises(StaleRequest):
        verify(KEY, "POST", "/v1/commit", BODY, headers, NOW)


@pytest.mark.parametrize("offset", [-30, 0, 30])
def test_a_request_within_the_skew_is_fresh(offset: int) -> None:
    assert verify(KEY, "POST", "/v1/commit", BODY, signed(now=NOW + offset), NOW)


def test_the_skew_is_configurable() -> None:
    with pytest.raises(StaleRequest):
        verify(KEY, "POST", "/v1/commit", BODY, signed(now=NOW - 6), NOW, max_skew=5)


@pytest.mark.parametrize("missing", ["X-Timestamp", "X-Nonce", "X-Signature"])
def test_missing_headers(missing: str) -> None:
    headers = signed()
    del headers[missing]
    with pytest.raises(MissingHeaders):
        verify(KEY, "POST", "/v1/commit", BODY, headers, NOW)


@pytest.mark.parametrize(
    "name,value", [("X-Timestamp", "12.5"), ("X-Timestamp", "-1"), ("X-Nonce", "XYZ"), ("X-Nonce", "A" * 32), ("X-Signature", "00")]
)
def test_malformed_headers_count_as_missing(name: str, value: str) -> None:
    with pytest.raises(MissingHeaders):
        verify(KEY, "POST", "/v1/commit", BODY, signed() | {name: value}, NOW)


def test_errors_form_one_hierarchy_and_never_show_the_key() -> None:
    for cls in (BadSignature, StaleRequest, MissingHeaders):
        assert issubclass(cls, protocol.ProtocolError)
    try:
        verify(KEY, "POST", "/v1/commit", b"x", signed(), NOW)
    except BadSignature as e:
        assert KEY.hex() not in str(e) and "\n" not in str(e)


@given(
    method=st.sampled_from(["GET", "POST", "post"]),
    path=st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=60).map(lambda p: "/" + p),
    body=st.binary(max_size=protocol.MAX_BODY),
    now=st.integers(min_value=0, max_value=10**12 - 1),
    key=st.binary(min_size=1, max_size=64),
)
def test_round_trip(method: str, path: str, body: bytes, now: int, key: bytes) -> None:
    headers = sign(key, method, path, body, now, client="hotline")
    assert verify(key, method, path, body, headers, now) == headers["X-Nonce"]
    with pytest.raises(BadSignature):
        verify(key, method, path, body + b"!", headers, now)


# --- request fields ---------------------------------------------------------------------

GOOD = {
    "account": {"call_id": "1700000000.12", "account_no": "3100000001"},
    "quote": {"call_id": "1700000000.12", "seq": 1, "account_no": "3100000001", "pin": "1" * 18, "caller": "+8613800000000"},
    "commit": {"call_id": "1700000000.12", "seq": 1},
    "cancel": {"call_id": "1700000000.12", "seq": 99},
}


@pytest.mark.parametrize("endpoint", sorted(GOOD))
def test_good_requests_pass(endpoint: str) -> None:
    assert validate_request(endpoint, dict(GOOD[endpoint])) == GOOD[endpoint]


@pytest.mark.parametrize(
    "endpoint,change,words",
    [
        ("commit", {"extra": 1}, "unknown field 'extra'"),
        ("commit", {"seq": True}, "'seq' must be a whole number"),
        ("commit", {"seq": 1.0}, "'seq' must be a whole number"),
        ("commit", {"seq": "1"}, "'seq' must be a whole number"),
        ("commit", {"seq": 0}, "'seq' must be from 1 to 99"),
        ("commit", {"seq": 100}, "'seq' must be from 1 to 99"),
        ("commit", {"call_id": ""}, "'call_id' must be"),
        ("commit", {"call_id": "a b"}, "'call_id' must be"),
        ("commit", {"call_id": "x" * 65}, "'call_id' must be at most 64"),
        ("account", {"account_no": "310000000"}, "'account_no' must be 10 digits"),
        ("account", {"account_no": 3100000001}, "'account_no' must be a string"),
        ("quote", {"pin": "12ab"}, "'pin' must be 1-64 digits"),
        ("quote", {"pin": 123}, "'pin' must be a string"),
        ("quote", {"caller": "abc"}, "'caller' must be"),
    ],
)
def test_bad_fields_are_named_in_one_line(endpoint: str, change: dict, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidRequest) as e:
        validate_request(endpoint, GOOD[endpoint] | change)
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_a_missing_field_is_named() -> None:
    body = dict(GOOD["quote"])
    del body["caller"]
    with pytest.raises(InvalidRequest, match="missing field 'caller'"):
        validate_request("quote", body)


@pytest.mark.parametrize("payload", [[], "x", 1, None])
def test_the_body_must_be_an_object(payload: object) -> None:
    with pytest.raises(InvalidRequest, match="JSON object"):
        validate_request("commit", payload)


def test_a_bad_pin_is_never_repeated_in_the_message() -> None:
    with pytest.raises(InvalidRequest) as e:
        validate_request("quote", GOOD["quote"] | {"pin": "98765x43210"})
    assert "98765" not in str(e.value)


def test_a_hostile_field_name_is_shortened_and_quoted() -> None:
    with pytest.raises(InvalidRequest) as e:
        validate_request("commit", GOOD["commit"] | {"a\nb" * 100: 1})
    assert "\n" not in str(e.value) and len(str(e.value)) < 120


def test_the_schema_agrees_with_the_recharge_core() -> None:
    from cardmgmt import recharge

    assert protocol.SEQ.maximum == recharge.MAX_SEQ
    assert protocol.CALL_ID.problem("1700000000.1") is None and recharge.CALL_ID.match("1700000000.1")
    assert protocol.ACCOUNT_NO.max_length == 10


def test_the_client_name_is_signed() -> None:
    headers = signed(client="pos-7")
    assert verify(KEY, "POST", "/v1/commit", BODY, headers, NOW) == headers["X-Nonce"]
    with pytest.raises(BadSignature):
        verify(KEY, "POST", "/v1/commit", BODY, headers | {"X-Client": "hotline"}, NOW)


@pytest.mark.parametrize("name", [None, "", "Hotline", "pos 7", "a" * 65, "-pos"])
def test_a_missing_or_malformed_client_name_is_refused(name: str | None) -> None:
    headers = {k: v for k, v in signed().items() if k != "X-Client"}
    if name is not None:
        headers["X-Client"] = name
    with pytest.raises(MissingHeaders, match="X-Client"):
        verify(KEY, "POST", "/v1/commit", BODY, headers, NOW)


def test_the_client_name_rule_is_the_domains() -> None:
    from cardmgmt.channel_clients import NAME

    assert protocol.CLIENT_NAME.pattern == NAME.pattern
