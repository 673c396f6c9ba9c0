"""Properties of AK/SK signing, checked on the wire against the emulator's independent gateway check.

* Whatever the client signs - job-id paths, encoded unicode path segments, query keys and values with
  unicode and reserved characters, extra headers, JSON and multipart bodies - the gateway verifies.
* Any single change to a signed part after signing - a path character, a query value, a signed
  header's value, one byte of a JSON body - is refused with 401 ``APIGW.0301``.

Requests go out through ``http.client`` exactly as signed (no header added or rewritten on the way),
so a failure is the signer's or the gateway's, never a transport's. The gateway authenticates before
it looks for the job: a 404 ``MSS.*`` for an unknown job means the signature passed.
"""

from __future__ import annotations

import http.client
import json
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from airflow_provider_metastudio.auth import AkSkSigner, canonical_query
from airflow_provider_metastudio.testing import EmulatorConfig, MetaStudioEmulator

pytestmark = pytest.mark.airflow_independent  # runs on the newest Airflow line only

EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
API = "/v1/{project}/digital-human/stylized"
APIGW_AUTH = "APIGW.0301"
NOT_FOUND = (404, "MSS.00000003")

# -- strategies --------------------------------------------------------------------------------------

JOB_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", fullmatch=True)
# Any text but lone surrogates (not encodable, so not sendable); reserved characters included.
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=24)
RESERVED = st.text(alphabet="&=+%#?/;:,@!$'()*[] ~.-_", max_size=8)
QUERY_TEXT = st.one_of(TEXT, RESERVED, st.builds(lambda a, b: a + b, TEXT, RESERVED))
QUERY = st.lists(
    st.tuples(QUERY_TEXT, st.one_of(QUERY_TEXT, st.lists(QUERY_TEXT, min_size=1, max_size=3), st.booleans())),
    max_size=6,
)
# Headers the signer or the transport owns, or that change what the gateway does, stay out of "extra".
RESERVED_HEADERS = {
    "host",
    "authorization",
    "x-sdk-date",
    "x-project-id",
    "x-security-token",
    "x-auth-token",
    "x-sdk-content-sha256",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "expect",
    "te",
    "upgrade",
    "x-app-userid",
}
HEADER_NAMES = st.from_regex(r"X-[A-Za-z0-9][A-Za-z0-9-]{0,20}", fullmatch=True).filter(
    lambda n: n.lower() not in RESERVED_HEADERS
)
# Field content: visible characters, unicode included (UTF-8 on the wire), inner spaces and tabs;
# the ends may carry blanks, which signer and gateway both strip. No control characters (CR/LF).
HEADER_VALUES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(" \t"), max_size=40
)
EXTRA_HEADERS = st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=5).filter(
    lambda h: len({k.lower() for k in h}) == len(h)
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
JSON_BODIES = st.one_of(
    st.dictionaries(TEXT, JSON_VALUES, max_size=4).map(lambda d: json.dumps(d, ensure_ascii=False).encode()),
    st.fixed_dictionaries(
        {"picture_url": st.just("ftp://no.example/x.png"), "style_id": TEXT, "name": TEXT}
    ).map(lambda d: json.dumps(d, ensure_ascii=False).encode()),
)
JSON_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8"])


# -- one emulator for the module, and a client that sends exactly what was signed ---------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[MetaStudioEmulator]:
    with MetaStudioEmulator(EmulatorConfig(quotas_enabled=False)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def signer(emu: MetaStudioEmulator) -> AkSkSigner:
    return AkSkSigner(emu.ak, emu.sk, project_id=emu.project_id)


def api(emu: MetaStudioEmulator, path: str) -> str:
    return API.format(project=emu.project_id) + "/" + path


def sign(
    signer: AkSkSigner,
    emu: MetaStudioEmulator,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes | None,
) -> dict[str, str]:
    return signer.sign_request(method, emu.base_url + target, headers, body)


def send(
    emu: MetaStudioEmulator, method: str, target: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    """Send the request byte for byte: header values as UTF-8, nothing added but Content-Length."""
    parts = urlsplit(emu.base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value.encode("utf-8"))
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        payload = json.loads(data) if data else {}
    except ValueError:
        payload = {"raw": data[:200]}
    return resp.status, payload if isinstance(payload, dict) else {"value": payload}


def assert_accepted(status: int, payload: dict[str, Any]) -> None:
    """The gateway let the request through: whatever the service said, it was not an auth failure."""
    assert status != 401, payload
    assert not str(payload.get("error_code", "")).startswith("APIGW."), (status, payload)


def assert_refused(status: int, payload: dict[str, Any]) -> None:
    assert (status, payload.get("error_code")) == (401, APIGW_AUTH), (status, payload)


def with_query(path: str, query: list[tuple[str, Any]]) -> str:
    q = canonical_query(query)
    return f"{path}?{q}" if q else path


def _other_char(c: str, alphabet: str) -> str:
    return alphabet[(alphabet.index(c) + 1) % len(alphabet)] if c in alphabet else alphabet[0]


JOB_ID_ALPHABET = string.ascii_letters + string.digits + "_-"


# -- signed requests verify --------------------------------------------------------------------------


@EXAMPLES
@given(job_id=JOB_IDS, extra=EXTRA_HEADERS)
def test_any_job_id_path_verifies(emu, signer, job_id, extra):
    target = api(emu, f"picture-modelings/{job_id}")
    status, payload = send(emu, "GET", target, sign(signer, emu, "GET", target, extra, None))
    assert_accepted(status, payload)
    assert (status, payload.get("error_code")) == NOT_FOUND  # authenticated, then routed: no such job


@EXAMPLES
@given(segment=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
def test_any_percent_encoded_path_segment_verifies(emu, signer, segment):
    target = api(emu, "picture-modelings/" + quote(segment, safe=""))
    status, payload = send(emu, "GET", target, sign(signer, emu, "GET", target, {}, None))
    assert_accepted(status, payload)


@EXAMPLES
@given(query=QUERY, extra=EXTRA_HEADERS)
def test_any_query_verifies(emu, signer, query, extra):
    target = with_query(api(emu, "picture-modelings"), query)
    status, payload = send(emu, "GET", target, sign(signer, emu, "GET", target, extra, None))
    assert_accepted(status, payload)


@EXAMPLES
@given(body=JSON_BODIES | st.binary(max_size=256), content_type=JSON_TYPES, extra=EXTRA_HEADERS)
def test_any_json_body_verifies(emu, signer, body, content_type, extra):
    target = api(emu, "picture-modelings-by-url")
    headers = {**extra, "Content-Type": content_type}
    status, payload = send(emu, "POST", target, sign(signer, emu, "POST", target, headers, body), body)
    assert_accepted(status, payload)


@EXAMPLES
@given(body=st.binary(max_size=512), boundary=st.from_regex(r"[A-Za-z0-9]{1,40}", fullmatch=True))
def test_any_multipart_body_verifies_as_unsigned_payload(emu, signer, body, boundary):
    target = api(emu, "picture-modelings")
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    signed = sign(signer, emu, "POST", target, headers, body)
    assert signed["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    status, payload = send(emu, "POST", target, signed, body)
    assert_accepted(status, payload)


# -- any single change after signing is refused ------------------------------------------------------


@EXAMPLES
@given(job_id=JOB_IDS, data=st.data())
def test_a_changed_path_character_is_refused(emu, signer, job_id, data):
    target = api(emu, f"picture-modelings/{job_id}")
    signed = sign(signer, emu, "GET", target, {}, None)
    i = data.draw(st.integers(0, len(job_id) - 1), label="position")
    changed = job_id[:i] + _other_char(job_id[i], JOB_ID_ALPHABET) + job_id[i + 1 :]
    assert_accepted(*send(emu, "GET", target, signed))  # the original goes through ...
    assert_refused(*send(emu, "GET", api(emu, f"picture-modelings/{changed}"), signed))  # ... the copy not


@EXAMPLES
@given(
    query=st.lists(st.tuples(QUERY_TEXT, QUERY_TEXT.filter(bool)), min_size=1, max_size=5),
    data=st.data(),
)
def test_a_changed_query_value_is_refused(emu, signer, query, data):
    target = with_query(api(emu, "picture-modelings"), query)
    signed = sign(signer, emu, "GET", target, {}, None)
    k = data.draw(st.integers(0, len(query) - 1), label="pair")
    key, value = query[k]
    i = data.draw(st.integers(0, len(value) - 1), label="position")
    new_char = data.draw(
        st.characters(blacklist_categories=("Cs",)).filter(lambda c: c != value[i]), label="char"
    )
    changed = [*query[:k], (key, value[:i] + new_char + value[i + 1 :]), *query[k + 1 :]]
    assume(canonical_query(changed) != canonical_query(query))  # (a duplicate pair may hide the change)
    assert_accepted(*send(emu, "GET", target, signed))
    assert_refused(*send(emu, "GET", with_query(api(emu, "picture-modelings"), changed), signed))


VISIBLE = string.ascii_letters + string.digits + string.punctuation


@EXAMPLES
@given(
    extra=st.dictionaries(
        HEADER_NAMES, st.text(alphabet=VISIBLE, min_size=1, max_size=30), min_size=1, max_size=4
    ).filter(lambda h: len({k.lower() for k in h}) == len(h)),
    data=st.data(),
)
def test_a_changed_signed_header_value_is_refused(emu, signer, extra, data):
    target = api(emu, "picture-modelings")
    signed = sign(signer, emu, "GET", target, extra, None)
    signed_names = signed["Authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    name = data.draw(st.sampled_from([*extra, "Host", "X-Sdk-Date"]), label="header")
    assert name.lower() in signed_names
    value = signed[name]
    i = data.draw(st.integers(0, len(value) - 1), label="position")
    tampered = {**signed, name: value[:i] + _other_char(value[i], VISIBLE) + value[i + 1 :]}
    assert_accepted(*send(emu, "GET", target, signed))
    assert_refused(*send(emu, "GET", target, tampered))


@EXAMPLES
@given(body=JSON_BODIES.filter(bool), data=st.data())
def test_a_changed_json_body_byte_is_refused(emu, signer, body, data):
    target = api(emu, "picture-modelings-by-url")
    signed = sign(signer, emu, "POST", target, {"Content-Type": "application/json"}, body)
    i = data.draw(st.integers(0, len(body) - 1), label="position")
    flip = data.draw(st.integers(1, 255), label="xor")
    tampered = body[:i] + bytes([body[i] ^ flip]) + body[i + 1 :]
    assert_accepted(*send(emu, "POST", target, signed, body))
    assert_refused(*send(emu, "POST", target, signed, tampered))
