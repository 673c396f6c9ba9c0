"""The MetaStudio emulator, exercised over real HTTP on 127.0.0.1.

Requests are signed by a small signer written here from ``aksk_signing_notes.md`` (and, where
available, by the provider's own ``auth`` module), so the emulator's independent check is tested
from both sides. Time never passes by sleeping: ``clock.advance()`` moves the emulated clock.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import re
import socket
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import httpx
import pytest
import requests
from testsupport import DATA

from airflow_provider_metastudio.testing import (
    Credentials,
    EmulatorConfig,
    FaultKind,
    MetaStudioEmulator,
    _signing,
    format_retry_after,
    make_jpeg_header,
    make_png,
    make_png_header,
)

pytestmark = [pytest.mark.metastudio_emulator(quotas_enabled=False), pytest.mark.airflow_independent]

VECTORS_FILE = DATA / "aksk_signing_vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())["vectors"]
WIRE = [v for v in VECTORS if v["kind"] == "wire"]
SIGNER = [v for v in VECTORS if v["kind"] == "signer"]
VECTOR_AK = WIRE[0]["ak"]
VECTOR_SK = WIRE[0]["sk"]
VECTOR_PROJECT = "0d697589d98091f12f92c0073501cd79"
VECTOR_JOB = "f503894a-20e2-4274-ad88-8364f59a93da_SMS"
STYLIZED = "/v1/{project}/digital-human/stylized"
JOB_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}_SMS$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
INFO_KEYS = {"job_id", "state", "start_time", "end_time", "error_info", "model_asset_id", "name", "style_id"}


# ------------------------------------------------------------------------------------------
# a signer written from the notes (independent of the emulator's checker)
# ------------------------------------------------------------------------------------------


def _q(text: str) -> str:
    return quote(text, safe="~")


def canonical_query(params: Mapping[str, Any] | list[tuple[str, Any]]) -> str:
    items = params.items() if isinstance(params, Mapping) else params
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            pairs.append((str(key), "true" if v is True else "false" if v is False else str(v)))
    return "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(pairs))


def sign(
    method: str,
    url: str,
    *,
    ak: str,
    sk: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    when: datetime | None = None,
) -> dict[str, str]:
    parts = urlsplit(url)
    out = dict(headers or {})
    names = {k.lower() for k in out}
    if "host" not in names:
        out["Host"] = parts.netloc
    if "x-sdk-date" not in names:
        out["X-Sdk-Date"] = (when or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    content_type = next((v for k, v in out.items() if k.lower() == "content-type"), None)
    if content_type and not content_type.startswith(("application/json", "application/bson")):
        out["X-Sdk-Content-Sha256"] = "UNSIGNED-PAYLOAD"
        payload_hash = "UNSIGNED-PAYLOAD"
    else:
        payload_hash = hashlib.sha256(body).hexdigest()
    values = {k.lower(): v.strip() for k, v in out.items() if "_" not in k}
    signed = sorted(values)
    path = "/".join(_q(unquote(s)) for s in parts.path.split("/"))
    path = path if path.endswith("/") else path + "/"
    query = canonical_query(parse_qsl(parts.query, keep_blank_values=True))
    creq = "\n".join(
        [method, path, query, "".join(f"{n}:{values[n]}\n" for n in signed), ";".join(signed), payload_hash]
    )
    date = next(v for k, v in out.items() if k.lower() == "x-sdk-date")
    to_sign = f"SDK-HMAC-SHA256\n{date}\n{hashlib.sha256(creq.encode()).hexdigest()}"
    signature = hmac.new(sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"SDK-HMAC-SHA256 Access={ak}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return out


class Api:
    """Signed requests to one emulator as one tenant."""

    def __init__(
        self,
        emu: MetaStudioEmulator,
        *,
        ak: str | None = None,
        sk: str | None = None,
        project_id: str | None = None,
        security_token: str | None = None,
    ) -> None:
        self.emu = emu
        self.ak = ak or emu.ak
        self.sk = sk or emu.sk
        self.project_id = project_id or emu.project_id
        self.security_token = security_token
        self.session = requests.Session()

    def url(
        self,
        suffix: str,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        project: str | None = None,
    ) -> str:
        url = self.emu.base_url + STYLIZED.format(project=project or self.project_id) + suffix
        return url + ("?" + canonical_query(params) if params else "")

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        when: datetime | None = None,
        signed: bool = True,
    ) -> requests.Response:
        hdrs = {"X-Project-Id": self.project_id, **(headers or {})}
        if self.security_token:
            hdrs["X-Security-Token"] = self.security_token
        if signed:
            hdrs = sign(method, url, ak=self.ak, sk=self.sk, headers=hdrs, body=body, when=when)
        return self.session.request(method, url, data=body or None, headers=hdrs, timeout=30)

    def show(self, job_id: str, **kw: Any) -> requests.Response:
        return self.request("GET", self.url(f"/picture-modelings/{job_id}"), **kw)

    def list(self, params: Mapping[str, Any] | list[tuple[str, Any]] | None = None) -> requests.Response:
        return self.request("GET", self.url("/picture-modelings", params))

    def create_by_url(self, body: Mapping[str, Any] | None = None, **fields: Any) -> requests.Response:
        payload = (
            dict(body)
            if body is not None
            else {
                "picture_url": "https://example.com/face.png",
                "style_id": "system_male_001",
                "name": "my_model",
            }
        )
        payload.update(fields)
        data = json.dumps(payload).encode()
        return self.request(
            "POST",
            self.url("/picture-modelings-by-url"),
            body=data,
            headers={"Content-Type": "application/json"},
        )

    def create(
        self,
        file: bytes | None,
        *,
        style_id: str = "system_female_001",
        name: str = "uploaded",
        notify_url: str | None = None,
    ) -> requests.Response:
        fields: dict[str, str] = {"style_id": style_id, "name": name}
        if notify_url:
            fields["notify_url"] = notify_url
        # Without a file, a plain field still forces a multipart body (not a urlencoded one).
        files = (
            {"file": ("face.png", file, "image/png")} if file is not None else {"comment": (None, "no photo")}
        )
        prepared = requests.Request("POST", "http://x/", data=fields, files=files).prepare()
        body = prepared.body if isinstance(prepared.body, bytes) else str(prepared.body or "").encode()
        return self.request(
            "POST",
            self.url("/picture-modelings"),
            body=body,
            headers={"Content-Type": str(prepared.headers["Content-Type"])},
        )


def _error(resp: requests.Response | httpx.Response) -> tuple[int, str, str]:
    body = resp.json()
    return resp.status_code, body["error_code"], body["error_msg"]


@pytest.fixture
def emu(metastudio_emulator: MetaStudioEmulator) -> MetaStudioEmulator:
    return metastudio_emulator


@pytest.fixture
def api(emu: MetaStudioEmulator) -> Iterator[Api]:
    client = Api(emu)
    yield client
    client.session.close()


def _new_job(api: Api, **fields: Any) -> str:
    resp = api.create_by_url(**fields)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["job_id"])


# ------------------------------------------------------------------------------------------
# the calls' happy paths and shapes
# ------------------------------------------------------------------------------------------


def test_create_by_url_then_show_has_the_documented_shape(emu: MetaStudioEmulator, api: Api) -> None:
    created = api.create_by_url()
    assert created.status_code == 200
    assert set(created.json()) == {"job_id", "model_asset_id"}
    assert JOB_ID_RE.match(created.json()["job_id"])
    assert re.fullmatch(r"[0-9a-f]{32}", created.json()["model_asset_id"])
    assert re.fullmatch(r"[0-9a-f]{32}", created.headers["X-Request-Id"])

    shown = api.show(created.json()["job_id"])
    assert shown.status_code == 200
    assert shown.headers["Content-Type"].startswith("application/json")
    info = shown.json()
    assert set(info) == INFO_KEYS  # no model_cover_url before SUCCEED
    assert info["state"] == "WAITING"
    assert info["start_time"] is None and info["end_time"] is None and info["error_info"] is None
    assert info["model_asset_id"] == created.json()["model_asset_id"]
    assert (info["name"], info["style_id"]) == ("my_model", "system_male_001")
    assert shown.headers["X-Request-Id"] != created.headers["X-Request-Id"]
    record = emu.jobs.record(info["job_id"])
    assert record["picture_url"] == "https://example.com/face.png" and record["source"] == "create_by_url"


def test_unknown_job_is_404_with_error_body(api: Api) -> None:
    resp = api.show("f503894a-0000-4000-8000-000000000000_SMS")
    assert _error(resp) == (404, "MSS.00000003", "Job not found")
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"])


@pytest.mark.metastudio_emulator(
    extra_credentials=[Credentials("OTHERTENANTAK0000000", "other-sk", "otherproject")]
)
def test_jobs_are_private_to_their_project(emu: MetaStudioEmulator, api: Api) -> None:
    job_id = _new_job(api)
    other = Api(emu, ak="OTHERTENANTAK0000000", sk="other-sk", project_id="otherproject")
    assert other.show(job_id).status_code == 404
    assert other.list().json() == {"count": 0, "picture_modeling_jobs": []}
    assert api.list().json()["count"] == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"picture_url": "ftp://example.com/a.png"}, "picture_url"),
        ({"picture_url": "not a url"}, "picture_url"),
        ({"picture_url": None}, "picture_url"),
        ({"style_id": "system_robot_001"}, "style_id"),
        ({"style_id": None}, "style_id"),
        ({"name": ""}, "name"),
        ({"name": "x" * 257}, "name"),
        ({"notify_url": "javascript:alert(1)"}, "notify_url"),
    ],
    ids=[
        "ftp-url",
        "no-scheme",
        "no-url",
        "unknown-style",
        "no-style",
        "empty-name",
        "long-name",
        "bad-notify",
    ],
)
def test_create_by_url_validation(
    emu: MetaStudioEmulator, api: Api, fields: dict[str, Any], field: str
) -> None:
    resp = api.create_by_url(**fields)
    status, code, msg = _error(resp)
    assert (status, code) == (400, "MSS.00000003")
    assert msg.startswith(f"Invalid parameter: {field}")
    assert emu.recorder.counters()["jobs_created"] == 0


def test_create_by_url_rejects_a_body_that_is_not_json(api: Api) -> None:
    resp = api.request(
        "POST",
        api.url("/picture-modelings-by-url"),
        body=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert _error(resp)[:2] == (400, "MSS.00000002")


def test_known_styles_are_accepted(api: Api) -> None:
    for style in ("system_male_001", "system_female_001", "system_male_002", "system_female_002"):
        assert api.create_by_url(style_id=style).status_code == 200


def test_multipart_upload_of_a_real_png(emu: MetaStudioEmulator, api: Api) -> None:
    png = make_png(320, 240)
    resp = api.create(png, name="from photo", notify_url="https://hooks.example.com/done")
    assert resp.status_code == 200, resp.text
    record = emu.jobs.record(resp.json()["job_id"])
    assert record["image"] == {
        "kind": "png",
        "width": 320,
        "height": 240,
        "size": len(png),
        "sha256": hashlib.sha256(png).hexdigest(),  # the upload arrived byte for byte
    }
    assert record["notify_url"] == "https://hooks.example.com/done"
    assert record["info"]["name"] == "from photo" and record["info"]["style_id"] == "system_female_001"
    assert emu.recorder.counters()["jobs_created_by_call"] == {"create": 1}


@pytest.mark.parametrize(
    "image",
    [make_jpeg_header(3840, 2160), make_jpeg_header(2160, 3840), make_png_header(3840, 2160)],
    ids=["jpeg-max", "jpeg-portrait-max", "png-max"],
)
def test_multipart_upload_at_the_size_limit(api: Api, image: bytes) -> None:
    assert api.create(image).status_code == 200


@pytest.mark.parametrize(
    ("image", "detail"),
    [
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00", "not a JPEG or PNG"),
        (b"plain text, not a picture", "not a JPEG or PNG"),
        (b"\x89PNG\r\n\x1a\nfake", "truncated PNG"),
        (make_png_header(3841, 2160), "3841x2160"),
        (make_jpeg_header(4000, 3000), "4000x3000"),
        (make_png_header(3840, 2161), "3840x2161"),
        (None, "required"),
    ],
    ids=["gif", "text", "fake-png", "png-too-wide", "jpeg-too-big", "png-too-tall", "no-file"],
)
def test_multipart_upload_rejections(
    emu: MetaStudioEmulator, api: Api, image: bytes | None, detail: str
) -> None:
    status, code, msg = _error(api.create(image))
    assert (status, code) == (400, "MSS.00000003")
    assert msg.startswith("Invalid parameter: file") and detail in msg
    assert emu.recorder.counters()["jobs_created"] == 0


def test_multipart_upload_validates_the_other_fields(api: Api) -> None:
    png = make_png(16, 16)
    assert "style_id" in _error(api.create(png, style_id="nope"))[2]
    assert "name" in _error(api.create(png, name=""))[2]
    assert "notify_url" in _error(api.create(png, notify_url="ftp://x/y"))[2]


def test_create_needs_multipart(api: Api) -> None:
    resp = api.request(
        "POST", api.url("/picture-modelings"), body=b"{}", headers={"Content-Type": "application/json"}
    )
    status, code, msg = _error(resp)
    assert (status, code) == (400, "MSS.00000003") and "multipart" in msg


@pytest.mark.metastudio_emulator(max_body_bytes=4096)
def test_body_over_the_limit_is_413(emu: MetaStudioEmulator, api: Api) -> None:
    resp = api.create(make_png(200, 200) + b"\0" * 8192)
    assert resp.status_code == 413
    assert resp.json()["error_code"] == "APIGW.0201"
    assert "X-Request-Id" in resp.headers
    assert api.list().status_code == 200  # the connection is still usable


# ------------------------------------------------------------------------------------------
# listing
# ------------------------------------------------------------------------------------------


def test_list_filters_sorting_paging_and_count(emu: MetaStudioEmulator, api: Api) -> None:
    # Created one emulated minute apart; durations chosen so states differ at the end.
    ids = []
    for i, (wait, proc) in enumerate([(1, 1), (1, 1000), (5000, 1), (1, 1), (5000, 1)]):
        ids.append(emu.jobs.create(f"model-{i}", waiting_seconds=wait, processing_seconds=proc)["job_id"])
        emu.clock.advance(60)
    # job0 SUCCEED, job1 PROCESSING, job2 WAITING, job3 SUCCEED, job4 WAITING
    all_jobs = api.list({"limit": 100}).json()
    assert all_jobs["count"] == 5
    assert [j["job_id"] for j in all_jobs["picture_modeling_jobs"]] == ids  # create_time asc by default

    waiting_or_processing = api.list({"state": "WAITING,PROCESSING"}).json()
    assert waiting_or_processing["count"] == 3
    assert [j["job_id"] for j in waiting_or_processing["picture_modeling_jobs"]] == [ids[1], ids[2], ids[4]]
    repeated = api.list([("state", "WAITING"), ("state", "PROCESSING")]).json()
    assert repeated == waiting_or_processing

    desc = api.list({"sort_dir": "desc"}).json()["picture_modeling_jobs"]
    assert [j["job_id"] for j in desc] == ids[::-1]
    by_asset = api.list({"sort_key": "asset_order", "sort_dir": "desc"}).json()["picture_modeling_jobs"]
    assert [j["job_id"] for j in by_asset] == ids[::-1]
    # update_time: WAITING jobs were last updated at creation, the others when they started/ended.
    by_update = [j["job_id"] for j in api.list({"sort_key": "update_time"}).json()["picture_modeling_jobs"]]
    assert by_update == [ids[0], ids[1], ids[2], ids[3], ids[4]]

    page1 = api.list({"limit": 2, "offset": 0}).json()
    page3 = api.list({"limit": 2, "offset": 4}).json()
    beyond = api.list({"limit": 2, "offset": 10}).json()
    assert page1["count"] == page3["count"] == beyond["count"] == 5
    assert [j["job_id"] for j in page1["picture_modeling_jobs"]] == ids[:2]
    assert [j["job_id"] for j in page3["picture_modeling_jobs"]] == ids[4:]
    assert beyond["picture_modeling_jobs"] == []
    assert len(api.list().json()["picture_modeling_jobs"]) == 5  # default limit 10


def test_list_create_time_window(emu: MetaStudioEmulator, api: Api) -> None:
    first = emu.jobs.create("a")["job_id"]
    emu.clock.advance(3600)
    middle = emu.clock.datetime()
    second = emu.jobs.create("b")["job_id"]
    emu.clock.advance(3600)
    third = emu.jobs.create("c")["job_id"]
    since = (middle - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = (middle + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [j["job_id"] for j in api.list({"create_since": since}).json()["picture_modeling_jobs"]] == [
        second,
        third,
    ]
    assert [j["job_id"] for j in api.list({"create_until": until}).json()["picture_modeling_jobs"]] == [
        first,
        second,
    ]
    window = api.list({"create_since": since, "create_until": until}).json()
    assert window["count"] == 1 and window["picture_modeling_jobs"][0]["job_id"] == second
    # an offset form of the same instant
    shifted = (middle - timedelta(seconds=1)).astimezone(timezone(timedelta(hours=8))).isoformat()
    assert api.list({"create_since": shifted}).json()["count"] == 2


def test_list_ties_are_broken_by_creation_sequence(emu: MetaStudioEmulator, api: Api) -> None:
    # Same create second and same update time (both still WAITING): order is creation order.
    ids = [emu.jobs.create(f"tie-{i}", waiting_seconds=10_000)["job_id"] for i in range(6)]
    got = [j["job_id"] for j in api.list({"sort_key": "update_time"}).json()["picture_modeling_jobs"]]
    assert got == ids
    got_desc = [
        j["job_id"]
        for j in api.list({"sort_key": "update_time", "sort_dir": "desc"}).json()["picture_modeling_jobs"]
    ]
    assert got_desc == ids[::-1]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": "x"}, "offset"),
        ({"sort_key": "name"}, "sort_key"),
        ({"sort_dir": "up"}, "sort_dir"),
        ({"state": "WAITING,DONE"}, "state"),
        ({"create_since": "yesterday"}, "create_since"),
        ({"create_until": "2026-11-24"}, "create_until"),
    ],
    ids=[
        "limit-0",
        "limit-101",
        "limit-nan",
        "offset-neg",
        "offset-nan",
        "sort-key",
        "sort-dir",
        "state",
        "since",
        "until",
    ],
)
def test_list_rejects_bad_parameters(api: Api, params: dict[str, Any], field: str) -> None:
    status, code, msg = _error(api.list(params))
    assert (status, code) == (400, "MSS.00000003")
    assert msg.startswith(f"Invalid parameter: {field}")


def test_list_accepts_the_limit_bounds(api: Api) -> None:
    assert api.list({"limit": 1}).status_code == 200
    assert api.list({"limit": 100, "offset": 2147483647}).status_code == 200


# ------------------------------------------------------------------------------------------
# lifecycle, outcomes, determinism
# ------------------------------------------------------------------------------------------


def test_lifecycle_follows_the_emulated_clock(emu: MetaStudioEmulator, api: Api) -> None:
    job_id = _new_job(api)  # default: 5 s WAITING, 25 s PROCESSING
    created = emu.clock.now()
    assert api.show(job_id).json()["state"] == "WAITING"
    emu.clock.advance(6)
    processing = api.show(job_id).json()
    assert processing["state"] == "PROCESSING"
    assert TIME_RE.match(processing["start_time"]) and processing["end_time"] is None
    assert "model_cover_url" not in processing
    emu.clock.advance(30)
    done = api.show(job_id).json()
    assert done["state"] == "SUCCEED"
    assert done["start_time"] == processing["start_time"]
    assert TIME_RE.match(done["end_time"])
    start = datetime.strptime(done["start_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    end = datetime.strptime(done["end_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs(start.timestamp() - (created + 5)) <= 1.5
    assert 24 <= (end - start).total_seconds() <= 26
    assert done["error_info"] is None
    assert done["model_cover_url"].startswith(
        f"{emu.base_url}/obs/{emu.project_id}/{done['model_asset_id']}/"
    )


@pytest.mark.metastudio_emulator(time_scale=600.0, waiting_seconds=30, processing_seconds=30)
def test_lifecycle_with_a_time_scale(emu: MetaStudioEmulator, api: Api) -> None:
    # The emulated clock runs 600x: bracket it with real monotonic readings.
    r0 = time.monotonic()
    e0 = emu.clock.now()
    r1 = time.monotonic()
    time.sleep(0.05)
    r2 = time.monotonic()
    e1 = emu.clock.now()
    r3 = time.monotonic()
    assert 600 * (r2 - r1) <= e1 - e0 <= 600 * (r3 - r0) + 1e-6
    # 60 emulated seconds = 0.1 s real; poll (no fixed sleep) with a generous real deadline.
    job_id = _new_job(api)
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = api.show(job_id).json()["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == "SUCCEED":
            break
        time.sleep(0.005)
    assert seen[-1] == "SUCCEED"
    assert set(seen) <= {"WAITING", "PROCESSING", "SUCCEED"}
    assert seen == sorted(seen, key=["WAITING", "PROCESSING", "SUCCEED"].index)


@pytest.mark.metastudio_emulator(outcomes_by_name={"*fail*": "FAILED", "*partial*": "PARTIAL_SUCCEED"})
def test_outcomes_by_name(emu: MetaStudioEmulator, api: Api) -> None:
    failing = _new_job(api, name="please fail")
    partial = _new_job(api, name="a partial one")
    fine = _new_job(api, name="fine")
    emu.jobs.set_outcome("late*", "CANCELED")
    late = _new_job(api, name="late-binding")
    emu.clock.advance(31)
    failed = api.show(failing).json()
    assert failed["state"] == "FAILED"
    assert failed["error_info"]["error_code"].startswith("MSS.")
    assert "Picture modeling failed" in failed["error_info"]["error_msg"]
    assert "model_cover_url" not in failed and failed["end_time"]
    part = api.show(partial).json()
    assert part["state"] == "PARTIAL_SUCCEED" and "model_cover_url" not in part and part["error_info"] is None
    assert "model_cover_url" in api.show(fine).json()
    assert api.show(late).json()["state"] == "CANCELED"
    emu.jobs.set_outcome("late*", None)
    later = _new_job(api, name="late-again")
    emu.clock.advance(31)
    assert api.show(later).json()["state"] == "SUCCEED"


def _outcomes(seed: int, n: int = 24) -> list[tuple[str, float]]:
    config = EmulatorConfig(
        seed=seed,
        outcome_weights={"SUCCEED": 1.0, "FAILED": 1.0, "PARTIAL_SUCCEED": 1.0},
        processing_jitter=20.0,
        quotas_enabled=False,
    )
    with MetaStudioEmulator(config) as emu:
        api = Api(emu)
        ids = [_new_job(api, name=f"job-{i}") for i in range(n)]
        records = [emu.jobs.record(i) for i in ids]
        api.session.close()
    return [(r["outcome"], round(r["processing_seconds"], 6)) for r in records]


def test_outcome_weights_and_jitter_are_deterministic_per_seed() -> None:
    first, again, other = _outcomes(7), _outcomes(7), _outcomes(8)
    assert first == again
    assert first != other
    assert {o for o, _ in first} == {"SUCCEED", "FAILED", "PARTIAL_SUCCEED"}
    assert all(25.0 <= p <= 45.0 for _, p in first)


def test_admin_outcome_and_forced_state(emu: MetaStudioEmulator, api: Api) -> None:
    job = emu.jobs.create(
        "forced",
        outcome="FAILED",
        waiting_seconds=0,
        processing_seconds=1,
        error_code="MSS.00000012",
        error_msg="Picture modeling failed: blurry photo",
    )
    emu.clock.advance(2)
    shown = api.show(job["job_id"]).json()
    assert shown["state"] == "FAILED"
    assert shown["error_info"] == {
        "error_code": "MSS.00000012",
        "error_msg": "Picture modeling failed: blurry photo",
    }
    waiting = emu.jobs.create("to cancel", waiting_seconds=100)
    canceled = emu.jobs.set_state(waiting["job_id"], "CANCELED")
    assert canceled["state"] == "CANCELED" and canceled["start_time"] is None and canceled["end_time"]
    emu.clock.advance(1000)
    assert (
        api.show(waiting["job_id"]).json()["state"] == "CANCELED"
    )  # pinned, the lifecycle no longer moves it
    odd = emu.jobs.set_state(emu.jobs.create("odd")["job_id"], "ARCHIVING")  # not in the contract
    assert odd["state"] == "ARCHIVING" and odd["end_time"] is None and "model_cover_url" not in odd
    assert api.list({"state": "WAITING"}).json()["count"] == 0
    with pytest.raises(ValueError):
        emu.jobs.set_state(waiting["job_id"], "done; drop table")
    with pytest.raises(KeyError):
        emu.jobs.get("nope")


# ------------------------------------------------------------------------------------------
# cover pictures
# ------------------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = [], 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + length]
        (crc,) = struct.unpack(">I", data[i + 8 + length : i + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        chunks.append((kind, body))
        i += 12 + length
    return chunks


def _cover_url(emu: MetaStudioEmulator, api: Api) -> str:
    job_id = _new_job(api)
    emu.clock.advance(31)
    return str(api.show(job_id).json()["model_cover_url"])


def test_cover_url_serves_a_real_png(emu: MetaStudioEmulator, api: Api) -> None:
    url = _cover_url(emu, api)
    query = dict(parse_qsl(urlsplit(url).query))
    assert set(query) == {"AccessKeyId", "Expires", "Signature"}
    assert abs(int(query["Expires"]) - (emu.clock.now() + 10 * 86400)) < 5  # ten days by default
    base64.b64decode(query["Signature"], validate=True)
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.content.startswith(b"\x89PNG")
    chunks = _png_chunks(resp.content)
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height = struct.unpack(">II", chunks[0][1][:8])
    assert (width, height) == (256, 256)
    assert len(zlib.decompress(chunks[1][1])) == 256 * (1 + 256 * 3)


def test_cover_url_expires(emu: MetaStudioEmulator, api: Api) -> None:
    url = _cover_url(emu, api)
    emu.clock.advance(10 * 86400 - 60)
    assert requests.get(url, timeout=10).status_code == 200
    emu.clock.advance(120)
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 403
    assert b"<Code>AccessDenied</Code>" in resp.content and b"expired" in resp.content
    assert "X-Request-Id" in resp.headers


def test_cover_url_with_tampered_query_is_refused(emu: MetaStudioEmulator, api: Api) -> None:
    url = _cover_url(emu, api)
    base, _, query = url.partition("?")
    params = dict(parse_qsl(query))
    sig = params["Signature"]
    tampered_sig = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    bad = requests.get(base, params={**params, "Signature": tampered_sig}, timeout=10)
    assert bad.status_code == 403 and b"SignatureDoesNotMatch" in bad.content
    longer = requests.get(base, params={**params, "Expires": str(int(params["Expires"]) + 3600)}, timeout=10)
    assert longer.status_code == 403
    assert requests.get(base, timeout=10).status_code == 403
    other_object = requests.get(base.replace(".png", "0.png"), params=params, timeout=10)
    assert other_object.status_code == 403


# ------------------------------------------------------------------------------------------
# AK/SK as the gateway checks it
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", SIGNER + WIRE, ids=lambda v: v.get("name") or v["raw_path"][-32:])
def test_checker_accepts_every_official_vector(vector: dict[str, Any]) -> None:
    if vector["kind"] == "signer":
        expected = vector["expected"]
        raw_path, _, raw_query = expected["uri_sent"].partition("?")
        headers = {k.lower(): str(v) for k, v in vector["headers"].items() if "_" not in k}
        headers.update({k.lower(): v for k, v in expected["extra_headers_added"].items()})
        body = vector["body"]
        data = base64.b64decode(body["base64"]) if isinstance(body, dict) else (body or "").encode()
        authorization = expected["authorization"]
    else:
        raw_path, _, raw_query = vector["raw_path"].partition("?")
        headers = {k.lower(): v for k, v in vector["headers"]}
        data = base64.b64decode(vector["body_base64"])
        authorization = vector["expected_authorization"]
    parsed = _signing.parse_authorization(authorization)
    _signing.verify_signature(
        method=vector["method"],
        raw_path=raw_path,
        raw_query=raw_query,
        headers=headers,
        body=data,
        authorization=parsed,
        sk=vector["sk"],
    )
    # and one flipped hex digit of the signature is refused
    flipped = authorization[:-1] + ("0" if authorization[-1] != "0" else "1")
    with pytest.raises(_signing.SignatureError):
        _signing.verify_signature(
            method=vector["method"],
            raw_path=raw_path,
            raw_query=raw_query,
            headers=headers,
            body=data,
            authorization=_signing.parse_authorization(flipped),
            sk=vector["sk"],
        )


def test_helper_signer_reproduces_the_signer_vectors() -> None:
    for vector in SIGNER:
        expected = vector["expected"]
        url = "https://" + vector["host"] + expected["uri_sent"]
        body = vector["body"]
        data = base64.b64decode(body["base64"]) if isinstance(body, dict) else (body or "").encode()
        headers = sign(
            vector["method"], url, ak=vector["ak"], sk=vector["sk"], headers=vector["headers"], body=data
        )
        assert headers["Authorization"] == expected["authorization"], vector["name"]


def _vector_emulator(**overrides: Any) -> MetaStudioEmulator:
    date = datetime.strptime(dict(WIRE[0]["headers"])["X-Sdk-Date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=timezone.utc
    )
    config = EmulatorConfig(
        ak=VECTOR_AK,
        sk=VECTOR_SK,
        project_id=VECTOR_PROJECT,
        auth_time=date,
        quotas_enabled=False,
        **overrides,
    )
    return MetaStudioEmulator(config)


def _replay(
    emu: MetaStudioEmulator, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes
) -> tuple[int, dict[str, Any] | None]:
    """Send exactly these bytes: request line, headers (with the vector's Host), body."""
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        conn.putrequest(method, raw_path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders(body or None)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.getheader("X-Request-Id")
        return resp.status, (json.loads(data) if data else None)
    finally:
        conn.close()


WIRE_EXPECTED = {
    "GET picture-modelings/": 200,  # show: the job is seeded with the vector's id
    "GET picture-modelings?": 200,
    "POST picture-modelings-by-url": 200,
    "POST picture-modelings": 400,  # authenticated, but its photo is b"\x89PNG...fake"
}


def _wire_key(vector: dict[str, Any]) -> str:
    path = vector["raw_path"]
    tail = path.split("/stylized/", 1)[1]
    if tail.startswith("picture-modelings/"):
        return f"{vector['method']} picture-modelings/"
    if tail.startswith("picture-modelings?"):
        return f"{vector['method']} picture-modelings?"
    return f"{vector['method']} {tail}"


@pytest.mark.parametrize("vector", WIRE, ids=_wire_key)
def test_wire_vectors_replayed_byte_for_byte_pass(vector: dict[str, Any]) -> None:
    with _vector_emulator() as emu:
        emu.jobs.create("my_model", job_id=VECTOR_JOB)
        status, body = _replay(
            emu,
            vector["method"],
            vector["raw_path"],
            [tuple(h) for h in vector["headers"]],
            base64.b64decode(vector["body_base64"]),
        )
        assert status == WIRE_EXPECTED[_wire_key(vector)], body
        if status == 400:
            assert body is not None and body["error_code"] == "MSS.00000003" and "file" in body["error_msg"]
        # the auth clock replays the vectors' date; the job clock is untouched
        assert abs(emu.clock.now() - time.time()) < 60


def _flip(text: str, index: int) -> str:
    char = text[index]
    return text[:index] + ("b" if char != "b" else "c") + text[index + 1 :]


TAMPER_CASES = [
    pytest.param(vector, part, id=f"{part}-{_wire_key(vector)}")
    for vector in WIRE
    for part in ("path", "signed-header", "body", "signature", "query", "date")
    if (part != "body" or vector["body_base64"]) and (part != "query" or "?" in vector["raw_path"])
]


@pytest.mark.parametrize(("vector", "part"), TAMPER_CASES)
def test_wire_vectors_with_one_changed_byte_are_refused(vector: dict[str, Any], part: str) -> None:
    headers = [tuple(h) for h in vector["headers"]]
    raw_path = vector["raw_path"]
    body = base64.b64decode(vector["body_base64"])
    unsigned_payload = any(n.lower() == "x-sdk-content-sha256" for n, _ in headers)
    if part == "path":
        # a byte of the project id: the path still routes to the same API, only the signature breaks
        raw_path = _flip(raw_path, raw_path.index(VECTOR_PROJECT) + 5)
    elif part == "signed-header":
        headers = [(n, _flip(v, 10) if n == "User-Agent" else v) for n, v in headers]
    elif part == "body":
        body = body[:-3] + bytes([body[-3] ^ 0x01]) + body[-2:]
    elif part == "signature":
        headers = [(n, _flip(v, len(v) - 1) if n == "Authorization" else v) for n, v in headers]
    elif part == "query":
        raw_path = raw_path.replace("limit=100", "limit=10")
    elif part == "date":
        headers = [(n, v[:-3] + "48Z" if n == "X-Sdk-Date" else v) for n, v in headers]
    with _vector_emulator() as emu:
        emu.jobs.create("my_model", job_id=VECTOR_JOB)
        status, err = _replay(emu, vector["method"], raw_path, headers, body)
        if part == "body" and unsigned_payload:
            # multipart bodies are signed as UNSIGNED-PAYLOAD: a changed byte passes the gateway
            assert status == 400, err
            return
        assert status == 401, err
        assert err is not None and err["error_code"] == "APIGW.0301"
        assert VECTOR_SK not in err["error_msg"]
        expected_sig = vector["expected_authorization"].rsplit("=", 1)[1]
        assert expected_sig not in err["error_msg"]
        assert emu.recorder.counters()["jobs_created"] == 0


def test_requests_outside_the_clock_window_are_refused(api: Api) -> None:
    now = datetime.now(timezone.utc)
    assert api.list(None).status_code == 200
    stale = api.request("GET", api.url("/picture-modelings"), when=now - timedelta(minutes=16))
    assert _error(stale)[:2] == (401, "APIGW.0301") and "X-Sdk-Date" in _error(stale)[2]
    future = api.request("GET", api.url("/picture-modelings"), when=now + timedelta(minutes=16))
    assert future.status_code == 401
    assert (
        api.request("GET", api.url("/picture-modelings"), when=now - timedelta(minutes=14)).status_code == 200
    )


def test_auth_clock_offset_is_separate_from_the_job_clock(emu: MetaStudioEmulator, api: Api) -> None:
    emu.clock.advance(7 * 86400)  # jobs jump a week: signatures with the real date still pass
    assert api.list().status_code == 200
    emu.auth_clock.shift(-3600)  # the gateway's clock is an hour behind now
    assert api.list().status_code == 401
    emu.auth_clock.reset()
    assert api.list().status_code == 200


def _signed_then_edited(api: Api, edit: Any) -> requests.Response:
    url = api.url("/picture-modelings")
    headers = sign("GET", url, ak=api.ak, sk=api.sk, headers={"X-Project-Id": api.project_id})
    headers = edit(headers)
    return api.session.get(url, headers=headers, timeout=10)


def _resign_without(name: str) -> Any:
    def edit(headers: dict[str, str]) -> dict[str, str]:
        auth = headers["Authorization"]
        signed = re.search(r"SignedHeaders=([^,]+)", auth).group(1)  # type: ignore[union-attr]
        names = [n for n in signed.split(";") if n != name]
        return {**headers, "Authorization": auth.replace(signed, ";".join(names))}

    return edit


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (_resign_without("host"), "'host' must be among the SignedHeaders"),
        (_resign_without("x-sdk-date"), "'x-sdk-date' must be among the SignedHeaders"),
        (
            lambda h: {**h, "Authorization": h["Authorization"].replace("Access=", "Access=X")},
            "unknown access key",
        ),
        (lambda h: {**h, "Authorization": "Basic dXNlcjpwYXNz"}, "malformed"),
        (lambda h: {k: v for k, v in h.items() if k != "Authorization"}, "missing Authorization"),
        (lambda h: {k: v for k, v in h.items() if k != "X-Sdk-Date"}, "X-Sdk-Date header is missing"),
    ],
    ids=["host-unsigned", "date-unsigned", "unknown-ak", "not-sdk-hmac", "no-authorization", "date-missing"],
)
def test_gateway_refusals(api: Api, edit: Any, needle: str) -> None:
    status, code, msg = _error(_signed_then_edited(api, edit))
    assert (status, code) == (401, "APIGW.0301")
    assert needle in msg
    assert api.sk not in msg


