"""MetaStudioHook's public methods over the sync transport, with requests-mock on the wire (no network)."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
from datetime import datetime, timedelta, timezone
from unittest import mock
from urllib.parse import quote, urlsplit

import pytest
from testsupport import BAD_JOB_IDS, png_header
from testsupport.hook_http import (  # noqa: F401  (pytest fixtures)
    AK,
    COVER_SIGNATURE,
    CREATE_BY_URL_URL,
    CREATE_URL,
    CREATED,
    ENDPOINT,
    HOOK_LOGGER,
    HOST,
    IAM_PASSWORD,
    IAM_URL,
    JOB_ID,
    JOB_SUCCEED,
    LIST_URL,
    PROJECT_ID,
    SECRETS,
    SECURITY_TOKEN,
    SHOW_URL,
    SK,
    STATIC_TOKEN,
    STYLE_ID,
    TOKEN_1,
    TOKEN_2,
    FakeTime,
    assert_signed,
    clean_process_state_fixture,
    dropped,
    error,
    fixed_clock,
    iam_ok,
    job_json,
    jpeg_bytes,
    log_messages,
    make_hook,
    masked_fixture,
    multipart_parts,
    ok,
    password_hook,
    refused,
    sleeps_fixture,
    token_hook,
)

import airflow_provider_metastudio.transport as transport_module
from airflow_provider_metastudio import __version__
from airflow_provider_metastudio.api import ApiResponse, CreatedJob, JobPage
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioConnectionError,
    MetaStudioInvalidResponseError,
    MetaStudioNotFoundError,
    MetaStudioValidationError,
    MetaStudioWaitTimeout,
)
from airflow_provider_metastudio.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR, get_provider_info
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.models import JobState, PictureModelingJob

# -- get -----------------------------------------------------------------------------------------


def test_get_job_parses_the_documented_example(requests_mock):
    requests_mock.get(SHOW_URL, **ok(request_id="req-show-1"))
    job = make_hook().get_picture_modeling_job(JOB_ID)
    assert isinstance(job, PictureModelingJob)
    assert job.job_id == JOB_ID
    assert job.known_state is JobState.SUCCEED
    assert job.start_time == datetime(2022, 11, 7, 11, 43, 8, tzinfo=timezone.utc)
    assert job.end_time == datetime(2022, 11, 7, 11, 43, 32, tzinfo=timezone.utc)
    assert job.error_info is None
    assert job.model_asset_id == "3fcb602bdbe4982ff59832b172949a21"
    assert job.model_cover_url == JOB_SUCCEED["model_cover_url"]
    assert job.model_cover_url_expires_at == datetime(2022, 11, 18, 6, 14, 24, tzinfo=timezone.utc)
    assert requests_mock.call_count == 1
    sent = requests_mock.request_history[0]
    assert sent.method == "GET"
    assert sent.url == SHOW_URL
    assert sent.body is None
    assert sent.headers["User-Agent"] == f"airflow-provider-metastudio/{__version__}"


def test_get_job_carries_the_request_id_outside_its_identity(requests_mock):
    requests_mock.get(SHOW_URL, [ok(request_id="req-show-2"), ok(request_id="req-show-3")])
    hook = make_hook()
    job = hook.get_picture_modeling_job(JOB_ID)
    assert job.job_id == JOB_ID and job.request_id == "req-show-2"
    again = hook.get_picture_modeling_job(JOB_ID)
    assert again.request_id == "req-show-3" and again == job and hash(again) == hash(job)


def test_get_failed_job_has_error_info(requests_mock):
    body = job_json(
        "FAILED", error_info={"error_code": "MSS.00000050", "error_msg": "no face"}, model_cover_url=None
    )
    requests_mock.get(SHOW_URL, **ok(body))
    job = make_hook().get_picture_modeling_job(JOB_ID)
    assert job.is_failure and job.error_code == "MSS.00000050" and job.error_msg == "no face"


def test_get_job_without_state_is_an_invalid_response(requests_mock):
    requests_mock.get(SHOW_URL, **ok({"job_id": JOB_ID}))
    with pytest.raises(MetaStudioInvalidResponseError, match="state"):
        make_hook().get_picture_modeling_job(JOB_ID)


@pytest.mark.parametrize("job_id", BAD_JOB_IDS.values(), ids=list(BAD_JOB_IDS))
def test_bad_job_id_raises_before_any_request(requests_mock, job_id):
    hook = make_hook()
    for call in (hook.get_picture_modeling_job, lambda j: hook.wait_for_picture_modeling_job(j, timeout=1)):
        with pytest.raises(MetaStudioValidationError) as exc:
            call(job_id)
        assert exc.value.field == "job_id"
        assert len(str(exc.value)) < 200
    assert requests_mock.call_count == 0


# -- list ----------------------------------------------------------------------------------------


def _paged_list(all_jobs, count=None):
    def respond(request, context):
        query = dict(p.split("=", 1) for p in urlsplit(request.url).query.split("&"))
        offset, limit = int(query["offset"]), int(query["limit"])
        context.headers["X-Request-Id"] = f"req-list-{offset}"
        return {
            "count": len(all_jobs) if count is None else count,
            "picture_modeling_jobs": all_jobs[offset : offset + limit],
        }

    return respond


def test_list_follows_offset_paging_to_the_end(requests_mock):
    jobs = [job_json("SUCCEED", job_id=f"job-{i}") for i in range(5)]
    requests_mock.get(LIST_URL, json=_paged_list(jobs))
    found = list(make_hook().list_picture_modeling_jobs(page_size=2))
    assert [j.job_id for j in found] == [f"job-{i}" for i in range(5)]
    queries = [urlsplit(r.url).query for r in requests_mock.request_history]
    assert queries == ["limit=2&offset=0", "limit=2&offset=2", "limit=2&offset=4"]


def test_list_stops_on_an_empty_page_even_if_count_says_more(requests_mock):
    jobs = [job_json(job_id=f"job-{i}") for i in range(3)]
    requests_mock.get(LIST_URL, json=_paged_list(jobs, count=50))
    assert len(list(make_hook().list_picture_modeling_jobs(page_size=2))) == 3
    assert requests_mock.call_count == 3  # 2 + 1 + an empty page


def test_list_sends_the_canonical_query_with_every_filter(requests_mock):
    requests_mock.get(LIST_URL, json={"count": 0, "picture_modeling_jobs": []})
    hook = make_hook()
    result = list(
        hook.list_picture_modeling_jobs(
            states=[JobState.WAITING, "PROCESSING"],
            sort_key="update_time",
            sort_dir="desc",
            create_since=datetime(2026, 11, 24, 8, 0, tzinfo=timezone(timedelta(hours=8))),
            create_until="2026-11-25T00:00:00Z",
            page_size=100,
        )
    )
    assert result == []
    (sent,) = requests_mock.request_history
    assert urlsplit(sent.url).query == (
        "create_since=2026-11-24T00%3A00%3A00Z&create_until=2026-11-25T00%3A00%3A00Z&limit=100&offset=0"
        "&sort_dir=desc&sort_key=update_time&state=WAITING%2CPROCESSING"
    )
    assert_signed(sent)  # the query the server sees is the one that was signed


def test_list_page_returns_count_jobs_and_request_id(requests_mock):
    requests_mock.get(LIST_URL, json=_paged_list([job_json(job_id="a"), job_json(job_id="b")]))
    page = make_hook().list_picture_modeling_jobs_page(offset=1, limit=10, states="SUCCEED")
    assert isinstance(page, JobPage)
    assert page.total == 2 and [j.job_id for j in page.jobs] == ["b"] and page.request_id == "req-list-1"
    assert "state=SUCCEED" in requests_mock.last_request.url


def test_find_matches_name_and_style_newest_first_across_pages(requests_mock):
    jobs = [
        job_json("PROCESSING", job_id="newest", name="run-1"),
        job_json("SUCCEED", job_id="other-name", name="run-2"),
        job_json("FAILED", job_id="other-style", name="run-1", style_id="system_female_001"),
        job_json("FAILED", job_id="oldest", name="run-1"),
    ]
    requests_mock.get(LIST_URL, json=_paged_list(jobs))
    hook = make_hook()
    hook.list_picture_modeling_jobs = functools.partial(hook.list_picture_modeling_jobs, page_size=2)
    found = hook.find_picture_modeling_jobs(
        name="run-1",
        style_id=JOB_SUCCEED["style_id"],
        created_since=datetime(2026, 11, 24, 8, 59, 59, 900000, tzinfo=timezone.utc),
        states=["PROCESSING", "FAILED"],
    )
    assert [j.job_id for j in found] == ["newest", "oldest"]
    queries = [urlsplit(r.url).query for r in requests_mock.request_history]
    assert queries[0] == (
        "create_since=2026-11-24T08%3A59%3A59Z&limit=2&offset=0&sort_dir=desc&sort_key=create_time"
        "&state=PROCESSING%2CFAILED"
    )
    assert len(queries) == 2


def test_find_stops_paging_once_the_caller_has_its_job(requests_mock):
    jobs = [job_json(job_id=f"job-{i}", name="n") for i in range(250)]
    requests_mock.get(LIST_URL, json=_paged_list(jobs))
    first = next(make_hook().find_picture_modeling_jobs(name="n", created_since=None))
    assert first.job_id == "job-0" and requests_mock.call_count == 1


def test_find_refuses_a_bad_name_before_any_request(requests_mock):
    with pytest.raises(MetaStudioValidationError) as exc:
        list(make_hook().find_picture_modeling_jobs(name="", created_since=None))
    assert exc.value.field == "name" and requests_mock.call_count == 0


def test_list_answer_without_a_job_list_is_invalid(requests_mock):
    requests_mock.get(LIST_URL, json={"count": 1, "picture_modeling_jobs": "oops"})
    with pytest.raises(MetaStudioInvalidResponseError):
        list(make_hook(retry_limit=0).list_picture_modeling_jobs())


LIST_PAGES = {  # answer -> (total, job ids); the page asked for is offset 0, limit 2
    "count 0, no list": ({"count": 0}, 0, []),
    "count 0, null list": ({"count": 0, "picture_modeling_jobs": None}, 0, []),
    "count as digits": ({"count": "1", "picture_modeling_jobs": [job_json(job_id="a")]}, 1, ["a"]),
    "integral float count": ({"count": 1.0, "picture_modeling_jobs": [job_json(job_id="a")]}, 1, ["a"]),
    "no count, short page": ({"picture_modeling_jobs": [job_json(job_id="a")]}, 1, ["a"]),
    "no count, empty page": ({"picture_modeling_jobs": []}, 0, []),
    "no count, full page": (  # at least one more: the pager must ask for the next page
        {"count": None, "picture_modeling_jobs": [job_json(job_id="a"), job_json(job_id="b")]},
        3,
        ["a", "b"],
    ),
}


@pytest.mark.parametrize(("body", "total", "ids"), LIST_PAGES.values(), ids=list(LIST_PAGES))
def test_list_page_shapes_the_sdk_accepts(requests_mock, body, total, ids):
    requests_mock.get(LIST_URL, json=body, headers={"X-Request-Id": "rid-list"})
    page = make_hook(retry_limit=0).list_picture_modeling_jobs_page(limit=2)
    assert (page.total, [j.job_id for j in page.jobs], page.request_id) == (total, ids, "rid-list")


INVALID_LIST_PAGES = {
    "counted jobs, no list": {"count": 3},
    "counted jobs, null list": {"count": 3, "picture_modeling_jobs": None},
    "neither": {},
    "list not a list": {"count": 1, "picture_modeling_jobs": {"job_id": "a"}},
    "negative count": {"count": -1, "picture_modeling_jobs": []},
    "boolean count": {"count": True, "picture_modeling_jobs": []},
    "text count": {"count": "many", "picture_modeling_jobs": []},
    "not an object": [job_json()],
}


@pytest.mark.parametrize("body", INVALID_LIST_PAGES.values(), ids=list(INVALID_LIST_PAGES))
def test_list_pages_that_would_hide_jobs_are_invalid(requests_mock, body):
    requests_mock.get(LIST_URL, json=body, headers={"X-Request-Id": "rid-bad"})
    with pytest.raises(MetaStudioInvalidResponseError) as exc:
        make_hook(retry_limit=0).list_picture_modeling_jobs_page()
    assert exc.value.request_id == "rid-bad" and exc.value.status == 200


def test_list_without_count_pages_to_the_end(requests_mock):
    jobs = [job_json(job_id=f"job-{i}") for i in range(5)]
    pager = _paged_list(jobs)

    def respond(request, context):
        body = pager(request, context)
        del body["count"]
        return body

    requests_mock.get(LIST_URL, json=respond)
    found = list(make_hook().list_picture_modeling_jobs(page_size=2))
    assert [j.job_id for j in found] == [f"job-{i}" for i in range(5)]
    assert requests_mock.call_count == 3  # 2 + 2 + 1: the short page is the last


def test_list_time_filters_are_sent_in_the_strict_form(requests_mock):
    requests_mock.get(LIST_URL, json={"count": 0, "picture_modeling_jobs": []})
    make_hook().list_picture_modeling_jobs_page(
        create_since="2026-11-24 08:00:00.5+0800", create_until="2026-11-25t00:00:00z"
    )
    query = urlsplit(requests_mock.last_request.url).query
    assert "create_since=2026-11-24T00%3A00%3A00Z&create_until=2026-11-25T00%3A00%3A00Z" in query


LIST_VALIDATION = {
    "page_size 0": ({"page_size": 0}, "page_size"),
    "page_size 101": ({"page_size": 101}, "page_size"),
    "page_size str": ({"page_size": "10"}, "page_size"),
    "sort_key": ({"sort_key": "name"}, "sort_key"),
    "sort_dir": ({"sort_dir": "up"}, "sort_dir"),
    "state unknown": ({"states": ["WAITING", "DONE"]}, "states"),
    "states as one comma string": ({"states": "WAITING,PROCESSING"}, "states"),
    "naive since": ({"create_since": datetime(2026, 1, 1)}, "create_since"),
    "garbage until": ({"create_until": "yesterday"}, "create_until"),
    "numeric since": ({"create_since": 1700000000}, "create_since"),
}


@pytest.mark.parametrize(("kwargs", "field"), LIST_VALIDATION.values(), ids=list(LIST_VALIDATION))
def test_list_validates_before_any_request(requests_mock, kwargs, field):
    with pytest.raises(MetaStudioValidationError) as exc:
        list(make_hook().list_picture_modeling_jobs(**kwargs))
    assert exc.value.field == field
    assert requests_mock.call_count == 0


def test_list_page_validates_offset(requests_mock):
    with pytest.raises(MetaStudioValidationError) as exc:
        make_hook().list_picture_modeling_jobs_page(offset=-1)
    assert exc.value.field == "offset"
    assert requests_mock.call_count == 0


# -- create from a photo ---------------------------------------------------------------------------


def _photo_path(tmp_path, name="face.png", data=None):
    path = tmp_path / name
    path.write_bytes(png_header() if data is None else data)
    return path


PHOTO_INPUTS = {
    "path": (lambda tmp: _photo_path(tmp), "face.png", "image/png", png_header()),
    "str path": (
        lambda tmp: str(_photo_path(tmp, "face.jpg", jpeg_bytes())),
        "face.jpg",
        "image/jpeg",
        jpeg_bytes(),
    ),
    "unsafe file name": (
        lambda tmp: _photo_path(tmp, 'my "face".png'),
        "photo.png",
        "image/png",
        png_header(),
    ),
    "bytes png": (lambda tmp: png_header(), "photo.png", "image/png", png_header()),
    "bytes jpeg": (lambda tmp: jpeg_bytes(), "photo.jpg", "image/jpeg", jpeg_bytes()),
    "bytearray": (lambda tmp: bytearray(png_header()), "photo.png", "image/png", png_header()),
    "file object": (lambda tmp: open(_photo_path(tmp, "me.png"), "rb"), "me.png", "image/png", png_header()),
    "BytesIO": (lambda tmp: io.BytesIO(jpeg_bytes()), "photo.jpg", "image/jpeg", jpeg_bytes()),
}


@pytest.mark.parametrize(
    ("make_photo", "filename", "mime", "data"), PHOTO_INPUTS.values(), ids=list(PHOTO_INPUTS)
)
def test_create_from_photo_sends_multipart(requests_mock, tmp_path, make_photo, filename, mime, data):
    requests_mock.post(CREATE_URL, **ok(CREATED, request_id="req-create"))
    photo = make_photo(tmp_path)
    try:
        created = make_hook().create_picture_modeling_job(
            photo=photo, style_id=STYLE_ID, name="我的模型 v1", notify_url="https://hooks.example.com/ms?x=1"
        )
    finally:
        if hasattr(photo, "close"):
            photo.close()
    assert created == CreatedJob(CREATED["job_id"], CREATED["model_asset_id"])
    (sent,) = requests_mock.request_history
    assert sent.method == "POST" and sent.url == CREATE_URL
    assert sent.headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    parts = multipart_parts(sent)
    assert set(parts) == {"style_id", "name", "notify_url", "file"}
    assert parts["style_id"] == (None, None, STYLE_ID.encode())
    assert parts["name"] == (None, None, "我的模型 v1".encode())
    assert parts["notify_url"] == (None, None, b"https://hooks.example.com/ms?x=1")
    assert parts["file"] == (filename, mime, data)
    names = assert_signed(sent)
    assert "x-sdk-content-sha256" in names and "content-type" in names


def test_create_without_notify_url_sends_no_such_part(requests_mock):
    requests_mock.post(CREATE_URL, **ok(CREATED))
    make_hook().create_picture_modeling_job(photo=png_header(), style_id=STYLE_ID, name="m")
    assert set(multipart_parts(requests_mock.last_request)) == {"style_id", "name", "file"}


def _big_sparse_file(tmp_path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as f:
        f.truncate(10 * 1024 * 1024 + 1)
    return path


CREATE_REFUSED = {
    "gif": ({"photo": b"GIF89a" + b"\x00" * 64}, "photo"),
    "text file object": ({"photo": io.StringIO("not bytes")}, "photo"),
    "oversized png": ({"photo": png_header(4000, 3000)}, "photo"),
    "empty": ({"photo": b""}, "photo"),
    "missing path": ({"photo": "/nonexistent/face.png"}, "photo"),
    "wrong type": ({"photo": 12345}, "photo"),
    "empty name": ({"photo": png_header(), "name": ""}, "name"),
    "long style": ({"photo": png_header(), "style_id": "s" * 65}, "style_id"),
    "notify ftp": ({"photo": png_header(), "notify_url": "ftp://x/y"}, "notify_url"),
}


@pytest.mark.parametrize(("kwargs", "field"), CREATE_REFUSED.values(), ids=list(CREATE_REFUSED))
def test_create_refuses_bad_input_before_any_request(requests_mock, kwargs, field):
    with pytest.raises(MetaStudioValidationError) as exc:
        make_hook().create_picture_modeling_job(**{"style_id": STYLE_ID, "name": "m", **kwargs})
    assert exc.value.field == field
    assert requests_mock.call_count == 0


def test_create_refuses_an_oversized_file_without_reading_it(requests_mock, tmp_path):
    with pytest.raises(MetaStudioValidationError) as exc:
        make_hook().create_picture_modeling_job(photo=_big_sparse_file(tmp_path), style_id=STYLE_ID, name="m")
    assert exc.value.field == "photo" and "bytes" in str(exc.value)
    assert requests_mock.call_count == 0


def test_create_answer_without_job_id_is_invalid(requests_mock):
    requests_mock.post(CREATE_URL, **ok({"model_asset_id": "x"}, request_id="req-c"))
    with pytest.raises(MetaStudioInvalidResponseError) as exc:
        make_hook().create_picture_modeling_job(photo=png_header(), style_id=STYLE_ID, name="m")
    assert exc.value.request_id == "req-c"
    assert requests_mock.call_count == 1


# -- create by URL -------------------------------------------------------------------------------


def test_create_by_url_sends_json(requests_mock):
    requests_mock.post(CREATE_BY_URL_URL, **ok(CREATED))
    created = make_hook().create_picture_modeling_job_by_url(
        picture_url="https://cdn.example.com/face.jpg",
        style_id=STYLE_ID,
        name="我的模型",
        notify_url="http://cb.example.com/x",
    )
    assert created.job_id == CREATED["job_id"] and created.model_asset_id == CREATED["model_asset_id"]
    (sent,) = requests_mock.request_history
    assert sent.headers["Content-Type"].startswith("application/json")
    assert json.loads(sent.body.decode("utf-8")) == {
        "picture_url": "https://cdn.example.com/face.jpg",
        "style_id": STYLE_ID,
        "name": "我的模型",
        "notify_url": "http://cb.example.com/x",
    }
    assert "X-Sdk-Content-Sha256" not in sent.headers  # a JSON body is hashed into the signature
    assert_signed(sent)


def test_create_by_url_omits_notify_url_when_not_given(requests_mock):
    requests_mock.post(CREATE_BY_URL_URL, **ok(CREATED))
    make_hook().create_picture_modeling_job_by_url(
        picture_url="https://cdn.example.com/a.png", style_id=STYLE_ID, name="m"
    )
    assert "notify_url" not in requests_mock.last_request.json()


@pytest.mark.parametrize(
    "picture_url",
    [
        "file:///etc/passwd",
        "ftp://cdn.example.com/a.png",
        "s3://bucket/a.png",
        "/local/a.png",
        "https:///a.png",
        "",
    ],
    ids=["file", "ftp", "s3", "relative", "no-host", "empty"],
)
def test_create_by_url_refuses_non_http_urls(requests_mock, picture_url):
    with pytest.raises(MetaStudioValidationError) as exc:
        make_hook().create_picture_modeling_job_by_url(picture_url=picture_url, style_id=STYLE_ID, name="m")
    assert exc.value.field == "picture_url"
    assert requests_mock.call_count == 0


# -- wait ----------------------------------------------------------------------------------------


def test_wait_returns_the_job_once_terminal_and_logs_each_change_once(requests_mock, caplog):
    caplog.set_level(logging.DEBUG, logger=HOOK_LOGGER)
    states = ["WAITING", "WAITING", "PROCESSING", "PROCESSING", "PROCESSING", "SUCCEED"]
    requests_mock.get(SHOW_URL, [ok(job_json(s), request_id=f"req-{i}") for i, s in enumerate(states)])
    fake = FakeTime()
    job = make_hook().wait_for_picture_modeling_job(
        JOB_ID, poll_interval=30, timeout=3600, monotonic=fake.monotonic, sleep=fake.sleep
    )
    assert job.state == "SUCCEED" and job.model_asset_id == JOB_SUCCEED["model_asset_id"]
    assert requests_mock.call_count == 6
    assert fake.slept == [30] * 5
    info = [m for m in log_messages(caplog, logging.INFO) if m.startswith("Picture modeling job")]
    assert len(info) == 3
    assert (
        "-> WAITING" in info[0] and "WAITING -> PROCESSING" in info[1] and "PROCESSING -> SUCCEED" in info[2]
    )
    assert "req-5" in info[2] and COVER_SIGNATURE not in info[2]
    debug = [m for m in log_messages(caplog, logging.DEBUG) if "still" in m]
    assert len(debug) == 3


def test_wait_returns_a_failed_job_without_raising(requests_mock):
    failed = job_json("FAILED", error_info={"error_code": "MSS.00000050", "error_msg": "no face"})
    requests_mock.get(SHOW_URL, [ok(job_json("PROCESSING")), ok(failed)])
    fake = FakeTime()
    job = make_hook().wait_for_picture_modeling_job(
        JOB_ID, poll_interval=5, monotonic=fake.monotonic, sleep=fake.sleep
    )
    assert job.state == "FAILED" and job.error_code == "MSS.00000050"


def test_wait_keeps_polling_through_an_unknown_state(requests_mock, caplog):
    caplog.set_level(logging.DEBUG, logger=HOOK_LOGGER)
    requests_mock.get(SHOW_URL, [ok(job_json("ARCHIVED")), ok(job_json("ARCHIVED")), ok(job_json("SUCCEED"))])
    fake = FakeTime()
    job = make_hook().wait_for_picture_modeling_job(
        JOB_ID, poll_interval=1, monotonic=fake.monotonic, sleep=fake.sleep
    )
    assert job.state == "SUCCEED" and requests_mock.call_count == 3
    assert len([m for m in log_messages(caplog, logging.WARNING) if "ARCHIVED" in m]) == 1


def test_wait_times_out_only_after_a_final_read_at_the_deadline(requests_mock):
    requests_mock.get(SHOW_URL, **ok(job_json("PROCESSING")))
    fake = FakeTime()
    with pytest.raises(MetaStudioWaitTimeout) as exc:
        make_hook().wait_for_picture_modeling_job(
            JOB_ID, poll_interval=30, timeout=100, monotonic=fake.monotonic, sleep=fake.sleep
        )
    # polls at 0, 30, 60, 90 and, the last sleep cut to what was left, at the deadline (100)
    assert requests_mock.call_count == 5
    assert fake.slept == [30, 30, 30, 10]
    assert str(exc.value) == (
        f"Picture modeling job {JOB_ID} still PROCESSING after 100 s (timeout 100 s; "
        "last seen PROCESSING 0 s ago)"
    )


@pytest.mark.parametrize("state", ["SUCCEED", "FAILED", "CANCELED", "PARTIAL_SUCCEED"])
def test_wait_reports_a_job_that_ended_in_the_last_interval(requests_mock, state):
    """Giving up at 90 s (the next poll "would be late") would call a job that ended at 95 s a timeout."""
    requests_mock.get(SHOW_URL, [ok(job_json("PROCESSING"))] * 4 + [ok(job_json(state))])
    fake = FakeTime()
    job = make_hook().wait_for_picture_modeling_job(
        JOB_ID, poll_interval=30, timeout=100, monotonic=fake.monotonic, sleep=fake.sleep
    )
    assert job.state == state and requests_mock.call_count == 5
    assert fake.now - 100.0 == 100


def test_wait_with_no_timeout_waits_forever(requests_mock):
    requests_mock.get(SHOW_URL, [ok(job_json("PROCESSING"))] * 200 + [ok(job_json("SUCCEED"))])
    fake = FakeTime()
    job = make_hook().wait_for_picture_modeling_job(
        JOB_ID, poll_interval=3600, timeout=None, monotonic=fake.monotonic, sleep=fake.sleep
    )
    assert job.state == "SUCCEED" and fake.slept == [3600] * 200


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"poll_interval": float("nan")}, "poll_interval"),
        ({"poll_interval": "30"}, "poll_interval"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -5}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
    ],
)
def test_wait_refuses_bad_settings_before_any_request(requests_mock, kwargs, field):
    with pytest.raises(MetaStudioValidationError) as exc:
        make_hook().wait_for_picture_modeling_job(JOB_ID, **kwargs)
    assert exc.value.field == field
    assert requests_mock.call_count == 0


def test_details_of_another_job_are_an_invalid_answer(requests_mock):
    requests_mock.get(SHOW_URL, **ok(job_json("SUCCEED", job_id="someone-elses-job"), request_id="req-x"))
    with pytest.raises(MetaStudioInvalidResponseError) as exc:
        make_hook().get_picture_modeling_job(JOB_ID)
    assert exc.value.status == 200 and exc.value.request_id == "req-x" and exc.value.call == "show"
    assert "someone-elses-job" in str(exc.value) and "req-x" in str(exc.value)


def test_async_details_of_another_job_are_an_invalid_answer(monkeypatch):
    hook = make_hook()
    answer = ApiResponse(200, job_json(job_id="other"), "req-a", {})

    async def arequest(call):
        return answer

    monkeypatch.setattr(hook.transport, "arequest", arequest)
    with pytest.raises(MetaStudioInvalidResponseError) as exc:
        asyncio.run(hook.aget_picture_modeling_job(JOB_ID))
    assert exc.value.status == 200 and exc.value.request_id == "req-a" and "'other'" in str(exc.value)


def test_wait_propagates_a_final_api_error(requests_mock):
    requests_mock.get(SHOW_URL, **error(404, "MSS.00000003", "job not found", request_id="req-404"))
    fake = FakeTime()
    with pytest.raises(MetaStudioNotFoundError):
        make_hook().wait_for_picture_modeling_job(JOB_ID, monotonic=fake.monotonic, sleep=fake.sleep)
    assert fake.slept == []


# -- secrets ---------------------------------------------------------------------------------------


def _assert_no_secret(*texts):
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"secret leaked: {text[:200]!r}"


def test_aksk_secrets_never_leak(requests_mock, caplog, masked):
    caplog.set_level(logging.DEBUG)
    hook = make_hook({"security_token": SECURITY_TOKEN})
    assert mock.call(SK) in masked.call_args_list and mock.call(SECURITY_TOKEN) in masked.call_args_list
    requests_mock.get(
        SHOW_URL,
        [error(500, "MSS.00000004", "Internal Error"), {"exc": dropped()}, error(401, "APIGW.0301", "bad")],
    )
    with pytest.raises(MetaStudioAuthError) as exc:
        hook.get_picture_modeling_job(JOB_ID)
    requests_mock.get(SHOW_URL, [{"exc": refused()}] * 3)
    with pytest.raises(MetaStudioConnectionError) as conn_exc:
        hook.get_picture_modeling_job(JOB_ID)
    requests_mock.get(LIST_URL, **error(403, "MSS.00000005", "Forbidden"))
    _assert_no_secret(
        str(exc.value),
        repr(exc.value),
        json.dumps(exc.value.to_dict()),
        str(conn_exc.value),
        caplog.text,
        repr(hook.config),
        repr(hook.signer),
        repr(hook),
        hook.test_connection()[1],
    )
    assert (
        requests_mock.last_request.headers["X-Security-Token"] == SECURITY_TOKEN
    )  # it was used, just not shown


def test_token_secret_never_leaks(requests_mock, caplog, masked):
    caplog.set_level(logging.DEBUG)
    hook = token_hook(retry_limit=0)
    masked.assert_any_call(STATIC_TOKEN)
    requests_mock.get(SHOW_URL, **error(401, "APIGW.0301", "token expired"))
    with pytest.raises(MetaStudioAuthError) as exc:
        hook.get_picture_modeling_job(JOB_ID)
    _assert_no_secret(str(exc.value), caplog.text, repr(hook.config))


def test_password_flow_secrets_never_leak(requests_mock, caplog, masked):
    caplog.set_level(logging.DEBUG)
    requests_mock.post(IAM_URL, [iam_ok(TOKEN_1), iam_ok(TOKEN_2)])
    requests_mock.get(SHOW_URL, **error(401, "APIGW.0301", "bad token"))
    hook = password_hook()
    masked.assert_any_call(IAM_PASSWORD)
    with pytest.raises(MetaStudioAuthError) as exc:
        hook.get_picture_modeling_job(JOB_ID)
    masked.assert_any_call(TOKEN_1)
    masked.assert_any_call(TOKEN_2)
    # the IAM request (whose body holds the password) can end up in a traceback with locals
    _assert_no_secret(str(exc.value), caplog.text, repr(hook.config), repr(hook.transport._iam_call()))


def test_iam_failure_does_not_echo_the_password(requests_mock, caplog):
    caplog.set_level(logging.DEBUG)
    requests_mock.post(
        IAM_URL, [error(500, "IAM.0001", "internal"), {"exc": dropped()}, error(401, "IAM.0004", "wrong")]
    )
    with pytest.raises(MetaStudioAuthError) as exc:
        password_hook(retry_limit=2).get_picture_modeling_job(JOB_ID)
    _assert_no_secret(str(exc.value), caplog.text)


def test_connection_lookup_masks_the_password(monkeypatch, masked):
    monkeypatch.setenv(
        "AIRFLOW_CONN_METASTUDIO_DEFAULT",
        json.dumps(
            {"conn_type": "metastudio", "login": AK, "password": SK, "extra": {"project_id": PROJECT_ID}}
        ),
    )
    assert MetaStudioHook().config.sk == SK
    masked.assert_any_call(SK)


# -- the real connection lookup ------------------------------------------------------------------------


def test_connection_from_json_env_var(monkeypatch, requests_mock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_METASTUDIO_DEFAULT",
        json.dumps(
            {
                "conn_type": "metastudio",
                "host": ENDPOINT,
                "login": AK,
                "password": SK,
                "extra": {
                    "project_id": PROJECT_ID,
                    "rate_limits": False,
                    "app_user_id": "u-9",
                },
            }
        ),
    )
    requests_mock.get(SHOW_URL, **ok())
    hook = MetaStudioHook(retry_limit=0, clock=fixed_clock)
    assert hook.get_picture_modeling_job(JOB_ID).job_id == JOB_ID
    assert (hook.config.ak, hook.config.endpoint, hook.config.app_user_id) == (AK, ENDPOINT, "u-9")
    assert_signed(requests_mock.last_request)


def test_connection_from_uri_env_var_with_host_port_and_schema(monkeypatch, requests_mock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_METASTUDIO_DEFAULT",
        f"metastudio://{quote(AK, safe='')}:{quote(SK, safe='')}@{HOST}/https?project_id={PROJECT_ID}"
        "&rate_limits=false&timeout=7",
    )
    requests_mock.get(SHOW_URL, **ok())
    hook = MetaStudioHook(retry_limit=0, clock=fixed_clock)
    hook.get_picture_modeling_job(JOB_ID)
    assert (hook.config.sk, hook.config.endpoint, hook.config.timeout, hook.config.rate_limits) == (
        SK,
        ENDPOINT,
        (7.0, 7.0),
        None,
    )
    assert_signed(requests_mock.last_request)


def test_connection_with_another_id(monkeypatch, requests_mock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MY_METASTUDIO",
        json.dumps(
            {"conn_type": "metastudio", "login": AK, "password": SK, "extra": {"project_id": "other-project"}}
        ),
    )
    hook = MetaStudioHook("my_metastudio")
    assert hook.config.project_id == "other-project"
    assert hook.config.endpoint == "https://metastudio.cn-north-4.myhuaweicloud.com"


def test_connection_from_sdk_environment_variables(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_METASTUDIO_DEFAULT", f"metastudio://@/?project_id={PROJECT_ID}")
    monkeypatch.setenv("CLOUD_SDK_AK", AK)
    monkeypatch.setenv("CLOUD_SDK_SK", SK)
    assert (MetaStudioHook().config.ak, MetaStudioHook().config.sk) == (AK, SK)


# -- test_connection -----------------------------------------------------------------------------------


def test_test_connection_ok(requests_mock):
    requests_mock.get(
        LIST_URL, json={"count": 12, "picture_modeling_jobs": [job_json()]}, headers={"X-Request-Id": "r"}
    )
    ok_, message = make_hook().test_connection()
    assert ok_ is True
    assert PROJECT_ID in message and "12" in message
    assert urlsplit(requests_mock.last_request.url).query == "limit=1&offset=0"


def test_test_connection_401(requests_mock):
    requests_mock.get(
        LIST_URL, **error(401, "APIGW.0301", "Incorrect IAM authentication information", "rid-tc-401")
    )
    ok_, message = make_hook().test_connection()
    assert ok_ is False
    assert "401" in message and "APIGW.0301" in message and "rid-tc-401" in message
    assert requests_mock.call_count == 1


def test_test_connection_never_raises_on_connection_errors(requests_mock):
    requests_mock.get(LIST_URL, [{"exc": refused()}] * 3)
    ok_, message = make_hook(retry_limit=2).test_connection()
    assert ok_ is False and "could not connect" in message


def test_test_connection_never_raises_on_an_unexpected_error(requests_mock, monkeypatch):
    monkeypatch.setattr(transport_module.Transport, "request", mock.Mock(side_effect=RuntimeError("boom")))
    assert make_hook().test_connection() == (False, "RuntimeError: boom")


def test_test_connection_never_raises_on_a_bad_connection(monkeypatch, requests_mock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_METASTUDIO_DEFAULT",
        json.dumps({"conn_type": "metastudio", "login": AK, "password": SK}),
    )
    ok_, message = MetaStudioHook().test_connection()
    assert ok_ is False and "project_id" in message
    assert requests_mock.call_count == 0


def test_test_connection_never_raises_on_a_missing_connection(requests_mock):
    ok_, message = MetaStudioHook("metastudio_does_not_exist").test_connection()
    assert ok_ is False and "metastudio_does_not_exist" in message


def test_ui_field_behaviour_matches_the_provider_info():
    behaviour = MetaStudioHook.get_ui_field_behaviour()
    (conn_type,) = get_provider_info()["connection-types"]
    registered = conn_type["ui-field-behaviour"]
    assert behaviour["hidden_fields"] == registered["hidden-fields"] == UI_FIELD_BEHAVIOUR["hidden-fields"]
    assert behaviour["relabeling"] == registered["relabeling"]
    assert behaviour["placeholders"] == registered["placeholders"]
    # Host/Port/Schema are the destination (stored secrets go only there): the form must show them.
    assert not {"host", "port", "schema"} & set(behaviour["hidden_fields"])
    assert "login" in behaviour["relabeling"] and "password" in behaviour["relabeling"]


def test_connection_form_widgets():
    pytest.importorskip("wtforms")
    pytest.importorskip("flask_appbuilder")
    pytest.importorskip("flask_babel")
    from wtforms import PasswordField, StringField

    widgets = MetaStudioHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    assert widgets["security_token"].field_class is PasswordField
    assert widgets["project_id"].field_class is StringField
    for name, field in widgets.items():
        assert field.kwargs["description"] == CONN_FIELDS[name]["description"]
    assert widgets["region"].kwargs["default"] == "cn-north-4"
