"""One create by URL that waits on the worker (not deferred): the test SIGKILLs that Celery worker
right after the create is accepted; the retry must adopt the job instead of creating another."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_metastudio.operators.picture_modeling import MetaStudioCreatePictureModelingJobOperator

with DAG(
    dag_id="deployment_worker_kill",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=2)},
):
    MetaStudioCreatePictureModelingJobOperator(
        task_id="create_job",
        picture_url="https://photos.example.com/deployment/worker-kill.png",
        style_id="system_male_001",
        deferrable=False,
        poll_interval=2,
        timeout=600,
    )
