"""``metastudio_conn_id`` is templated on every task, so one DAG can pick a tenant per run."""

from __future__ import annotations

import pytest

from airflow_provider_metastudio.operators.picture_modeling import (
    MetaStudioCreatePictureModelingJobOperator,
    MetaStudioGetPictureModelingJobOperator,
)
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor

TASKS = {
    "sensor": lambda conn: MetaStudioPictureModelingJobSensor(
        task_id="t", job_id="{{ params.job }}", metastudio_conn_id=conn
    ),
    "get": lambda conn: MetaStudioGetPictureModelingJobOperator(
        task_id="t", job_id="{{ params.job }}", metastudio_conn_id=conn
    ),
    "create": lambda conn: MetaStudioCreatePictureModelingJobOperator(
        task_id="t", picture_url="https://photos.example.com/a.png", style_id="s", metastudio_conn_id=conn
    ),
}


@pytest.mark.parametrize("make", TASKS.values(), ids=list(TASKS))
def test_metastudio_conn_id_is_rendered(make):
    task = make("metastudio_{{ params.tenant }}")
    task.render_template_fields({"params": {"tenant": "acme", "job": "j1"}})
    assert task.metastudio_conn_id == "metastudio_acme"
    assert task.hook.metastudio_conn_id == "metastudio_acme"
