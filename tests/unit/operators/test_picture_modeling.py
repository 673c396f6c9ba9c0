"""The create and get picture-modeling operators, dbt-style: what they send the hook, the XCom keys
they push (each once), the deferral and its trigger, each event's resume, retries that adopt the
earlier try's job. Only the hook's public calls are replaced; no HTTP, no database."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from testsupport import BAD_JOB_IDS, png_header
from testsupport.tasks import (
    AK,
    ASSET_ID,
    JOB_ID,
    REGION,
    SK,
    context,
    job,
    patch_job_reads,
    pushed,
    use_connection,
)

from airflow_provider_metastudio._compat import AirflowSensorTimeout, TaskDeferred
from airflow_provider_metastudio.exceptions import (
    MetaStudioError,
    MetaStudioJobFailedError,
    MetaStudioValidationError,
    MetaStudioWaitTimeout,
)
from airflow_provider_metastudio.hooks.metastudio import CreatedJob, MetaStudioHook
from airflow_provider_metastudio.links.picture_modeling import XCOM_CONSOLE_URL_KEY, console_url
from airflow_provider_metastudio.models import JobState
from airflow_provider_metastudio.operators.picture_modeling import (
    CLOCK_SKEW_MARGIN,
    MetaStudioCreatePictureModelingJobOperator,
    MetaStudioGetPictureModelingJobOperator,
)
from airflow_provider_metastudio.triggers.picture_modeling import (
    DEFER_TIMEOUT_MARGIN,
    MetaStudioCreatePictureModelingJobTrigger,
    MetaStudioPictureModelingJobTrigger,
    job_event,
)

PICTURE_URL = "https://photos.example.com/face.png"
STYLE_ID = "system_male_001"
CONSOLE_URL = console_url(REGION, ASSET_ID)
RUN_START = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
#: What a finished job adds to the keys pushed at create time.
DONE_KEYS = {"state", "model_cover_url", "model_cover_url_expires_at"}
CREATE_KEYS = {"job_id", "model_asset_id", XCOM_CONSOLE_URL_KEY}


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    use_connection(monkeypatch)
    yield
    mock.patch.stopall()


@pytest.fixture
def hook():
    """The hook's create, list and wait calls (the job read is :func:`patch_job_reads`)."""
    created = CreatedJob(JOB_ID, ASSET_ID)
    with (
        mock.patch.object(MetaStudioHook, "create_picture_modeling_job", return_value=created) as by_photo,
        mock.patch.object(
            MetaStudioHook, "create_picture_modeling_job_by_url", return_value=created
        ) as by_url,
        mock.patch.object(MetaStudioHook, "find_picture_modeling_jobs", return_value=iter(())) as find,
        mock.patch.object(MetaStudioHook, "wait_for_picture_modeling_job") as wait,
    ):
        yield mock.Mock(by_photo=by_photo, by_url=by_url, find=find, wait=wait)


def task_context(try_number=1, max_tries=None, retries=None):
    """A context whose task instance names the run (for the default job name) and its tries."""
    ctx = context(
        try_number=try_number,
        dag_id="dag",
        task_id="create",
        run_id="manual__2026-12-01",
        map_index=-1,
        max_tries=max_tries,
    )
    ctx["ti"].task.retries = retries
    ctx["dag_run"] = mock.Mock(start_date=RUN_START)
    return ctx


def retry_context():
    """The second try of a task with one retry."""
    return task_context(try_number=2, max_tries=1, retries=1)


def create(**kwargs):
    kwargs = {"task_id": "create", "picture_url": PICTURE_URL, "style_id": STYLE_ID, **kwargs}
    return MetaStudioCreatePictureModelingJobOperator(**kwargs)


def get(**kwargs):
    return MetaStudioGetPictureModelingJobOperator(**{"task_id": "get", "job_id": JOB_ID, **kwargs})