def test_host_must_be_signed_even_when_everything_else_is(api: Api) -> None:
    url = api.url("/picture-modelings")
    headers = sign("GET", url, ak=api.ak, sk=api.sk, headers={"X-Project-Id": api.project_id})
    # recompute a correct signature over a header set without host
    values = {"x-project-id": api.project_id, "x-sdk-date": headers["X-Sdk-Date"]}
    parsed = urlsplit(url)
    creq = "\n".join(
        [
            "GET",
            parsed.path + "/",
            "",
            "".join(f"{k}:{v}\n" for k, v in sorted(values.items())),
            ";".join(sorted(values)),
            hashlib.sha256(b"").hexdigest(),
        ]
    )
    sts = f"SDK-HMAC-SHA256\n{headers['X-Sdk-Date']}\n{hashlib.sha256(creq.encode()).hexdigest()}"
    sig = hmac.new(api.sk.encode(), sts.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"SDK-HMAC-SHA256 Access={api.ak}, SignedHeaders=x-project-id;x-sdk-date, Signature={sig}"
    )
    status, code, msg = _error(api.session.get(url, headers=headers, timeout=10))
    assert (status, code) == (401, "APIGW.0301") and "'host'" in msg


@pytest.mark.metastudio_emulator(
    extra_credentials=[Credentials("OTHERTENANTAK0000000", "other-sk", "otherproject")]
)
def test_project_must_be_the_credentials_own(emu: MetaStudioEmulator) -> None:
    other = Api(emu, ak="OTHERTENANTAK0000000", sk="other-sk", project_id="otherproject")
    # X-Project-Id and path both name the primary tenant's project, signed with the other AK
    foreign = Api(emu, ak="OTHERTENANTAK0000000", sk="other-sk", project_id=emu.project_id)
    status, code, msg = _error(foreign.list())
    assert (status, code) == (401, "APIGW.0301") and "X-Project-Id" in msg
    # right header, foreign path
    resp = other.request("GET", other.url("/picture-modelings", project=emu.project_id))
    assert _error(resp)[:2] == (401, "APIGW.0301") and "URL" in _error(resp)[2]
    # missing X-Project-Id
    url = other.url("/picture-modelings")
    headers = sign("GET", url, ak=other.ak, sk=other.sk)
    assert "X-Project-Id" in _error(other.session.get(url, headers=headers, timeout=10))[2]
    assert other.list().status_code == 200


