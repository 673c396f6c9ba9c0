"""Wait for a picture-modeling job created elsewhere (its id comes from the DAG run's params).

Two variants of the same flow: classic operators, and TaskFlow tasks that use the hook directly.
Trigger with: ``airflow dags trigger example_metastudio_external_job -c '{"job_id": "..."}'``.
"""

from __future__ import annotations

from datetime import datetime

from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.models import redact_url
from airflow_provider_metastudio.operators.picture_modeling import MetaStudioGetPictureModelingJobOperator
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor

try:  # Airflow >= 3.0
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[no-redef]
    from airflow.decorators import task  # type: ignore[no-redef]
    from airflow.models.param import Param  # type: ignore[no-redef]

PARAMS = {
    # No default: a run must name its job, and an empty or malformed id is refused at trigger time
    # (the same rule the provider checks before any request).
    "job_id": Param(
        type="string",
        minLength=1,
        maxLength=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="Picture-modeling job id (from the MetaStudio console or API)",
    ),
    "cover_dir": Param("/tmp/metastudio-covers", type="string"),
}

with DAG(
    dag_id="example_metastudio_external_job",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    params=PARAMS,
    tags=["example", "metastudio"],
) as dag:
    wait = MetaStudioPictureModelingJobSensor(
        task_id="wait_for_job",
        job_id="{{ params.job_id }}",
        mode="reschedule",
        poke_interval=60,
        timeout=6 * 3600,
        accept_partial_success=True,
    )
    fetch = MetaStudioGetPictureModelingJobOperator(
        task_id="fetch_job",
        job_id="{{ params.job_id }}",
        cover_destination="{{ params.cover_dir }}/",
    )

    @task
    def report(job: dict) -> str:
        return f"model {job['model_asset_id']} ({job['state']}), cover {redact_url(job['model_cover_url'])}"

    wait >> fetch >> report(fetch.output)


with DAG(
    dag_id="example_metastudio_external_job_taskflow",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    params=PARAMS,
    tags=["example", "metastudio"],
) as taskflow_dag:

    @task.sensor(poke_interval=30, timeout=6 * 3600, mode="reschedule")
    def job_finished(params=None):
        """A TaskFlow sensor on the hook: done when the job is terminal; FAILED fails the task."""
        try:
            from airflow.sdk import PokeReturnValue
        except ImportError:  # Airflow 2.11
            from airflow.sensors.base import PokeReturnValue  # type: ignore[no-redef]
        from airflow_provider_metastudio.exceptions import MetaStudioJobFailedError

        job = MetaStudioHook().get_picture_modeling_job(params["job_id"])
        if job.is_terminal and not job.is_success():
            raise MetaStudioJobFailedError(job.job_id, job.state, job.error_code, job.error_msg)
        return PokeReturnValue(is_done=job.is_terminal, xcom_value=job.to_dict())

    @task
    def copy_cover(job: dict, params=None) -> str | None:
        if not job["model_cover_url"]:
            return None
        path = f"{params['cover_dir']}/{job['model_asset_id']}.png"
        import os

        os.makedirs(params["cover_dir"], exist_ok=True)
        with open(path, "wb") as f:
            MetaStudioHook().download_cover(job["model_cover_url"], f)
        return path

    copy_cover(job_finished())