def success_event(try_number=1):
    # Built by the trigger's own function, so these tests follow the event's real shape.
    return {**job_event(job(), accept_partial_success=False), "try_number": try_number}


def expected_done_xcoms(done=None):
    done = (done or job()).to_dict()
    return {
        "job_id": JOB_ID,
        "model_asset_id": ASSET_ID,
        XCOM_CONSOLE_URL_KEY: CONSOLE_URL,
        "state": done["state"],
        "model_cover_url": done["model_cover_url"],
        "model_cover_url_expires_at": done["model_cover_url_expires_at"],
    }


# -- create: arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"photo": b"x", "picture_url": PICTURE_URL}],
    ids=["neither", "both"],
)
def test_create_needs_exactly_one_of_photo_and_picture_url(kwargs):
    with pytest.raises(MetaStudioValidationError, match="photo"):
        MetaStudioCreatePictureModelingJobOperator(task_id="c", style_id=STYLE_ID, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
    ],
    ids=["zero-poll", "negative-poll", "zero-timeout", "infinite-timeout"],
)
def test_bad_wait_settings_fail_when_the_task_is_built_naming_the_field(kwargs, field):
    with pytest.raises(MetaStudioValidationError, match=field):
        create(**kwargs)
    with pytest.raises(MetaStudioValidationError, match=field):
        get(**kwargs)


# -- create: no wait ------------------------------------------------------------------------------------


def test_create_by_url_without_waiting_pushes_the_ids_and_console_url_once_and_returns_the_job_id(hook):
    ctx = task_context()
    assert create(wait_for_completion=False, notify_url="https://hooks.example.com/n").execute(ctx) == JOB_ID
    hook.by_url.assert_called_once_with(
        picture_url=PICTURE_URL,
        style_id=STYLE_ID,
        name="dag.create.manual__2026-12-01",  # unique per task run, so a retry can find it
        notify_url="https://hooks.example.com/n",
        deadline=mock.ANY,  # the try's timeout: a throttled create keeps trying until then
    )
    hook.by_photo.assert_not_called()
    assert pushed(ctx) == {"job_id": JOB_ID, "model_asset_id": ASSET_ID, XCOM_CONSOLE_URL_KEY: CONSOLE_URL}


def test_create_from_a_photo_uploads_it_under_the_given_name(hook):
    photo = png_header(8, 8)
    create(picture_url=None, photo=photo, name="my_model", wait_for_completion=False).execute(task_context())
    hook.by_photo.assert_called_once_with(
        photo=photo, style_id=STYLE_ID, name="my_model", notify_url=None, deadline=mock.ANY
    )
    hook.by_url.assert_not_called()


def test_first_try_never_looks_for_an_earlier_job(hook):
    create(wait_for_completion=False).execute(task_context(try_number=1, max_tries=1, retries=1))
    hook.find.assert_not_called()
    hook.by_url.assert_called_once()


# -- create: deferrable wait ----------------------------------------------------------------------------


def test_deferrable_upload_creates_in_the_worker_and_pushes_the_ids_before_it_defers(hook):
    # Photo bytes never go into trigger kwargs: an upload is created in the worker, then deferred.
    ctx = task_context(try_number=4)
    before = time.time()
    task = create(
        picture_url=None,
        photo=png_header(8, 8),
        deferrable=True,
        poll_interval=12,
        timeout=900,
        accept_partial_success=False,
    )
    with pytest.raises(TaskDeferred) as exc:
        task.execute(ctx)
    after = time.time()
    assert pushed(ctx) == {"job_id": JOB_ID, "model_asset_id": ASSET_ID, XCOM_CONSOLE_URL_KEY: CONSOLE_URL}
    deferred = exc.value
    assert isinstance(deferred.trigger, MetaStudioPictureModelingJobTrigger)
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=900 + DEFER_TIMEOUT_MARGIN)
    classpath, kwargs = deferred.trigger.serialize()
    assert (
        classpath == f"{MetaStudioPictureModelingJobTrigger.__module__}.MetaStudioPictureModelingJobTrigger"
    )
    assert before <= kwargs["wait_started"] <= after  # the wait's clock starts at the create
    assert kwargs["end_time"] == kwargs["wait_started"] + 900
    assert {k: v for k, v in kwargs.items() if k not in ("wait_started", "end_time")} == {
        "job_id": JOB_ID,
        "metastudio_conn_id": "metastudio_default",
        "poll_interval": 12.0,
        "accept_partial_success": False,
        "last_state": None,  # nothing read yet: the trigger's first read is logged
        "timeout": 900.0,
        "last_seen": None,
        "try_number": 4,
    }
    assert AK not in repr(kwargs) and SK not in repr(kwargs)
    hook.wait.assert_not_called()