@pytest.mark.metastudio_emulator(security_token="tok-EXAMPLE/+=")
def test_temporary_credentials_need_their_signed_token(emu: MetaStudioEmulator) -> None:
    assert Api(emu, security_token="tok-EXAMPLE/+=").list().status_code == 200
    missing = Api(emu).list()
    assert _error(missing)[:2] == (401, "APIGW.0301") and "X-Security-Token" in _error(missing)[2]
    assert Api(emu, security_token="tok-OTHER").list().status_code == 401
    # present but not signed
    client = Api(emu)
    url = client.url("/picture-modelings")
    headers = sign("GET", url, ak=client.ak, sk=client.sk, headers={"X-Project-Id": emu.project_id})
    headers["X-Security-Token"] = "tok-EXAMPLE/+="
    resp = client.session.get(url, headers=headers, timeout=10)
    assert resp.status_code == 401 and "SignedHeaders" in resp.json()["error_msg"]


def test_the_provider_signer_is_accepted(emu: MetaStudioEmulator) -> None:
    auth = pytest.importorskip("airflow_provider_metastudio.auth")
    session = requests.Session()
    session.auth = auth.RequestsAkSkAuth(auth.AkSkSigner(emu.ak, emu.sk, project_id=emu.project_id))
    base = emu.base_url + STYLIZED.format(project=emu.project_id)
    created = session.post(
        base + "/picture-modelings-by-url",
        json={
            "picture_url": "https://example.com/a%20b.png",
            "style_id": "system_male_002",
            "name": "名字 model",
        },
    )
    assert created.status_code == 200, created.text
    listed = session.get(
        base + "/picture-modelings",
        params={"state": "WAITING,PROCESSING", "create_since": "2020-01-01T00:00:00Z", "limit": "5"},
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["picture_modeling_jobs"][0]["name"] == "名字 model"
    upload = session.post(
        base + "/picture-modelings",
        files={"file": ("f.png", make_png(8, 8), "image/png")},
        data={"style_id": "system_male_001", "name": "x"},
    )
    assert upload.status_code == 200, upload.text
    session.close()


# ------------------------------------------------------------------------------------------
# IAM tokens
# ------------------------------------------------------------------------------------------


def _token_body(emu: MetaStudioEmulator, **changes: Any) -> dict[str, Any]:
    user = {
        "name": emu.config.iam_user,
        "password": emu.config.iam_password,
        "domain": {"name": emu.config.iam_domain},
    }
    user.update(changes.pop("user", {}))
    scope = changes.pop("scope", {"project": {"id": emu.project_id}})
    return {
        "auth": {
            "identity": {"methods": changes.pop("methods", ["password"]), "password": {"user": user}},
            "scope": scope,
        }
    }


def _get_token(emu: MetaStudioEmulator, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{emu.base_url}/v3/auth/tokens", json=body, timeout=10)


def _token_show(emu: MetaStudioEmulator, token: str, project: str | None = None) -> requests.Response:
    url = emu.base_url + STYLIZED.format(project=project or emu.project_id) + "/picture-modelings"
    return requests.get(url, headers={"X-Auth-Token": token}, timeout=10)


@pytest.mark.metastudio_emulator(token_ttl=60.0)
def test_iam_token_issue_use_and_expiry(emu: MetaStudioEmulator) -> None:
    resp = _get_token(emu, _token_body(emu))
    assert resp.status_code == 201
    token = resp.headers["X-Subject-Token"]
    assert token.startswith("MIIT") and len(token) > 40
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"])
    body = resp.json()["token"]
    assert body["methods"] == ["password"] and body["project"]["id"] == emu.project_id
    assert body["user"]["name"] == emu.config.iam_user
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["expires_at"])
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    issued = datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert (expires - issued).total_seconds() == pytest.approx(60.0, abs=0.01)
    assert _token_show(emu, token).status_code == 200
    emu.clock.advance(61)
    status, code, msg = _error(_token_show(emu, token))
    assert (status, code) == (401, "APIGW.0301") and "token expired or invalid" in msg


def test_iam_token_by_project_name_and_expire_all(emu: MetaStudioEmulator) -> None:
    by_name = _get_token(emu, _token_body(emu, scope={"project": {"name": emu.config.project_name}}))
    assert by_name.status_code == 201
    tokens = [by_name.headers["X-Subject-Token"], emu.iam.issue_token()]
    assert all(_token_show(emu, t).status_code == 200 for t in tokens)
    assert emu.iam.expire_tokens() == 2
    assert all(_token_show(emu, t).status_code == 401 for t in tokens)
    assert _token_show(emu, "MIITforged").status_code == 401
    fresh = _get_token(emu, _token_body(emu)).headers["X-Subject-Token"]
    assert _token_show(emu, fresh).status_code == 200
    assert emu.recorder.counters()["tokens_issued"] == 3


@pytest.mark.metastudio_emulator(
    extra_credentials=[Credentials("OTHERTENANTAK0000000", "other-sk", "otherproject")]
)
def test_iam_token_is_bound_to_its_project(emu: MetaStudioEmulator) -> None:
    token = _get_token(emu, _token_body(emu, scope={"project": {"id": "otherproject"}})).headers[
        "X-Subject-Token"
    ]
    assert _token_show(emu, token, "otherproject").status_code == 200
    resp = _token_show(emu, token, emu.project_id)
    assert _error(resp)[:2] == (401, "APIGW.0301")


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"user": {"password": "wrong"}}, 401),
        ({"user": {"name": "mallory"}}, 401),
        ({"user": {"domain": {"name": "other-account"}}}, 401),
        ({"scope": {"project": {"id": "no-such-project"}}}, 401),
        ({"methods": ["token"]}, 400),
        ({"scope": {"domain": {"name": "x"}}}, 400),
    ],
    ids=["password", "user", "domain", "project", "method", "domain-scope"],
)
def test_iam_refusals(emu: MetaStudioEmulator, changes: dict[str, Any], status: int) -> None:
    resp = _get_token(emu, _token_body(emu, **changes))
    assert resp.status_code == status
    assert "X-Subject-Token" not in resp.headers
    body = resp.json()
    assert body["error"]["code"].startswith("IAM.") and body["error_code"] == body["error"]["code"]
    if status == 401:
        assert body["error_code"] == "IAM.0101"


