"""Bad input and broken answers, table-driven, against the emulator over real HTTP.

Bad input must be refused before a single request goes out, with an error naming the field. Broken
answers must end quickly in an error naming the HTTP status, the service's error code (if any) and
the ``X-Request-Id``. Nothing may hang, and no request may ever leave the picture-modeling API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple
from unittest import mock

import pytest
from testsupport import BAD_JOB_IDS

from airflow_provider_metastudio._compat import TaskDeferred
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioError,
    MetaStudioGatewayError,
    MetaStudioInvalidResponseError,
    MetaStudioNotFoundError,
    MetaStudioServerError,
    MetaStudioValidationError,
    MetaStudioWaitTimeout,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.operators.picture_modeling import (
    MetaStudioCreatePictureModelingJobOperator,
    MetaStudioGetPictureModelingJobOperator,
)
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor
from airflow_provider_metastudio.testing import (
    MetaStudioEmulator,
    make_jpeg_header,
    make_png,
    make_png_header,
)
from airflow_provider_metastudio.testing._replies import json_reply
from airflow_provider_metastudio.transport import MAX_RESPONSE_BYTES
from airflow_provider_metastudio.triggers.picture_modeling import MetaStudioPictureModelingJobTrigger
from airflow_provider_metastudio.validation import MAX_PHOTO_BYTES

pytestmark = pytest.mark.metastudio_emulator(quotas_enabled=False, waiting_seconds=0, processing_seconds=3600)

CONN_ENV = "AIRFLOW_CONN_METASTUDIO_DEFAULT"
HANG_LIMIT = 60  # seconds: SIGALRM fails any test that runs longer (a hang)
QUICK = 10.0  # seconds: what one refused input or broken answer may take at most, retries included
RETRIES = 2  # every broken answer is injected RETRIES + 1 times, so the last attempt fails too
MIB = 1024 * 1024
HUGE_BODY = 10 * MIB
STYLE_ID = "system_male_001"
PICTURE_URL = "https://photos.example.com/face.png"


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """Fail a test that hangs instead of waiting forever (no pytest-timeout plugin here)."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"test still running after {HANG_LIMIT}s: something hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(HANG_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def emu(
    metastudio_emulator: MetaStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MetaStudioEmulator]:
    """The emulator behind ``metastudio_default`` (client-side quota off: these tests send few
    requests); afterwards, every request it saw stayed inside the picture-modeling API."""
    use_connection(monkeypatch, metastudio_emulator)
    yield metastudio_emulator
    prefix = f"/v1/{metastudio_emulator.project_id}/digital-human/stylized/picture-modelings"
    for entry in metastudio_emulator.recorder.request_log():
        assert entry["path"].startswith(prefix), entry
        assert entry["call"] in ("show", "list", "create", "create_by_url"), entry


def use_connection(monkeypatch: pytest.MonkeyPatch, emu: MetaStudioEmulator, **extra: Any) -> None:
    """``metastudio_default`` pointing at ``emu``; an extra given as None is removed."""
    conn = emu.connection_dict()
    conn["extra"]["rate_limits"] = False
    for key, value in extra.items():
        if value is None:
            conn["extra"].pop(key, None)
        else:
            conn["extra"][key] = value
    monkeypatch.setenv(CONN_ENV, json.dumps(conn))


def fast_hook() -> MetaStudioHook:
    return MetaStudioHook(retry_limit=RETRIES, retry_delay=0.01, retry_max_delay=0.05)


def assert_no_request(emu: MetaStudioEmulator) -> None:
    assert emu.recorder.request_log() == []
    assert emu.recorder.counters()["total"] == 0


def assert_names_field(err: MetaStudioValidationError, field: str) -> None:
    assert err.field == field
    assert f"Invalid {field}:" in str(err)
    assert len(str(err)) < 300  # an excerpt of the value, never all 10,000 characters


def _context() -> dict[str, Any]:
    return {"ti": mock.Mock(name="ti")}


# -- bad job ids: refused before any request, by every entry point -------------------------------------


def _hook_get(job_id: Any) -> Any:
    return fast_hook().get_picture_modeling_job(job_id)


def _hook_aget(job_id: Any) -> Any:
    return asyncio.run(fast_hook().aget_picture_modeling_job(job_id))


def _hook_wait(job_id: Any) -> Any:
    return fast_hook().wait_for_picture_modeling_job(job_id, poll_interval=0.1, timeout=5)


def _sensor_poke(job_id: Any) -> Any:
    return MetaStudioPictureModelingJobSensor(task_id="wait", job_id=job_id).poke(_context())


def _sensor_execute_deferrable(job_id: Any) -> Any:
    sensor = MetaStudioPictureModelingJobSensor(task_id="wait", job_id=job_id, deferrable=True)
    return sensor.execute(_context())


def _get_operator(job_id: Any) -> Any:
    return MetaStudioGetPictureModelingJobOperator(task_id="fetch", job_id=job_id).execute(_context())


def _get_operator_waiting(job_id: Any) -> Any:
    op = MetaStudioGetPictureModelingJobOperator(
        task_id="fetch", job_id=job_id, wait_for_completion=True, deferrable=True, poll_interval=0.1
    )
    return op.execute(_context())


JOB_ID_ENTRY_POINTS: dict[str, Callable[[Any], Any]] = {
    "hook-get": _hook_get,
    "hook-aget": _hook_aget,
    "hook-wait": _hook_wait,
    "sensor-poke": _sensor_poke,
    "sensor-execute-deferrable": _sensor_execute_deferrable,
    "get-operator": _get_operator,
    "get-operator-waiting": _get_operator_waiting,
}


@pytest.mark.parametrize("entry", list(JOB_ID_ENTRY_POINTS), ids=list(JOB_ID_ENTRY_POINTS))
@pytest.mark.parametrize("job_id", list(BAD_JOB_IDS.values()), ids=list(BAD_JOB_IDS))
def test_bad_job_id_is_refused_before_any_request(job_id, entry, emu):
    started = time.monotonic()
    with pytest.raises(MetaStudioValidationError) as err:
        JOB_ID_ENTRY_POINTS[entry](job_id)
    assert time.monotonic() - started < QUICK
    assert_names_field(err.value, "job_id")
    assert_no_request(emu)


@pytest.mark.parametrize("job_id", list(BAD_JOB_IDS.values()), ids=list(BAD_JOB_IDS))
def test_bad_job_id_ends_the_trigger_with_one_error_event_and_no_request(job_id, emu):
    trigger = MetaStudioPictureModelingJobTrigger(job_id=job_id, end_time=time.time() + 30, poll_interval=0.1)

    async def events() -> list[dict[str, Any]]:
        return [e.payload async for e in trigger.run()]

    (event,) = asyncio.run(events())
    assert event["status"] == "error"
    assert event["error_type"] == "MetaStudioValidationError"
    assert "Invalid job_id:" in event["message"]
    assert_no_request(emu)


# -- bad connection settings: refused before any request, naming the field -----------------------------


def _no_scheme(emu: MetaStudioEmulator) -> str:
    return emu.base_url.split("://", 1)[1]


CONNECTION_CASES: dict[str, tuple[Callable[[MetaStudioEmulator], dict[str, Any]], str]] = {
    "app-user-id-chinese": (lambda e: {"app_user_id": "用户-42"}, "app_user_id"),
    "app-user-id-newline": (lambda e: {"app_user_id": "user\r\nX-Evil: 1"}, "app_user_id"),
    "missing-project-id": (lambda e: {"project_id": None}, "project_id"),
    "project-id-with-slash": (lambda e: {"project_id": "../other"}, "project_id"),
    "unknown-region-word": (lambda e: {"region": "moon", "endpoint": None}, "region"),
    "region-upper-case": (lambda e: {"region": "CN-NORTH-4", "endpoint": None}, "region"),
    "region-host-injection": (lambda e: {"region": "cn-north-4.evil.example", "endpoint": None}, "region"),
    "region-userinfo-injection": (
        lambda e: {"region": "x@evil.example/cn-north-4", "endpoint": None},
        "region",
    ),
    "endpoint-without-scheme": (lambda e: {"endpoint": _no_scheme(e)}, "endpoint"),
    "endpoint-localhost-without-scheme": (lambda e: {"endpoint": f"localhost:{e.port}"}, "endpoint"),
    "endpoint-ftp": (lambda e: {"endpoint": f"ftp://{_no_scheme(e)}"}, "endpoint"),
    "endpoint-with-query": (lambda e: {"endpoint": f"{e.base_url}/?x=1"}, "endpoint"),
}


@pytest.mark.parametrize("case", list(CONNECTION_CASES), ids=list(CONNECTION_CASES))
def test_bad_connection_setting_names_the_field(case, emu, monkeypatch):
    extra, field = CONNECTION_CASES[case]
    use_connection(monkeypatch, emu, **extra(emu))
    with pytest.raises(MetaStudioValidationError) as err:
        fast_hook().get_picture_modeling_job("job-1")
    assert_names_field(err.value, field)
    assert_no_request(emu)


# -- bad create input: refused before any request, naming the field ------------------------------------


def _photo_file(tmp_path: Any, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


PHOTO_CASES: dict[str, Callable[[Any], Any]] = {
    "gif-bytes": lambda tmp: b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    "text-file": lambda tmp: _photo_file(tmp, "face.png", b"this is not a picture\n"),
    "empty-bytes": lambda tmp: b"",
    "missing-file": lambda tmp: str(tmp / "nowhere.png"),
    "png-too-wide": lambda tmp: make_png_header(4000, 1000),
    "png-too-large-both-ways": lambda tmp: make_png_header(3000, 3000),
    "jpeg-too-large": lambda tmp: make_jpeg_header(7680, 4320),
    "png-too-many-bytes": lambda tmp: make_png(8, 8) + b"\x00" * (MAX_PHOTO_BYTES + 1),
    "file-too-many-bytes": lambda tmp: _photo_file(
        tmp, "big.png", make_png(8, 8) + b"\x00" * (MAX_PHOTO_BYTES + 1)
    ),
    "not-bytes": lambda tmp: 3.14,
}


@pytest.mark.parametrize("case", list(PHOTO_CASES), ids=list(PHOTO_CASES))
def test_bad_photo_is_refused_before_upload(case, emu, tmp_path):
    photo = PHOTO_CASES[case](tmp_path)
    with pytest.raises(MetaStudioValidationError) as err:
        fast_hook().create_picture_modeling_job(photo=photo, style_id=STYLE_ID, name="model")
    assert_names_field(err.value, "photo")
    assert_no_request(emu)


BAD_URLS = {
    "ftp": "ftp://photos.example.com/face.png",
    "file": "file:///etc/passwd",
    "javascript": "javascript:alert(1)",
    "data": "data:image/png;base64,iVBORw0KGgo=",
    "no-scheme": "photos.example.com/face.png",
    "scheme-only": "https://",
    "inner-space": "https://photos.example.com/my face.png",
    "empty": "",
    "not-a-string": ["https://photos.example.com/face.png"],
}


@pytest.mark.parametrize("url", list(BAD_URLS.values()), ids=list(BAD_URLS))
@pytest.mark.parametrize("field", ["picture_url", "notify_url"])
def test_bad_url_is_refused_before_create(field, url, emu):
    kwargs = {"picture_url": PICTURE_URL, "style_id": STYLE_ID, "name": "model", field: url}
    with pytest.raises(MetaStudioValidationError) as err:
        fast_hook().create_picture_modeling_job_by_url(**kwargs)
    assert_names_field(err.value, field)
    assert_no_request(emu)


TEXT_CASES = {
    "empty-name": ("name", ""),
    "blank-name": ("name", "   "),
    "name-with-newline": ("name", "model\nX-Evil: 1"),
    "name-too-long": ("name", "n" * 257),
    "empty-style": ("style_id", ""),
    "style-too-long": ("style_id", "s" * 65),
}


@pytest.mark.parametrize("case", list(TEXT_CASES), ids=list(TEXT_CASES))
def test_bad_text_field_is_refused_before_create(case, emu):
    field, value = TEXT_CASES[case]
    kwargs = {"picture_url": PICTURE_URL, "style_id": STYLE_ID, "name": "model", field: value}
    with pytest.raises(MetaStudioValidationError) as err:
        fast_hook().create_picture_modeling_job_by_url(**kwargs)
    assert_names_field(err.value, field)
    assert_no_request(emu)


def test_create_operator_with_a_bad_url_fails_before_any_request(emu):
    op = MetaStudioCreatePictureModelingJobOperator(
        task_id="create", picture_url="file:///etc/passwd", style_id=STYLE_ID, name="model"
    )
    context = _context()
    with pytest.raises(MetaStudioValidationError) as err:
        op.execute(context)
    assert_names_field(err.value, "picture_url")
    context["ti"].xcom_push.assert_not_called()
    assert_no_request(emu)


def test_create_operator_needs_exactly_one_photo_source():
    for kwargs in ({}, {"photo": b"x", "picture_url": PICTURE_URL}):
        with pytest.raises(MetaStudioValidationError) as err:
            MetaStudioCreatePictureModelingJobOperator(
                task_id="create", style_id=STYLE_ID, name="m", **kwargs
            )
        assert_names_field(err.value, "photo")


# -- a state the contract does not list -----------------------------------------------------------------

UNKNOWN_STATE = "ARCHIVED"


@pytest.fixture
def archived_job(emu: MetaStudioEmulator) -> str:
    job = emu.jobs.create(name="odd")
    emu.jobs.set_state(job["job_id"], UNKNOWN_STATE)
    return job["job_id"]


def test_hook_keeps_an_unknown_state_raw_and_never_terminal(emu, archived_job):
    job = fast_hook().get_picture_modeling_job(archived_job)
    assert job.state == UNKNOWN_STATE
    assert job.known_state is None
    assert not job.is_terminal and not job.is_failure
    assert not job.is_success() and not job.is_success(accept_partial_success=False)
    assert job.to_dict()["state"] == UNKNOWN_STATE


def _unknown_state_warnings(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> int:
    # Airflow 3 sends task logs through structlog (stdout), Airflow 2 through logging (both):
    # count each channel on its own so one warning is not counted twice.
    marker = f"reports state '{UNKNOWN_STATE}', which this provider does not know"
    out, err = capfd.readouterr()
    in_fd = (out + err).count(marker)
    in_records = sum(marker in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    return max(in_fd, in_records)


def test_sensor_keeps_waiting_on_an_unknown_state_with_one_warning(emu, archived_job, capfd, caplog):
    caplog.set_level(logging.INFO)
    sensor = MetaStudioPictureModelingJobSensor(task_id="wait", job_id=archived_job)
    assert [sensor.poke(_context()) for _ in range(3)] == [False, False, False]
    assert _unknown_state_warnings(capfd, caplog) == 1
    assert emu.recorder.count(call="show", status=200) == 3


def test_deferrable_sensor_defers_on_an_unknown_state(emu, archived_job):
    sensor = MetaStudioPictureModelingJobSensor(
        task_id="wait", job_id=archived_job, deferrable=True, timeout=60
    )
    with pytest.raises(TaskDeferred):
        sensor.execute(_context())


def test_trigger_times_out_on_an_unknown_state_instead_of_succeeding(emu, archived_job):
    trigger = MetaStudioPictureModelingJobTrigger(
        job_id=archived_job, end_time=time.time() + 2, poll_interval=0.2
    )

    async def events() -> list[dict[str, Any]]:
        return [e.payload async for e in trigger.run()]

    (event,) = asyncio.run(events())
    assert event["status"] == "timeout"
    assert event["last_state"] == UNKNOWN_STATE


def test_blocking_wait_times_out_on_an_unknown_state(emu, archived_job):
    with pytest.raises(MetaStudioWaitTimeout, match=UNKNOWN_STATE):
        fast_hook().wait_for_picture_modeling_job(archived_job, poll_interval=0.2, timeout=1)


# -- broken answers: a clear error naming status, error code and request id ----------------------------

Arrange = Callable[[MetaStudioEmulator, str, pytest.MonkeyPatch], None]


class Broken(NamedTuple):
    arrange: Arrange  # (emulator, an existing job id, monkeypatch)
    call: Callable[[str], Any]  # the hook call, given the job id
    exc: type[MetaStudioError]
    status: int
    code: str | None
    text: str  # must appear in the message


def fault(call: str, kind: str, **kwargs: Any) -> Arrange:
    """Every attempt (the first and each retry) meets the fault."""
    return lambda emu, job_id, mp: emu.faults.inject(call, kind, RETRIES + 1, **kwargs)


def show_answers(make: Callable[[str], Any]) -> Arrange:
    def arrange(emu: MetaStudioEmulator, job_id: str, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(emu.jobs, "show", lambda project_id, job: json_reply(200, make(job)))

    return arrange


def answers(handler: str, body: Any) -> Arrange:
    def arrange(emu: MetaStudioEmulator, job_id: str, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(emu.jobs, handler, lambda *args: json_reply(200, body))

    return arrange


def forget_jobs(emu: MetaStudioEmulator, job_id: str, mp: pytest.MonkeyPatch) -> None:
    emu.reset()


def wrong_sk(emu: MetaStudioEmulator, job_id: str, mp: pytest.MonkeyPatch) -> None:
    conn = emu.connection_dict()
    conn["password"] = "not-the-secret-key"
    conn["extra"]["rate_limits"] = False
    mp.setenv(CONN_ENV, json.dumps(conn))


def show(job_id: str) -> Any:
    return fast_hook().get_picture_modeling_job(job_id)


def create(job_id: str) -> Any:
    return fast_hook().create_picture_modeling_job_by_url(
        picture_url=PICTURE_URL, style_id=STYLE_ID, name="m"
    )


def list_all(job_id: str) -> Any:
    return list(fast_hook().list_picture_modeling_jobs())


INVALID = MetaStudioInvalidResponseError
BROKEN_ANSWERS = {
    "unknown-job": Broken(forget_jobs, show, MetaStudioNotFoundError, 404, "MSS.00000003", "Job not found"),
    "job-without-state": Broken(show_answers(lambda i: {"job_id": i}), show, INVALID, 200, None, "state"),
    "job-without-job-id": Broken(
        show_answers(lambda i: {"state": "SUCCEED"}), show, INVALID, 200, None, "job_id"
    ),
    "job-bad-time": Broken(
        show_answers(lambda i: {"job_id": i, "state": "SUCCEED", "end_time": "yesterday"}),
        show,
        INVALID,
        200,
        None,
        "end_time",
    ),
    "job-not-an-object": Broken(
        show_answers(lambda i: ["job"]), show, INVALID, 200, None, "not a JSON object"
    ),
    "create-without-job-id": Broken(
        answers("create_from_url", {"model_asset_id": "abc"}), create, INVALID, 200, None, "no job_id"
    ),
    "list-jobs-not-a-list": Broken(
        answers("list_jobs", {"count": 1, "picture_modeling_jobs": "job"}),
        list_all,
        INVALID,
        200,
        None,
        "picture_modeling_jobs",
    ),
    "list-item-without-state": Broken(
        answers("list_jobs", {"count": 1, "picture_modeling_jobs": [{"job_id": "job-1"}]}),
        list_all,
        INVALID,
        200,
        None,
        "state",
    ),
    "list-without-jobs-but-count": Broken(
        answers("list_jobs", {"count": 3}), list_all, INVALID, 200, None, "picture_modeling_jobs"
    ),
    # A missing count is tolerated as the SDK tolerates it (see _parse_page); one that is not a number
    # is not.
    "list-with-a-bad-count": Broken(
        answers("list_jobs", {"count": "many", "picture_modeling_jobs": []}),
        list_all,
        INVALID,
        200,
        None,
        "count",
    ),
    "truncated-json": Broken(fault("show", "malformed"), show, INVALID, 200, None, "non-JSON body"),
    "empty-body": Broken(fault("show", "empty"), show, INVALID, 200, None, "empty body"),
    "10MB-body": Broken(
        fault("show", "huge", size=HUGE_BODY),
        show,
        INVALID,
        200,
        None,
        f"larger than {MAX_RESPONSE_BYTES} bytes",
    ),
    "html-502": Broken(
        fault("show", "html", status=502), show, MetaStudioGatewayError, 502, None, "text/html"
    ),
    "json-500": Broken(
        fault("show", "500"), show, MetaStudioServerError, 500, "MSS.00000004", "Internal Error"
    ),
    "create-500-not-retried": Broken(
        fault("create_by_url", "500"), create, MetaStudioServerError, 500, "MSS.00000004", "Internal Error"
    ),
    "wrong-sk": Broken(wrong_sk, show, MetaStudioAuthError, 401, "APIGW.0301", "signature"),
}


@pytest.mark.parametrize("case", list(BROKEN_ANSWERS), ids=list(BROKEN_ANSWERS))
def test_broken_answer_gives_a_clear_error(case, emu, monkeypatch):
    arrange, call, exc_class, status, code, text = BROKEN_ANSWERS[case]
    job_id = emu.jobs.create(name="any")["job_id"]
    arrange(emu, job_id, monkeypatch)

    started = time.monotonic()
    with pytest.raises(exc_class) as err:
        call(job_id)
    elapsed = time.monotonic() - started

    assert elapsed < QUICK
    e = err.value
    last = emu.recorder.request_log()[-1]
    assert (e.status, e.error_code) == (status, code)
    assert e.request_id == last["request_id"]
    message = str(e)
    assert f"HTTP {status}" in message
    assert f"X-Request-Id: {last['request_id']}" in message
    if code:
        assert code in message
    assert text in message
    assert len(message) < 1000  # a 10 MB body is never pasted into the message
    assert e.to_dict()["request_id"] == last["request_id"]
    if case == "create-500-not-retried":  # the job may exist: never sent twice
        assert emu.recorder.count(call="create_by_url") == 1
