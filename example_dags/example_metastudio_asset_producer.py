"""Producer: photo -> 3D model -> "a new usable model is in the library" as an Airflow asset event.

create_job (by URL) -> wait_for_job (deferrable) -> wait_for_model_asset (deferrable; the job's
model asset becomes ACTIVED some time after the job's SUCCEED). The asset sensor's outlet is the
tenant's model library, ``metastudio://{project_id}/assets``: its event's ``extra`` carries
``model_asset_id`` and ``job_id`` (never a download URL). ``example_metastudio_asset_consumer``
is scheduled on that asset. On Airflow 2.11 the same objects are Datasets.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow_provider_metastudio.asset_events import asset_uri
from airflow_provider_metastudio.operators.picture_modeling import MetaStudioCreatePictureModelingJobOperator
from airflow_provider_metastudio.sensors.model_asset import MetaStudioModelAssetSensor
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor

try:  # Airflow >= 3.0
    from airflow.sdk import DAG, Asset
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[no-redef]
    from airflow.datasets import Dataset as Asset  # type: ignore[no-redef,assignment]

# The project id of the connection's tenant (the emulator's default one here).
PROJECT_ID = os.environ.get("METASTUDIO_PROJECT_ID", "5f0e6b3a9c1d4e7f8a2b3c4d5e6f7a8b")
MODEL_LIBRARY = Asset(asset_uri(PROJECT_ID))

with DAG(
    dag_id="example_metastudio_asset_producer",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["metastudio", "example"],
    params={"picture_url": "https://photos.example.com/faces/face.png"},
) as dag:
    create_job = MetaStudioCreatePictureModelingJobOperator(
        task_id="create_job",
        # A run triggered by hand or by the API has no logical date on Airflow 3 ({{ ds }} is
        # undefined there): the run id names the model, unique per run as retries require.
        picture_url="{{ params.picture_url }}",
        style_id="system_female_001",
        name="model_{{ run_id }}",
        wait_for_completion=False,
    )
    wait_for_job = MetaStudioPictureModelingJobSensor(
        task_id="wait_for_job",
        job_id="{{ ti.xcom_pull(task_ids='create_job', key='job_id') }}",
        deferrable=True,
        poke_interval=10,
        timeout=3600,
    )
    wait_for_model_asset = MetaStudioModelAssetSensor(
        task_id="wait_for_model_asset",
        asset_id="{{ ti.xcom_pull(task_ids='create_job', key='model_asset_id') }}",
        job_id="{{ ti.xcom_pull(task_ids='create_job', key='job_id') }}",
        deferrable=True,
        poke_interval=10,
        timeout=1800,
        outlets=[MODEL_LIBRARY],  # the event: {"model_asset_id": ..., "job_id": ...}
    )
    create_job >> wait_for_job >> wait_for_model_asset