def test_iam_refuses_garbage(emu: MetaStudioEmulator) -> None:
    resp = requests.post(f"{emu.base_url}/v3/auth/tokens", data=b"nope", timeout=10)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "IAM.0007"


# ------------------------------------------------------------------------------------------
# X-App-UserId
# ------------------------------------------------------------------------------------------


def test_app_user_id_must_not_be_chinese(emu: MetaStudioEmulator, api: Api) -> None:
    url = api.url("/picture-modelings")
    headers = sign("GET", url, ak=api.ak, sk=api.sk, headers={"X-Project-Id": emu.project_id})
    parsed = urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        conn.putrequest("GET", parsed.path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("X-App-UserId", "用户42".encode())  # raw UTF-8 bytes on the wire
        conn.endheaders()
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 400
    assert body["error_code"] == "MSS.00000003" and "X-App-UserId" in body["error_msg"]
    ok = api.request("GET", url, headers={"X-App-UserId": "user-42"})
    assert ok.status_code == 200


# ------------------------------------------------------------------------------------------
# quotas
# ------------------------------------------------------------------------------------------


def test_default_quotas_are_the_documented_ones() -> None:
    config = EmulatorConfig()
    assert config.quotas_enabled is True
    assert dict(config.rates) == {"show": 1.0, "list": 1.0, "create": 1.0, "create_by_url": 2.0}
    assert dict(config.global_rates) == {"show": 10.0, "list": 10.0, "create": 10.0, "create_by_url": 10.0}


@pytest.mark.metastudio_emulator(quotas_enabled=True, rates={"show": 0.01, "list": 0.01})
def test_per_tenant_quota_gives_429_with_retry_after(emu: MetaStudioEmulator, api: Api) -> None:
    # 0.01/s: one request per 100 emulated seconds, so real time between requests never matters.
    job_id = emu.jobs.create("q")["job_id"]
    assert api.show(job_id).status_code == 200
    throttled = api.show(job_id)
    status, code, msg = _error(throttled)
    assert (status, code) == (429, "APIGW.0308") and "throttling threshold" in msg
    assert re.fullmatch(r"[0-9a-f]{32}", throttled.headers["X-Request-Id"])
    assert throttled.headers["Retry-After"].isdigit() and 1 <= int(throttled.headers["Retry-After"]) <= 100
    assert api.list().status_code == 200  # another call has its own bucket
    counters = emu.recorder.counters()
    assert counters["throttled"] == {"show": 1} and counters["throttled_total"] == 1
    assert counters["statuses"]["show"] == {"200": 1, "429": 1}
    emu.clock.advance(100)
    assert api.show(job_id).status_code == 200


@pytest.mark.metastudio_emulator(
    quotas_enabled=True,
    rates={"list": 1000.0},
    global_rates={"list": 0.01},
    extra_credentials=[Credentials("OTHERTENANTAK0000000", "other-sk", "otherproject")],
)
def test_all_tenants_quota(emu: MetaStudioEmulator, api: Api) -> None:
    other = Api(emu, ak="OTHERTENANTAK0000000", sk="other-sk", project_id="otherproject")
    assert api.list().status_code == 200
    resp = other.list()
    assert resp.status_code == 429 and "api over ratelimit" in resp.json()["error_msg"]


@pytest.mark.metastudio_emulator(quotas_enabled=True, rates={"create_by_url": 0.01}, burst=3)
def test_burst_allows_back_to_back_requests(emu: MetaStudioEmulator, api: Api) -> None:
    assert [api.create_by_url().status_code for _ in range(4)] == [200, 200, 200, 429]
    assert emu.recorder.counters()["jobs_created"] == 3


@pytest.mark.metastudio_emulator(quotas_enabled=True, time_scale=60.0, rates={"show": 0.01})
def test_retry_after_is_real_seconds_when_scaled(emu: MetaStudioEmulator, api: Api) -> None:
    # One show per 100 emulated seconds = 1.67 real seconds at 60x.
    job_id = emu.jobs.create("q")["job_id"]
    assert api.show(job_id).status_code == 200
    throttled = api.show(job_id)
    assert throttled.status_code == 429
    retry_after = throttled.headers["Retry-After"]
    assert re.fullmatch(r"\d+\.\d{3}", retry_after)  # a decimal string: the client parses floats
    assert 0.5 < float(retry_after) <= 100 / 60 + 0.001
    emu.clock.advance(100)
    assert api.show(job_id).status_code == 200


def test_retry_after_format() -> None:
    assert format_retry_after(0.2, 1.0) == "1"
    assert format_retry_after(1.0, 1.0) == "1"
    assert format_retry_after(2.01, 1.0) == "3"
    assert format_retry_after(1.0, 60.0) == "0.017"
    assert format_retry_after(0.0, 60.0) == "0.001"
    assert format_retry_after(30.0, 10.0) == "3.000"


def test_quotas_can_be_switched_off_and_on(emu: MetaStudioEmulator, api: Api) -> None:
    assert all(api.list().status_code == 200 for _ in range(5))
    emu.quotas.set(enabled=True, rates={"list": 0.01})
    assert [api.list().status_code for _ in range(2)] == [200, 429]
    emu.quotas.set(enabled=False)
    assert api.list().status_code == 200


# ------------------------------------------------------------------------------------------
# faults
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "502", "503", "504", "html", "429"])
def test_one_shot_error_faults(emu: MetaStudioEmulator, api: Api, kind: str) -> None:
    job_id = emu.jobs.create("f")["job_id"]
    emu.faults.inject("show", kind)
    resp = api.show(job_id)
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"])
    if kind == "500":
        assert _error(resp) == (500, "MSS.00000004", "Internal Error")
    elif kind == "429":
        assert _error(resp)[:2] == (429, "APIGW.0308") and resp.headers["Retry-After"] == "1"
    else:
        assert resp.status_code in ((int(kind),) if kind.isdigit() else (502, 503, 504))
        assert resp.headers["Content-Type"] == "text/html"
        assert resp.text.startswith("<html>") and "nginx" in resp.text
    assert api.show(job_id).status_code == 200  # consumed
    assert emu.recorder.counters()["faults"] == {kind: 1}


