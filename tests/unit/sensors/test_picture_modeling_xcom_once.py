"""Each XCom key is pushed once per try, across a deferral (issue #15: data flows one way)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from unittest import mock

import pytest

from airflow_provider_metastudio._compat import TaskDeferred
from airflow_provider_metastudio.api import CreatedJob
from airflow_provider_metastudio.models import PictureModelingJob
from airflow_provider_metastudio.operators.picture_modeling import MetaStudioCreatePictureModelingJobOperator
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor

JOB_ID = "job-1_SMS"
ASSET_ID = "4b1d0f5e7a9c4c2e8f3a6b5d7c9e1f20"


def job(state: str) -> PictureModelingJob:
    return PictureModelingJob(JOB_ID, state, model_asset_id=ASSET_ID, request_id="rid-1")


def fake_hook(*states: str) -> mock.Mock:
    hook = mock.Mock()
    hook.config = SimpleNamespace(region="cn-north-4", project_id="p1")
    hook.get_picture_modeling_job.side_effect = [job(s) for s in states]
    hook.create_picture_modeling_job_by_url.return_value = CreatedJob(JOB_ID, ASSET_ID)
    return hook


def context() -> dict:
    ti = mock.Mock(try_number=1, max_tries=1, task=SimpleNamespace(retries=0), map_index=-1)
    ti.dag_id, ti.task_id, ti.run_id = "d", "t", "r"
    return {"ti": ti}


def pushed_keys(ctx: dict) -> Counter:
    return Counter(c.kwargs["key"] for c in ctx["ti"].xcom_push.call_args_list)


def resume(task, ctx: dict, deferred: TaskDeferred) -> object:
    # What Airflow does on resume: a fresh instance calls the method with the event and the kwargs.
    event = {"status": "success", "job_id": JOB_ID, "state": "SUCCEED", "model_asset_id": ASSET_ID}
    return getattr(task, deferred.method_name)(ctx, event=event, **(deferred.kwargs or {}))


def test_deferrable_sensor_pushes_the_console_url_once():
    sensor = MetaStudioPictureModelingJobSensor(task_id="s", job_id=JOB_ID, deferrable=True, timeout=60)
    sensor.__dict__["hook"] = fake_hook("PROCESSING", "SUCCEED")
    ctx = context()
    with pytest.raises(TaskDeferred) as exc:
        sensor.execute(ctx)
    resumed = MetaStudioPictureModelingJobSensor(task_id="s", job_id=JOB_ID, deferrable=True, timeout=60)
    resumed.__dict__["hook"] = sensor.hook
    result = resume(resumed, ctx, exc.value)
    assert result["state"] == "SUCCEED"
    assert pushed_keys(ctx)["metastudio_console_url"] == 1


def test_deferrable_create_pushes_each_key_once():
    op = MetaStudioCreatePictureModelingJobOperator(
        task_id="c", style_id="system_male_001", picture_url="https://img.example/p.png", deferrable=True
    )
    op.__dict__["hook"] = fake_hook("SUCCEED")
    ctx = context()
    with mock.patch("airflow_provider_metastudio.operators.picture_modeling.emit_outlet_events"):
        with pytest.raises(TaskDeferred) as exc:
            op.execute(ctx)
        resume(op, ctx, exc.value)
    counts = pushed_keys(ctx)
    assert counts and set(counts.values()) == {1}, counts
    assert {"job_id", "model_asset_id", "metastudio_console_url", "state"} <= set(counts)
