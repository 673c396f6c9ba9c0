"""MetaStudioModelAssetSensor, dbt-style: poke results, the deferral and its trigger, the resume from
each event, and soft_fail. Only the hook's asset read is replaced; no HTTP, no database."""

from __future__ import annotations

import time
from datetime import timedelta
from unittest import mock

import pytest
from testsupport import BAD_JOB_IDS
from testsupport.tasks import AK, ASSET_ID, SK, asset, context, pushed, use_connection

from airflow_provider_metastudio._compat import (
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow_provider_metastudio.exceptions import (
    MetaStudioAssetFailedError,
    MetaStudioError,
    MetaStudioValidationError,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.sensors.model_asset import MetaStudioModelAssetSensor
from airflow_provider_metastudio.triggers.model_asset import MetaStudioModelAssetTrigger
from airflow_provider_metastudio.triggers.picture_modeling import DEFER_TIMEOUT_MARGIN

TRIGGER_PATH = "airflow_provider_metastudio.triggers.model_asset.MetaStudioModelAssetTrigger"


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    use_connection(monkeypatch)


@pytest.fixture
def reads():
    """The hook's asset read; a test sets its ``side_effect`` to the assets (or errors) in turn."""
    with mock.patch.object(MetaStudioHook, "get_asset") as get_asset:
        yield get_asset


def sensor(**kwargs):
    kwargs = {"task_id": "asset", "asset_id": ASSET_ID, "poke_interval": 5, "timeout": 300, **kwargs}
    return MetaStudioModelAssetSensor(**kwargs)


# -- poke ----------------------------------------------------------------------------------------------


def test_poke_of_an_actived_asset_is_done_without_download_urls(reads):
    reads.side_effect = [asset("ACTIVED")]
    result = sensor().poke(context())
    assert result.is_done is True
    assert result.xcom_value == asset("ACTIVED").to_dict()
    assert result.xcom_value["files"][0]["file_name"] == "model.glb"
    assert "s3cr3t" not in repr(result.xcom_value)  # the 24-hour bearer URL stays out of XCom
    reads.assert_called_once_with(ASSET_ID)


@pytest.mark.parametrize("state", ["CREATING", "UNACTIVED", "SOME_NEW_STATE"])
def test_poke_of_a_state_that_may_still_become_usable_is_false(reads, state):
    reads.side_effect = [asset(state)]
    assert sensor().poke(context()) is False


@pytest.mark.parametrize("state", ["FAILED", "BLOCK", "DELETED"])
def test_poke_of_a_failed_asset_raises_naming_the_state_and_reason(reads, state):
    reads.side_effect = [asset(state, fail_type="CONVERT_FAILED", reason="bad mesh")]
    with pytest.raises(MetaStudioAssetFailedError, match=f"{ASSET_ID} is {state}: CONVERT_FAILED bad mesh"):
        sensor().poke(context())


def test_poke_errors_of_the_hook_propagate(reads):
    reads.side_effect = [MetaStudioError("MetaStudio asset_show failed: HTTP 404", status=404)]
    with pytest.raises(MetaStudioError, match="HTTP 404"):
        sensor().poke(context())


@pytest.mark.parametrize("asset_id", BAD_JOB_IDS.values(), ids=list(BAD_JOB_IDS))
def test_a_bad_asset_id_fails_the_poke_naming_the_field_before_any_request(requests_mock, asset_id):
    # The real hook: the id is refused before any request, whichever layer checks it.
    with pytest.raises(MetaStudioValidationError, match="asset_id"):
        sensor(asset_id=asset_id).poke(context())
    assert requests_mock.call_count == 0


def test_poke_pushes_no_xcom_of_its_own(reads):
    reads.side_effect = [asset("ACTIVED")]
    ctx = context()
    sensor().poke(ctx)
    assert pushed(ctx) == {}  # the return value is the only XCom


# -- deferral ------------------------------------------------------------------------------------------


def test_deferrable_sensor_pokes_once_then_defers_with_the_trigger_and_its_deadline(reads):
    reads.side_effect = [asset("CREATING")]
    before = time.time()
    with pytest.raises(TaskDeferred) as exc:
        sensor(deferrable=True, poke_interval=5, timeout=300).execute(context())
    after = time.time()
    reads.assert_called_once()
    deferred = exc.value
    assert isinstance(deferred.trigger, MetaStudioModelAssetTrigger)
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=300 + DEFER_TIMEOUT_MARGIN)
    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == TRIGGER_PATH
    assert before + 300 <= kwargs.pop("end_time") <= after + 300
    assert kwargs == {"asset_id": ASSET_ID, "metastudio_conn_id": "metastudio_default", "poll_interval": 5}
    assert AK not in repr(kwargs) and SK not in repr(kwargs)


def test_deferrable_sensor_of_a_usable_asset_returns_at_once_without_deferring(reads):
    reads.side_effect = [asset("ACTIVED")]
    assert sensor(deferrable=True).execute(context()) == asset("ACTIVED").to_dict()


# -- resume from the trigger's event ------------------------------------------------------------------


def test_success_event_returns_the_events_asset_without_another_read(reads):
    result = sensor().execute_complete(context(), {"status": "success", "asset": asset().to_dict()})
    assert result == asset().to_dict()
    reads.assert_not_called()


def test_failed_event_raises_naming_the_asset_and_state():
    event = {"status": "failed", "asset_id": ASSET_ID, "state": "BLOCK", "message": "asset blocked (R-1)"}
    with pytest.raises(MetaStudioAssetFailedError, match=f"{ASSET_ID} is BLOCK: asset blocked"):
        sensor().execute_complete(context(), event)


def test_timeout_event_raises_the_sensor_timeout():
    event = {"status": "timeout", "asset_id": ASSET_ID, "message": f"Model asset {ASSET_ID} still CREATING"}
    with pytest.raises(AirflowSensorTimeout, match="still CREATING"):
        sensor().execute_complete(context(), event)


@pytest.mark.parametrize(
    "event",
    [{"status": "error", "message": "MetaStudio asset_show failed: HTTP 403"}, {}, None],
    ids=["error", "empty", "none"],
)
def test_error_or_malformed_event_is_an_error(event):
    with pytest.raises(MetaStudioError) as exc:
        sensor().execute_complete(context(), event)
    assert not isinstance(exc.value, AirflowSensorTimeout)


# -- soft_fail: only a timeout skips --------------------------------------------------------------------


def test_soft_fail_skips_on_a_timeout_event():
    event = {"status": "timeout", "asset_id": ASSET_ID, "message": "still CREATING"}
    with pytest.raises(AirflowSkipException):
        sensor(soft_fail=True).resume_execution("execute_complete", {"event": event}, context())


def test_soft_fail_does_not_skip_a_failed_asset():
    event = {"status": "failed", "asset_id": ASSET_ID, "state": "FAILED", "message": "x"}
    with pytest.raises(MetaStudioAssetFailedError):
        sensor(soft_fail=True).resume_execution("execute_complete", {"event": event}, context())