def test_one_shots_are_consumed_in_order_by_matching_calls(emu: MetaStudioEmulator, api: Api) -> None:
    job_id = emu.jobs.create("f")["job_id"]
    emu.faults.inject("show", "500", count=2)
    emu.faults.inject("list", "503")
    emu.faults.inject("*", "504")
    assert [api.show(job_id).status_code for _ in range(3)] == [500, 500, 504]
    assert api.list().status_code == 503
    assert api.list().status_code == 200
    assert api.show(job_id).status_code == 200
    assert emu.recorder.counters()["faults_by_call"] == {"show": {"500": 2, "504": 1}, "list": {"503": 1}}


def test_drop_before_create_creates_nothing(emu: MetaStudioEmulator, api: Api) -> None:
    emu.faults.inject("create_by_url", "drop")
    with pytest.raises(requests.ConnectionError):
        api.create_by_url()
    assert emu.recorder.counters()["jobs_created"] == 0
    assert emu.jobs.records() == []
    assert [e["status"] for e in emu.recorder.request_log()] == [0]


def test_drop_after_create_leaves_the_job(emu: MetaStudioEmulator, api: Api) -> None:
    emu.faults.inject("create", "drop_after")
    with pytest.raises(requests.ConnectionError):
        api.create(make_png(10, 10), name="dropped after")
    assert emu.recorder.counters()["jobs_created"] == 1
    assert [j["info"]["name"] for j in emu.jobs.records()] == ["dropped after"]
    listed = api.list().json()
    assert listed["count"] == 1 and listed["picture_modeling_jobs"][0]["name"] == "dropped after"