def test_deferrable_create_without_a_timeout_waits_forever(hook):
    with pytest.raises(TaskDeferred) as exc:
        create(deferrable=True, timeout=None).execute(task_context())
    assert exc.value.timeout is None
    assert exc.value.trigger.serialize()[1]["end_time"] is None


def created_event(try_number=1, adopted_state=None, wait_started=1_000.0):
    return {
        "status": "created",
        "job_id": JOB_ID,
        "model_asset_id": ASSET_ID,
        "adopted_state": adopted_state,
        "queued_seconds": 3.5,
        "wait_started": wait_started,
        "try_number": try_number,
    }


def test_deferrable_create_by_url_defers_before_creating_with_the_create_trigger(hook):
    ctx = task_context(try_number=2)
    signed = PICTURE_URL + "?X-Obs-Signature=s3cr3t"
    before = time.time()
    with pytest.raises(TaskDeferred) as exc:
        create(
            picture_url=signed, deferrable=True, timeout=900, notify_url="https://hooks.example.com/n"
        ).execute(ctx)
    hook.by_url.assert_not_called()  # the triggerer creates, at the tenant's pace
    assert pushed(ctx) == {}  # nothing exists yet
    deferred = exc.value
    assert isinstance(deferred.trigger, MetaStudioCreatePictureModelingJobTrigger)
    assert deferred.method_name == "execute_created"
    assert deferred.timeout == timedelta(seconds=900 + DEFER_TIMEOUT_MARGIN)
    kwargs = deferred.trigger.serialize()[1]
    assert before <= kwargs["wait_started"] <= time.time()
    assert kwargs["end_time"] == kwargs["wait_started"] + 900
    assert (kwargs["name"], kwargs["style_id"], kwargs["try_number"]) == (
        "dag.create.manual__2026-12-01",
        STYLE_ID,
        2,
    )
    since = datetime.fromisoformat(kwargs["created_since"])
    assert timedelta(0) <= datetime.now(timezone.utc) - CLOCK_SKEW_MARGIN - since < timedelta(seconds=5)
    assert AK not in repr(kwargs) and SK not in repr(kwargs)
    assert "s3cr3t" not in repr(deferred.trigger)  # Airflow logs the repr: the signature is redacted


def test_deferrable_create_by_url_refuses_bad_input_in_the_task_before_deferring(hook):
    with pytest.raises(MetaStudioValidationError, match="picture_url"):
        create(picture_url="ftp://photos.example.com/face.png", deferrable=True).execute(task_context())


