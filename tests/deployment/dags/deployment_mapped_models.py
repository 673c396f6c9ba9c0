"""40 mapped creates by URL, each waiting deferred, then each model's asset sensor (deferred) whose
outlet event starts ``example_metastudio_asset_consumer`` (download, MD5 and GLB checks)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, task

from airflow_provider_metastudio.asset_events import asset_uri
from airflow_provider_metastudio.operators.picture_modeling import MetaStudioCreatePictureModelingJobOperator
from airflow_provider_metastudio.sensors.model_asset import MetaStudioModelAssetSensor

MODEL_LIBRARY = Asset(asset_uri(os.environ.get("METASTUDIO_PROJECT_ID", "5f0e6b3a9c1d4e7f8a2b3c4d5e6f7a8b")))

with DAG(
    dag_id="deployment_mapped_models",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    params={"count": 40},
    # A retry adopts its task's job by name; none is expected here (the test counts tries).
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
):

    @task
    def photos(**context) -> list[str]:
        return [f"https://photos.example.com/deployment/{i}.png" for i in range(context["params"]["count"])]

    created = MetaStudioCreatePictureModelingJobOperator.partial(
        task_id="create_job",
        style_id="system_female_001",
        deferrable=True,
        poll_interval=2,
        timeout=900,
    ).expand(picture_url=photos())

    @task
    def models(jobs: list[dict]) -> list[dict]:
        return [{"asset_id": j["model_asset_id"], "job_id": j["job_id"]} for j in jobs]

    MetaStudioModelAssetSensor.partial(
        task_id="wait_for_model_asset",
        deferrable=True,
        poke_interval=2,
        timeout=900,
        outlets=[MODEL_LIBRARY],
    ).expand_kwargs(models(created.output))