def test_malformed_empty_and_huge_bodies(emu: MetaStudioEmulator, api: Api) -> None:
    job_id = emu.jobs.create("f")["job_id"]
    emu.faults.inject("show", "malformed")
    emu.faults.inject("show", "empty")
    emu.faults.inject("show", "huge", size=3_000_000)
    malformed = api.show(job_id)
    assert malformed.status_code == 200 and malformed.content.startswith(b'{"job_id"')
    with pytest.raises(ValueError):
        json.loads(malformed.content)
    empty = api.show(job_id)
    assert empty.status_code == 200 and empty.content == b""
    huge = api.show(job_id)
    assert huge.status_code == 200 and len(huge.content) >= 2_900_000
    assert huge.json()["job_id"] == job_id


def test_delay_fault_sleeps_then_answers(emu: MetaStudioEmulator, api: Api) -> None:
    job_id = emu.jobs.create("f")["job_id"]
    emu.faults.inject("show", "delay", delay=0.3)
    started = time.monotonic()
    resp = api.show(job_id)
    assert resp.status_code == 200 and time.monotonic() - started >= 0.3
    assert emu.recorder.request_log()[-1]["fault"] == "delay"


def test_faults_on_iam_and_cover_only_when_asked(emu: MetaStudioEmulator, api: Api) -> None:
    emu.faults.set_rates({"500": 1.0})
    assert _get_token(emu, _token_body(emu)).status_code == 201  # default calls: service only
    assert api.list().status_code == 500
    emu.faults.clear()
    emu.faults.inject("iam", "503")
    assert _get_token(emu, _token_body(emu)).status_code == 503
    with pytest.raises(ValueError):
        emu.faults.inject("nope", "500")
    with pytest.raises(ValueError):
        emu.faults.inject("show", "teapot")


def _statuses_with_seed(seed: int) -> list[int]:
    config = EmulatorConfig(
        seed=seed, fault_500=0.3, fault_html=0.2, fault_malformed=0.1, quotas_enabled=False
    )
    with MetaStudioEmulator(config) as emu:
        api = Api(emu)
        out = []
        for _ in range(30):
            resp = api.list()
            out.append(resp.status_code if resp.content[-1:] == b"}" or resp.status_code != 200 else -1)
        api.session.close()
        counters = emu.recorder.counters()
    assert counters["faults_total"] == sum(1 for s in out if s != 200)
    return out


def test_probabilistic_faults_are_seeded() -> None:
    first, again = _statuses_with_seed(3), _statuses_with_seed(3)
    assert first == again
    assert {200, 500, -1} <= set(first) and set(first) & {502, 503, 504}
    assert first != _statuses_with_seed(4)


def test_probabilistic_drop(emu: MetaStudioEmulator, api: Api) -> None:
    emu.faults.set_rates({"drop": 1.0}, calls=["list"])
    with pytest.raises(requests.ConnectionError):
        api.list()
    assert emu.recorder.request_log()[-1]["status"] == 0 and emu.recorder.counters()["faults"] == {"drop": 1}
    with pytest.raises(ValueError):
        emu.faults.set_rates({"500": 0.8, "drop": 0.3})


# ------------------------------------------------------------------------------------------
# counters, request log, admin interface, HTTP behaviour
# ------------------------------------------------------------------------------------------


def test_counters_and_request_log(emu: MetaStudioEmulator, api: Api) -> None:
    job_id = _new_job(api)
    api.show(job_id)
    api.show("unknown_SMS")
    requests.get(emu.base_url + "/v1/x/other", timeout=10)
    counters = emu.recorder.counters()
    assert counters["requests"] == {"create_by_url": 1, "show": 2, "unknown": 1}
    assert counters["statuses"]["show"] == {"200": 1, "404": 1}
    assert counters["jobs_created"] == 1 and counters["total"] == 4
    show_path = STYLIZED.format(project=emu.project_id) + f"/picture-modelings/{job_id}"
    assert counters["paths"][f"GET {show_path}"] == 1
    log = emu.recorder.request_log()
    assert [(e["method"], e["call"], e["status"]) for e in log] == [
        ("POST", "create_by_url", 200),
        ("GET", "show", 200),
        ("GET", "show", 404),
        ("GET", "unknown", 404),
    ]
    assert all(e["request_id"] and e["time"] > 0 for e in log)
    assert (
        emu.recorder.count("show") == 2
        and emu.recorder.count(status=404) == 2
        and emu.recorder.count("show", 200) == 1
    )
    emu.recorder.reset()
    assert emu.recorder.counters()["total"] == 0 and emu.recorder.request_log() == []


def test_unknown_paths_and_methods(emu: MetaStudioEmulator, api: Api) -> None:
    missing = requests.get(emu.base_url + "/v2/whatever", timeout=10)
    assert _error(missing)[:2] == (404, "APIGW.0101") and "X-Request-Id" in missing.headers
    wrong = api.request("DELETE", api.url("/picture-modelings"))
    assert wrong.status_code == 405 and "X-Request-Id" in wrong.headers
    trailing = api.request("GET", api.url("/picture-modelings/"))
    assert trailing.status_code == 404


def test_protocol_errors_keep_the_error_shape(emu: MetaStudioEmulator) -> None:
    for raw in (b"GARBAGE\r\n\r\n", b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", emu.port), timeout=10) as sock:
            sock.sendall(raw)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] in (b"400", b"501")
        assert re.search(rb"\r\nX-Request-Id: [0-9a-f]{32}\r\n", head)
        assert json.loads(body)["error_code"] == "APIGW.0201"


@pytest.mark.metastudio_emulator(quotas_enabled=True, rates={"show": 5, "list": 0})
def test_configured_rates_are_merged_over_the_defaults(emu: MetaStudioEmulator) -> None:
    settings = emu.quotas.set()
    assert settings["rates"] == {"show": 5.0, "create": 1.0, "create_by_url": 2.0}
    assert settings["global_rates"]["list"] == 10.0


