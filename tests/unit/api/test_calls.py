"""Calls built from the tenant's base URL: validated, canonical, and sending nothing."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from airflow_provider_metastudio.api import (
    asset_show_call,
    base_url,
    create_by_url_call,
    create_call,
    iam_call,
    list_call,
    multipart,
    show_call,
)
from airflow_provider_metastudio.exceptions import MetaStudioValidationError

pytestmark = pytest.mark.airflow_independent  # runs on the newest Airflow line only

BASE = base_url("https://metastudio.example.test", "p" * 32)
STYLIZED = f"{BASE}/digital-human/stylized"
# The smallest PNG header validate_photo accepts: signature, IHDR with a 64x64 size.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000400000004008020000000000000000")


def test_base_url_is_the_endpoint_and_project():
    assert BASE == "https://metastudio.example.test/v1/" + "p" * 32


def test_show_call_is_a_get_below_the_stylized_path():
    call = show_call(BASE, "job-1_SMS")
    assert (call.name, call.method, call.url) == ("show", "GET", f"{STYLIZED}/picture-modelings/job-1_SMS")
    assert call.idempotent and call.authenticated and call.body is None


@pytest.mark.parametrize("job_id", ["../x", "a/b", "", None], ids=["dot-dot", "slash", "empty", "none"])
def test_show_call_refuses_a_bad_job_id_naming_the_field(job_id):
    with pytest.raises(MetaStudioValidationError) as exc:
        show_call(BASE, job_id)
    assert exc.value.field == "job_id"


def test_list_call_sends_the_canonical_query_in_key_order():
    call = list_call(
        BASE,
        offset=0,
        limit=10,
        states=["FAILED", "SUCCEED"],
        sort_key="update_time",
        sort_dir="desc",
        create_since=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    )
    assert call.url == (
        f"{STYLIZED}/picture-modelings?create_since=2026-01-02T03%3A04%3A05Z&limit=10&offset=0"
        "&sort_dir=desc&sort_key=update_time&state=FAILED%2CSUCCEED"
    )


@pytest.mark.parametrize(
    "kwargs, field",
    [({"limit": 0}, "page_size"), ({"offset": -1}, "offset"), ({"states": ["DONE"]}, "states")],
    ids=["limit", "offset", "state"],
)
def test_list_call_validates_its_filters(kwargs, field):
    with pytest.raises(MetaStudioValidationError) as exc:
        list_call(BASE, **{"offset": 0, "limit": 1, **kwargs})
    assert exc.value.field == field


def test_create_call_is_multipart_and_never_retried_blindly():
    call = create_call(BASE, photo=PNG, style_id="system_male_001", name="m", notify_url=None)
    assert (call.name, call.method, call.url) == ("create", "POST", f"{STYLIZED}/picture-modelings")
    assert not call.idempotent
    boundary = call.content_type.split("boundary=")[1]
    assert call.body.startswith(f"--{boundary}\r\n".encode()) and call.body.endswith(
        f"--{boundary}--\r\n".encode()
    )
    assert b'filename="photo.png"\r\nContent-Type: image/png\r\n\r\n' + PNG in call.body


def test_multipart_has_each_field_and_the_file():
    body, content_type = multipart({"a": "1", "b": "two"}, "file", "f.jpg", "image/jpeg", b"DATA")
    boundary = content_type.removeprefix("multipart/form-data; boundary=")
    parts = body.split(f"--{boundary}".encode())
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    assert parts[1] == b'\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
    assert parts[2] == b'\r\nContent-Disposition: form-data; name="b"\r\n\r\ntwo\r\n'
    assert parts[3] == (
        b'\r\nContent-Disposition: form-data; name="file"; filename="f.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\nDATA\r\n"
    )


def test_create_by_url_call_is_json():
    call = create_by_url_call(
        BASE, picture_url="https://img.example/p.png", style_id="s", name="n", notify_url=None
    )
    assert call.url == f"{STYLIZED}/picture-modelings-by-url" and call.content_type == "application/json"
    assert json.loads(call.body) == {"picture_url": "https://img.example/p.png", "style_id": "s", "name": "n"}


def test_asset_show_call_is_below_the_project():
    call = asset_show_call(BASE, "4b1d0f5e7a9c4c2e8f3a6b5d7c9e1f20")
    assert call.url == f"{BASE}/digital-assets/4b1d0f5e7a9c4c2e8f3a6b5d7c9e1f20"


def test_iam_call_is_unauthenticated_and_keeps_the_password_out_of_its_repr():
    call = iam_call("https://iam.example", user="u", password="PWsecret-1", domain="d", project_id="p1")
    assert call.url == "https://iam.example/v3/auth/tokens" and not call.authenticated
    assert json.loads(call.body)["auth"]["scope"] == {"project": {"id": "p1"}}
    assert "PWsecret-1" not in repr(call)