def test_deferred_create_pushes_every_key_once_across_both_deferrals_and_the_resume(hook):
    reads = patch_job_reads(job("SUCCEED"))
    task, ctx = create(deferrable=True, timeout=600, poll_interval=7), task_context()
    with pytest.raises(TaskDeferred):
        task.execute(ctx)
    with pytest.raises(TaskDeferred) as exc:
        task.execute_created(ctx, created_event())
    # The ids reach XCom as soon as the job exists; then the task waits as a worker-made job does.
    assert pushed(ctx) == {"job_id": JOB_ID, "model_asset_id": ASSET_ID, XCOM_CONSOLE_URL_KEY: CONSOLE_URL}
    assert isinstance(exc.value.trigger, MetaStudioPictureModelingJobTrigger)
    kwargs = exc.value.trigger.serialize()[1]
    assert (kwargs["job_id"], kwargs["wait_started"], kwargs["end_time"]) == (JOB_ID, 1_000.0, 1_600.0)
    assert kwargs["poll_interval"] == 7.0
    reads.assert_not_called()
    hook.by_url.assert_not_called()
    result = task.execute_complete(ctx, success_event())
    reads.assert_called_once_with(JOB_ID)  # the event's cover URL is redacted: read a fresh one
    assert result == job().to_dict()
    assert pushed(ctx) == expected_done_xcoms()


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (
            {"status": "timeout", "job_id": JOB_ID, "message": "still WAITING after 900 s"},
            MetaStudioWaitTimeout,
        ),
        (
            {"status": "failed", "job_id": JOB_ID, "state": "FAILED", "error_code": "MSS.1"},
            MetaStudioJobFailedError,
        ),
        ({"status": "error", "job_id": JOB_ID, "message": "HTTP 500", "status_code": 500}, MetaStudioError),
        (None, MetaStudioError),
    ],
    ids=["timeout", "failed", "error", "none"],
)
def test_an_unsuccessful_event_fails_the_create_without_another_read(hook, event, error):
    reads = patch_job_reads()
    with pytest.raises(error) as exc:
        create().execute_complete(task_context(), event)
    # An operator is not a sensor: its timeout is a failure, soft_fail does not apply.
    assert not isinstance(exc.value, AirflowSensorTimeout)
    reads.assert_not_called()


def test_an_earlier_trys_event_makes_the_retry_adopt_that_trys_job_instead_of_creating(hook):
    # Airflow 3.0 resumes a retry with the failed try's event; the job that try created still runs.
    hook.find.return_value = iter([job("PROCESSING")])
    with pytest.raises(TaskDeferred) as exc:
        create(deferrable=True).execute_complete(retry_context(), success_event(try_number=1))
    hook.by_url.assert_not_called()
    kwargs = exc.value.trigger.serialize()[1]
    assert (kwargs["job_id"], kwargs["last_state"], kwargs["try_number"]) == (JOB_ID, "PROCESSING", 2)


# -- create: blocking wait -------------------------------------------------------------------------------


def test_blocking_create_waits_in_the_hook_and_pushes_every_key_once(hook):
    hook.wait.return_value = job("SUCCEED")
    ctx = task_context()
    result = create(poll_interval=3, timeout=120).execute(ctx)
    hook.wait.assert_called_once_with(JOB_ID, poll_interval=3, timeout=120)
    assert result == job().to_dict()
    assert pushed(ctx) == expected_done_xcoms()


@pytest.mark.parametrize(
    ("state", "accept"),
    [("FAILED", True), ("CANCELED", True), ("PARTIAL_SUCCEED", False)],
    ids=["failed", "canceled", "partial-not-accepted"],
)
def test_blocking_create_fails_on_an_unsuccessful_job(hook, state, accept):
    hook.wait.return_value = job(state, error_info={"error_code": "MSS.2", "error_msg": "no face"})
    with pytest.raises(MetaStudioJobFailedError, match=f"{JOB_ID} ended {state}: MSS.2 no face"):
        create(accept_partial_success=accept).execute(task_context())


def test_partial_success_pushes_no_cover_url_at_all(hook):
    # Airflow 3.0 refuses an XCom of None: a missing cover is a missing key.
    hook.wait.return_value = job("PARTIAL_SUCCEED", model_cover_url=None)
    ctx = task_context()
    assert create().execute(ctx)["state"] == "PARTIAL_SUCCEED"
    xcoms = pushed(ctx)
    assert xcoms["state"] == "PARTIAL_SUCCEED"
    assert "model_cover_url" not in xcoms and "model_cover_url_expires_at" not in xcoms
    assert None not in xcoms.values()