def _admin(emu: MetaStudioEmulator, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{emu.base_url}/_emulator{path}", json=body, timeout=10)


def test_admin_routes_and_components_are_the_same_operations(emu: MetaStudioEmulator) -> None:
    # What one side changes, the other reads: both go through the component's methods.
    emu.quotas.set(rates={"show": 3})
    assert _admin(emu, "GET", "/quotas").json()["rates"]["show"] == 3.0
    assert _admin(emu, "POST", "/outcomes", {"pattern": "*odd*", "state": "CANCELED"}).status_code == 200
    assert emu.jobs.outcomes()["patterns"] == {"*odd*": "CANCELED"}
    assert _admin(emu, "GET", "/outcomes").json() == emu.jobs.outcomes()
    emu.faults.inject("list", "500")
    assert _admin(emu, "DELETE", "/faults").json()["one_shots"] == []
    assert emu.faults.settings()["one_shots"] == []
    clock = _admin(emu, "GET", "/clock").json()
    assert clock["time_scale"] == emu.clock.time_scale and abs(clock["now_timestamp"] - emu.clock.now()) < 5
    job = emu.jobs.create("odd-one")
    assert _admin(emu, "GET", f"/jobs/{job['job_id']}").json()["outcome"] == "CANCELED"
    # A known path with a method it does not take, and a body that is not an object.
    wrong = _admin(emu, "GET", "/reset")
    assert (wrong.status_code, wrong.json()["error_code"]) == (404, "EMU.0404")
    assert "GET /_emulator/reset" in wrong.json()["error_msg"]
    listed = _admin(emu, "POST", "/jobs", ["not", "an", "object"])
    assert (listed.status_code, listed.json()["error_code"]) == (400, "EMU.0400")
    unknown_kwarg = _admin(emu, "PUT", "/list-quirks", {"sort_everything": True})
    assert unknown_kwarg.status_code == 400


# ------------------------------------------------------------------------------------------
# unconfirmed service behaviours, seen through the provider's sync hook
# ------------------------------------------------------------------------------------------


@pytest.fixture
def hook(emu: MetaStudioEmulator) -> Iterator[Any]:
    """The provider's sync hook on this emulator: no client-side quota, no retries (each request
    shows exactly what the emulator answered)."""
    from airflow_provider_metastudio.config import MetaStudioConnectionConfig
    from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook

    config = MetaStudioConnectionConfig.from_parts(
        login=emu.ak,
        password=emu.sk,
        extra={**emu.connection_extra(), "rate_limits": False},
        **emu.connection_destination(),
    )
    client = MetaStudioHook(config=config, retry_limit=0, throttle_retry_limit=0)
    yield client
    client.close()


def _listed(hook: Any, **filters: Any) -> list[tuple[str, str]]:
    page = hook.list_picture_modeling_jobs_page(limit=100, **filters)
    return [(job.job_id, job.state) for job in page.jobs]


def test_list_quirk_ignore_sort(emu: MetaStudioEmulator, hook: Any) -> None:
    ids = []
    for i in range(3):
        ids.append(emu.jobs.create(f"m{i}")["job_id"])
        emu.clock.advance(10)
    assert [i for i, _ in _listed(hook, sort_dir="desc")] == ids[::-1]
    assert emu.faults.set_list_quirks(ignore_sort=True)["ignore_sort"] is True
    for sort_key in ("create_time", "update_time", "asset_order"):
        assert [i for i, _ in _listed(hook, sort_key=sort_key, sort_dir="desc")] == ids
    emu.faults.set_list_quirks()  # the defaults switch it off
    assert [i for i, _ in _listed(hook, sort_dir="desc")] == ids[::-1]


def test_list_quirk_visibility_delay(emu: MetaStudioEmulator, hook: Any) -> None:
    job_id = emu.jobs.create("lagging", waiting_seconds=5, processing_seconds=25)["job_id"]
    emu.faults.set_list_quirks(visibility_delay=60)
    emu.clock.advance(31)  # ended 1 s ago
    assert hook.get_picture_modeling_job(job_id).state == "SUCCEED"  # details: the truth
    assert _listed(hook) == [(job_id, "PROCESSING")]
    listed = hook.list_picture_modeling_jobs_page(limit=1).jobs[0]
    assert listed.end_time is None and listed.model_cover_url is None
    assert _listed(hook, states=["SUCCEED"]) == []  # the state filter sees the replica too
    assert _listed(hook, states=["PROCESSING"]) == [(job_id, "PROCESSING")]
    emu.clock.advance(59)
    assert _listed(hook) == [(job_id, "SUCCEED")]
    # A forced end lags the same way, showing what it interrupted.
    other = emu.jobs.create("canceled", waiting_seconds=1000)["job_id"]
    emu.jobs.set_state(other, "CANCELED")
    assert dict(_listed(hook))[other] == "WAITING"
    assert hook.get_picture_modeling_job(other).state == "CANCELED"
    emu.faults.clear()
    assert dict(_listed(hook))[other] == "CANCELED"


@pytest.mark.metastudio_emulator(quotas_enabled=False, time_scale=100)
def test_list_quirk_visibility_delay_is_emulated_time(emu: MetaStudioEmulator, hook: Any) -> None:
    job_id = emu.jobs.create("scaled", waiting_seconds=0, processing_seconds=0)["job_id"]
    emu.faults.set_list_quirks(visibility_delay=30)  # 0.3 real seconds at this scale
    assert _listed(hook) == [(job_id, "WAITING")]
    time.sleep(0.4)
    assert _listed(hook) == [(job_id, "SUCCEED")]


def test_list_quirk_stale_update_time(emu: MetaStudioEmulator, hook: Any) -> None:
    # "slow" starts first and finishes last; "quick" starts later and finishes first.
    slow = emu.jobs.create("slow", waiting_seconds=0, processing_seconds=100)["job_id"]
    emu.clock.advance(10)
    quick = emu.jobs.create("quick", waiting_seconds=0, processing_seconds=10)["job_id"]
    emu.clock.advance(200)
    by_update = {"sort_key": "update_time", "sort_dir": "desc"}
    assert [i for i, _ in _listed(hook, **by_update)] == [slow, quick]
    emu.faults.set_list_quirks(stale_update_time=True)
    assert [i for i, _ in _listed(hook, **by_update)] == [quick, slow]  # sorted by start time
    assert [i for i, _ in _listed(hook, sort_dir="desc")] == [quick, slow]  # create_time unaffected
    assert emu.faults.list_quirks() == {
        "ignore_sort": False,
        "visibility_delay": 0.0,
        "stale_update_time": True,
    }


def test_deleted_job_vanishes(emu: MetaStudioEmulator, hook: Any) -> None:
    from airflow_provider_metastudio.exceptions import MetaStudioNotFoundError

    kept = emu.jobs.create("kept")["job_id"]
    gone = emu.jobs.create("gone")["job_id"]
    emu.jobs.delete(gone)
    with pytest.raises(MetaStudioNotFoundError) as exc:
        hook.get_picture_modeling_job(gone)
    assert (exc.value.status, exc.value.error_code, exc.value.error_msg) == (
        404,
        "MSS.00000003",
        "Job not found",
    )
    assert _listed(hook) == [(kept, "WAITING")]
    assert hook.list_picture_modeling_jobs_page().total == 1
    with pytest.raises(KeyError):
        emu.jobs.delete(gone)


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(400, "MSS.00000003", "MetaStudioBadRequestError"), (404, "MSS.00000003", "MetaStudioNotFoundError")],
)
def test_job_error_answers_only_the_details_call(
    emu: MetaStudioEmulator, hook: Any, status: int, code: str, error: str
) -> None:
    from airflow_provider_metastudio import exceptions

    job_id = emu.jobs.create("erring")["job_id"]
    emu.faults.set_job_error(job_id, status, code)
    with pytest.raises(getattr(exceptions, error)) as exc:
        hook.get_picture_modeling_job(job_id)
    assert (exc.value.status, exc.value.error_code) == (status, code)
    assert job_id in exc.value.error_msg
    assert _listed(hook) == [(job_id, "WAITING")]  # lists are unaffected
    emu.faults.set_job_error(job_id, 400, "MSS.00000003", "Invalid parameter: job_id")
    with pytest.raises(exceptions.MetaStudioBadRequestError, match="Invalid parameter: job_id"):
        hook.get_picture_modeling_job(job_id)
    emu.faults.clear_job_error(job_id)
    assert hook.get_picture_modeling_job(job_id).state == "WAITING"
    with pytest.raises(ValueError):
        emu.faults.set_job_error(job_id, 200, "OK")


def test_outage_window_then_normal_service(emu: MetaStudioEmulator, hook: Any) -> None:
    from airflow_provider_metastudio.exceptions import MetaStudioGatewayError

    job_id = emu.jobs.create("through an outage")["job_id"]
    emu.faults.inject("show", "500")  # waits for the outage to end
    emu.faults.outage(1.0)
    started = time.monotonic()
    failures = 0
    while time.monotonic() - started < 0.3:
        for call in (lambda: hook.get_picture_modeling_job(job_id), hook.list_picture_modeling_jobs_page):
            with pytest.raises(MetaStudioGatewayError) as exc:
                call()
            assert exc.value.status == 503
            failures += 1
    time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))
    assert api_status(hook, job_id) == 500  # the one-shot, now
    assert hook.get_picture_modeling_job(job_id).job_id == job_id
    counters = emu.recorder.counters()
    assert counters["faults_by_call"]["show"]["503"] + counters["faults_by_call"]["list"]["503"] == failures
    assert counters["faults"] == {"503": failures, "500": 1}


def api_status(hook: Any, job_id: str) -> int:
    from airflow_provider_metastudio.exceptions import MetaStudioApiError

    try:
        hook.get_picture_modeling_job(job_id)
    except MetaStudioApiError as e:
        return int(e.status)
    return 200


@pytest.mark.parametrize("kind", ["500", "502", "504", "html", "429", "drop"])
def test_outage_kinds_and_calls(emu: MetaStudioEmulator, hook: Any, kind: str) -> None:
    from airflow_provider_metastudio.exceptions import MetaStudioConnectionError, MetaStudioError

    job_id = emu.jobs.create("x")["job_id"]
    emu.faults.outage(30, call="list", kind=kind)
    for _ in range(2):
        with pytest.raises(MetaStudioError) as exc:
            hook.list_picture_modeling_jobs_page()
        if kind == "drop":
            assert isinstance(exc.value, MetaStudioConnectionError)
        else:
            expected = (int(kind),) if kind.isdigit() else (502, 503, 504)
            assert exc.value.status in expected
    assert hook.get_picture_modeling_job(job_id).job_id == job_id  # other calls are served
    assert emu.recorder.counters()["faults_by_call"] == {"list": {kind: 2}}
    assert emu.faults.settings()["outages"][0]["call"] == "list"
    emu.faults.clear()
    assert hook.list_picture_modeling_jobs_page().total == 1
    with pytest.raises(ValueError):
        emu.faults.outage(0)
    with pytest.raises(ValueError):
        emu.faults.outage(1, kind="teapot")
    with pytest.raises(ValueError):
        emu.faults.outage(1, call="nothing")


