"""Deferrable sensors on given jobs (``conf: {"job_ids": [...]}``), one mapped task per job, no
retries: the triggerer-kill scenario needs every wait to survive on the other triggerer."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor

with DAG(
    dag_id="deployment_waits",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    params={"job_ids": []},
    default_args={"retries": 0},
):

    @task
    def job_ids(**context) -> list[str]:
        return list(context["params"]["job_ids"])

    MetaStudioPictureModelingJobSensor.partial(
        task_id="wait", deferrable=True, poke_interval=2, timeout=600
    ).expand(job_id=job_ids())