def test_blocking_wait_timeout_propagates(hook):
    hook.wait.side_effect = MetaStudioWaitTimeout("Picture modeling job still PROCESSING after 120 s")
    with pytest.raises(MetaStudioWaitTimeout, match="PROCESSING"):
        create(timeout=120).execute(task_context())


def test_cover_is_copied_into_a_folder_and_its_path_pushed(hook, tmp_path):
    png = png_header(4, 4)

    def download(url, out):
        out.write(png)
        return len(png)

    hook.wait.return_value = job("SUCCEED")
    ctx = task_context()
    with mock.patch.object(MetaStudioHook, "download_cover", side_effect=download) as download_cover:
        result = create(cover_destination=f"{tmp_path}/covers/").execute(ctx)
    download_cover.assert_called_once()
    assert download_cover.call_args.args[0] == job().model_cover_url
    path = tmp_path / "covers" / f"{ASSET_ID}.png"
    assert path.read_bytes() == png
    assert result["model_cover_path"] == str(path)
    assert pushed(ctx)["model_cover_path"] == str(path)


# -- create: a retry adopts the earlier try's job --------------------------------------------------------


def test_a_retry_looks_for_the_earlier_trys_job_by_name_style_and_run_start(hook):
    create(wait_for_completion=False).execute(retry_context())
    hook.find.assert_called_once_with(
        name="dag.create.manual__2026-12-01",
        style_id=STYLE_ID,
        created_since=RUN_START - CLOCK_SKEW_MARGIN,
        states=[JobState.WAITING, JobState.PROCESSING, JobState.SUCCEED, JobState.PARTIAL_SUCCEED],
    )
    hook.by_url.assert_called_once()  # nothing found: a job is created


def test_a_retry_that_does_not_accept_partial_success_does_not_adopt_one(hook):
    create(wait_for_completion=False, accept_partial_success=False).execute(retry_context())
    assert JobState.PARTIAL_SUCCEED not in hook.find.call_args.kwargs["states"]


def test_a_retry_adopts_a_succeeded_job_and_finishes_without_creating_or_waiting(hook):
    hook.find.return_value = iter([job("SUCCEED")])
    ctx = retry_context()
    result = create().execute(ctx)
    hook.by_url.assert_not_called()
    hook.wait.assert_not_called()
    assert result == job().to_dict()
    assert pushed(ctx) == expected_done_xcoms()


def test_a_retry_adopts_a_running_job_and_defers_from_its_state(hook):
    hook.find.return_value = iter([job("PROCESSING")])
    ctx = retry_context()
    with pytest.raises(TaskDeferred) as exc:
        create(deferrable=True).execute(ctx)
    hook.by_url.assert_not_called()
    kwargs = exc.value.trigger.serialize()[1]
    assert (kwargs["job_id"], kwargs["last_state"]) == (JOB_ID, "PROCESSING")
    assert kwargs["last_seen"] is not None
    assert pushed(ctx) == {"job_id": JOB_ID, "model_asset_id": ASSET_ID, XCOM_CONSOLE_URL_KEY: CONSOLE_URL}


def test_reuse_earlier_job_false_creates_on_every_try(hook):
    create(wait_for_completion=False, reuse_earlier_job=False).execute(retry_context())
    hook.find.assert_not_called()
    hook.by_url.assert_called_once()


# -- get ------------------------------------------------------------------------------------------------


def test_get_without_waiting_pushes_every_result_key_once_and_returns_the_job():
    reads = patch_job_reads(job("SUCCEED"))
    ctx = context()
    assert get().execute(ctx) == job().to_dict()
    reads.assert_called_once_with(JOB_ID)
    assert pushed(ctx) == expected_done_xcoms()


def test_get_without_waiting_returns_a_running_job_as_it_is():
    patch_job_reads(job("PROCESSING"))
    ctx = context()
    assert get().execute(ctx)["state"] == "PROCESSING"
    assert pushed(ctx)["state"] == "PROCESSING"