def test_admin_routes_for_quirks_deletes_job_errors_and_outages(emu: MetaStudioEmulator, hook: Any) -> None:
    from airflow_provider_metastudio.exceptions import MetaStudioApiError, MetaStudioNotFoundError

    a = emu.jobs.create("a")["job_id"]
    emu.clock.advance(1)
    b = emu.jobs.create("b")["job_id"]
    quirks = _admin(emu, "PUT", "/list-quirks", {"ignore_sort": True, "visibility_delay": 5}).json()
    assert quirks == {"ignore_sort": True, "visibility_delay": 5.0, "stale_update_time": False}
    assert _admin(emu, "GET", "/list-quirks").json() == quirks
    assert _admin(emu, "GET", "/faults").json()["list_quirks"] == quirks
    assert [i for i, _ in _listed(hook, sort_dir="desc")] == [a, b]
    assert _admin(emu, "PUT", "/list-quirks", {"sort": True}).status_code == 400
    assert _admin(emu, "DELETE", "/list-quirks").json()["ignore_sort"] is False

    error = _admin(emu, "PUT", f"/jobs/{a}/error", {"status": 400, "error_code": "MSS.00000003"}).json()
    assert error[a]["status"] == 400 and a in error[a]["error_msg"]
    with pytest.raises(MetaStudioApiError) as exc:
        hook.get_picture_modeling_job(a)
    assert exc.value.status == 400
    assert _admin(emu, "PUT", f"/jobs/{a}/error", {"status": "x", "error_code": "E"}).status_code == 400
    assert _admin(emu, "PUT", f"/jobs/{a}/error", {"error_code": "E"}).status_code == 400
    assert _admin(emu, "DELETE", f"/jobs/{a}/error").json() == {}
    assert hook.get_picture_modeling_job(a).job_id == a

    assert _admin(emu, "DELETE", f"/jobs/{b}").json() == {"deleted": b}
    assert _admin(emu, "DELETE", f"/jobs/{b}").status_code == 404
    with pytest.raises(MetaStudioNotFoundError):
        hook.get_picture_modeling_job(b)

    outages = _admin(emu, "POST", "/outages", {"seconds": 30, "call": "show", "kind": "502"}).json()
    assert outages[0]["call"] == "show" and outages[0]["kind"] == "502"
    assert 0 < outages[0]["remaining_seconds"] <= 30
    assert api_status(hook, a) == 502
    assert _admin(emu, "POST", "/outages", {"call": "show"}).status_code == 400
    assert _admin(emu, "POST", "/outages", {"seconds": 1, "kind": "nope"}).status_code == 400
    _admin(emu, "POST", "/reset")
    assert _admin(emu, "GET", "/faults").json()["outages"] == []


def test_admin_interface(emu: MetaStudioEmulator, api: Api) -> None:
    assert _admin(emu, "GET", "/health").json()["status"] == "ok"
    job = _admin(
        emu,
        "POST",
        "/jobs",
        {"name": "admin job", "outcome": "FAILED", "waiting_seconds": 1, "processing_seconds": 1},
    ).json()
    assert JOB_ID_RE.match(job["job_id"]) and job["state"] == "WAITING"
    clock = _admin(emu, "POST", "/clock", {"advance": 5}).json()
    assert clock["time_scale"] == 1.0 and clock["now_timestamp"] >= time.time() + 4
    assert api.show(job["job_id"]).json()["state"] == "FAILED"
    assert _admin(emu, "GET", f"/jobs/{job['job_id']}").json()["outcome"] == "FAILED"
    other = _admin(emu, "POST", "/jobs", {"name": "to cancel", "waiting_seconds": 50}).json()
    canceled = _admin(emu, "POST", f"/jobs/{other['job_id']}/state", {"state": "CANCELED"})
    assert canceled.json()["state"] == "CANCELED"
    assert _admin(emu, "POST", f"/jobs/{other['job_id']}/state", {"state": "not a state"}).status_code == 400
    assert _admin(emu, "POST", "/jobs/nope/state", {"state": "CANCELED"}).status_code == 404
    assert len(_admin(emu, "GET", "/jobs").json()["jobs"]) == 2

    faults = _admin(
        emu, "PUT", "/faults", {"rates": {"500": 0.0}, "one_shots": [{"call": "show", "kind": "502"}]}
    )
    assert faults.json()["one_shots"][0]["kind"] == "502"
    assert api.show(job["job_id"]).status_code == 502
    assert _admin(emu, "PUT", "/faults", {"one_shots": [{"call": "show", "kind": "nope"}]}).status_code == 400

    outcomes = _admin(emu, "POST", "/outcomes", {"patterns": {"*boom*": "FAILED"}}).json()
    assert outcomes["patterns"] == {"*boom*": "FAILED"}
    boom = _new_job(api, name="big boom")
    emu.clock.advance(31)
    assert api.show(boom).json()["state"] == "FAILED"

    counters = _admin(emu, "GET", "/counters").json()
    assert counters["jobs_created"] == 1 and counters["faults"] == {"502": 1}
    assert _admin(emu, "GET", "/requests").json()["requests"][-1]["call"] == "show"
    assert _admin(emu, "POST", "/reset-counters").json()["total"] == 0

    token = _admin(emu, "POST", "/tokens", {}).json()["token"]
    assert _token_show(emu, token).status_code == 200
    assert _admin(emu, "POST", "/tokens/expire").json() == {"expired": 1}
    assert _token_show(emu, token).status_code == 401

    quotas = _admin(emu, "PUT", "/quotas", {"enabled": True, "rates": {"list": 0.01}}).json()
    assert quotas["enabled"] is True and quotas["rates"]["list"] == 0.01
    assert [api.list().status_code for _ in range(2)] == [200, 429]
    assert _admin(emu, "GET", "/nothing").status_code == 404
    # since reset-counters: 2 token shows and 2 lists; admin calls are never counted
    assert emu.recorder.counters()["total"] == 4
    _admin(emu, "POST", "/reset")
    assert emu.jobs.records() == [] and emu.recorder.counters()["total"] == 0


def test_keep_alive_serves_several_requests_on_one_connection(emu: MetaStudioEmulator, api: Api) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        sockets = set()
        for _ in range(3):
            url = api.url("/picture-modelings")
            headers = sign("GET", url, ak=api.ak, sk=api.sk, headers={"X-Project-Id": emu.project_id})
            conn.request("GET", urlsplit(url).path, headers=headers)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.version == 11
            resp.read()
            sockets.add(id(conn.sock))
        assert len(sockets) == 1
    finally:
        conn.close()


def test_hundreds_of_concurrent_keep_alive_connections(emu: MetaStudioEmulator) -> None:
    job_id = emu.jobs.create("busy")["job_id"]
    token = emu.iam.issue_token()
    path = STYLIZED.format(project=emu.project_id) + f"/picture-modelings/{job_id}"
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-Token: {token}\r\n\r\n".encode()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        return int(head.split(b" ")[1])

    async def run() -> list[int]:
        conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", emu.port) for _ in range(300)))
        statuses: list[int] = []
        for _ in range(3):  # three rounds on the same 300 open connections
            statuses += await asyncio.gather(*(one(r, w) for r, w in conns))
        for _, writer in conns:
            writer.close()
        return statuses

    assert asyncio.run(run()) == [200] * 900
    assert emu.recorder.count("show", 200) == 900


def test_concurrent_httpx_async_client(emu: MetaStudioEmulator) -> None:
    job_id = emu.jobs.create("busy")["job_id"]
    token = emu.iam.issue_token()
    url = emu.base_url + STYLIZED.format(project=emu.project_id) + f"/picture-modelings/{job_id}"

    async def run() -> list[int]:
        # httpx's own pool gets slow with hundreds of connections; 64 keeps this test quick.
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=30, headers={"X-Auth-Token": token}) as client:
            first = await asyncio.gather(*(client.get(url) for _ in range(64)))
            second = await asyncio.gather(*(client.get(url) for _ in range(64)))
        return [r.status_code for r in (*first, *second)]

    assert asyncio.run(run()) == [200] * 128


def test_connection_helpers_without_airflow(emu: MetaStudioEmulator) -> None:
    assert emu.connection_extra() == {"project_id": emu.project_id, "iam_endpoint": emu.base_url}
    conn = json.loads(emu.connection_json())
    assert conn == {
        "conn_type": "metastudio",
        "host": "127.0.0.1",
        "port": emu.port,
        "schema": "http",
        "login": emu.ak,
        "password": emu.sk,
        "extra": emu.connection_extra(),
    }
    token_conn = json.loads(emu.connection_json("token"))
    assert token_conn["extra"]["auth_type"] == "token"
    assert _token_show(emu, token_conn["password"]).status_code == 200
    password_conn = json.loads(emu.connection_json("password"))
    assert (
        password_conn["login"] == emu.config.iam_user
        and password_conn["extra"]["domain"] == emu.config.iam_domain
    )
    with pytest.raises(ValueError):
        emu.connection_json("kerberos")


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(time_scale=0)
    with pytest.raises(ValueError):
        EmulatorConfig(outcomes_by_name={"*": "DONE"})
    with pytest.raises(ValueError):
        EmulatorConfig(fault_500=1.5)
    assert FaultKind.parse("drop_after") is FaultKind.DROP_AFTER
    assert "sk" not in repr(EmulatorConfig()).split("ak=")[0] and EmulatorConfig().sk not in repr(
        EmulatorConfig()
    )