@pytest.mark.parametrize("job_id", BAD_JOB_IDS.values(), ids=list(BAD_JOB_IDS))
def test_get_refuses_a_bad_job_id_naming_the_field_before_any_request(requests_mock, job_id):
    # The real hook: the id is refused before any request, whichever layer checks it.
    with pytest.raises(MetaStudioValidationError, match="job_id"):
        get(job_id=job_id).execute(context())
    assert requests_mock.call_count == 0


def test_deferrable_get_of_a_running_job_defers_from_the_state_it_read():
    patch_job_reads(job("WAITING"))
    before = time.time()
    with pytest.raises(TaskDeferred) as exc:
        get(wait_for_completion=True, deferrable=True, timeout=300, poll_interval=4).execute(context())
    kwargs = exc.value.trigger.serialize()[1]
    assert kwargs["end_time"] == kwargs["wait_started"] + 300
    assert before <= kwargs["wait_started"] <= kwargs["last_seen"] <= time.time()
    assert (kwargs["last_state"], kwargs["poll_interval"], kwargs["timeout"]) == ("WAITING", 4.0, 300.0)
    assert exc.value.timeout == timedelta(seconds=300 + DEFER_TIMEOUT_MARGIN)


def test_get_with_waiting_of_a_finished_job_neither_defers_nor_waits(hook):
    patch_job_reads(job("SUCCEED"))
    assert get(wait_for_completion=True, deferrable=True).execute(context()) == job().to_dict()
    hook.wait.assert_not_called()


def test_get_with_waiting_of_a_failed_job_fails():
    patch_job_reads(job("CANCELED"))
    with pytest.raises(MetaStudioJobFailedError, match="CANCELED"):
        get(wait_for_completion=True).execute(context())


def test_blocking_get_of_a_running_job_waits_in_the_hook(hook):
    patch_job_reads(job("PROCESSING"))
    hook.wait.return_value = job("SUCCEED")
    assert get(wait_for_completion=True, poll_interval=2, timeout=60).execute(context())["state"] == "SUCCEED"
    hook.wait.assert_called_once_with(JOB_ID, poll_interval=2, timeout=60)


def test_get_resumes_from_a_success_event_with_a_fresh_read():
    reads = patch_job_reads(job("SUCCEED"))
    ctx = context()
    assert get().execute_complete(ctx, success_event()) == job().to_dict()
    reads.assert_called_once_with(JOB_ID)
    assert pushed(ctx) == expected_done_xcoms()


def test_a_create_event_of_an_adopted_finished_job_ends_the_task_without_another_wait(hook):
    reads = patch_job_reads(job("SUCCEED"))
    ctx = task_context()
    result = create(deferrable=True).execute_created(ctx, created_event(adopted_state="SUCCEED"))
    reads.assert_called_once_with(JOB_ID)
    assert result == job().to_dict()
    assert pushed(ctx) == expected_done_xcoms()


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"status": "timeout", "message": "not created within the task's timeout"}, MetaStudioWaitTimeout),
        (
            {"status": "error", "message": "HTTP 403", "status_code": 403, "request_id": "r-1"},
            MetaStudioError,
        ),
        (None, MetaStudioError),
    ],
    ids=["timeout", "error", "none"],
)
def test_an_unsuccessful_create_event_fails_the_task(hook, event, error):
    with pytest.raises(error):
        create(deferrable=True).execute_created(task_context(), event)
    hook.by_url.assert_not_called()


def test_a_retry_resumed_with_an_earlier_trys_create_event_starts_over_and_adopts(hook):
    hook.find.return_value = iter([job("PROCESSING")])
    with pytest.raises(TaskDeferred) as exc:
        create(deferrable=True).execute_created(retry_context(), created_event(try_number=1))
    assert isinstance(exc.value.trigger, MetaStudioPictureModelingJobTrigger)
    hook.by_url.assert_not_called()
