"""DAGs of the model-asset e2e tests (issue #14): create -> job sensor -> asset sensor -> download."""

from __future__ import annotations

from datetime import datetime

from airflow_provider_metastudio.operators.model_asset import MetaStudioDownloadModelAssetOperator
from airflow_provider_metastudio.operators.picture_modeling import MetaStudioCreatePictureModelingJobOperator
from airflow_provider_metastudio.sensors.model_asset import MetaStudioModelAssetSensor
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor

try:
    from airflow.sdk import DAG, Asset
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[no-redef]
    from airflow.datasets import Dataset as Asset  # type: ignore[no-redef,assignment]

MODES = ("poke", "reschedule", "deferrable")
DAGS: dict[str, DAG] = {}
JOB_ID = "{{ ti.xcom_pull(task_ids='create', key='job_id') }}"
ASSET_ID = "{{ ti.xcom_pull(task_ids='create', key='model_asset_id') }}"
# What the tests' consumers would be scheduled on; the project id of the emulator's default tenant.
LIBRARY = Asset("metastudio://5f0e6b3a9c1d4e7f8a2b3c4d5e6f7a8b/assets")
FILES = Asset("file:///metastudio-e2e/models")


def _dag(dag_id: str) -> DAG:
    return DAG(
        dag_id=dag_id,
        start_date=datetime(2026, 1, 1),
        schedule=None,
        catchup=False,
        params={"name": "model", "dest": "/tmp", "asset_id": ""},
        default_args={"retries": 0},
    )


for mode in MODES:
    with _dag(f"e2e_asset_{mode}") as dag:
        create = MetaStudioCreatePictureModelingJobOperator(
            task_id="create",
            picture_url="https://photos.example.com/face.png",
            style_id="system_female_001",
            name="{{ params.name }}",
            wait_for_completion=False,
            outlets=[LIBRARY],
        )
        wait_job = MetaStudioPictureModelingJobSensor(
            task_id="wait_job", job_id=JOB_ID, poke_interval=1, timeout=60
        )
        wait_asset = MetaStudioModelAssetSensor(
            task_id="wait_asset",
            asset_id=ASSET_ID,
            job_id=JOB_ID,
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferrable",
            poke_interval=1,
            timeout=60,
        )
        download = MetaStudioDownloadModelAssetOperator(
            task_id="download",
            asset_id=ASSET_ID,
            job_id=JOB_ID,
            destination="{{ params.dest }}/{{ ti.xcom_pull(task_ids='create', key='model_asset_id') }}/",
            outlets=[FILES],
        )
        create >> wait_job >> wait_asset >> download
    DAGS[dag.dag_id] = dag

with _dag("e2e_asset_download") as dag:
    MetaStudioDownloadModelAssetOperator(
        task_id="download",
        asset_id="{{ params.asset_id }}",
        destination="{{ params.dest }}",
        categories=("MAIN", "COVER", "OTHER"),
    )
DAGS[dag.dag_id] = dag

for mode in ("poke", "deferrable"):
    for variant, soft, timeout in (("", False, 30), ("_soft", True, 6)):
        with _dag(f"e2e_asset_wait_{mode}{variant}") as dag:
            MetaStudioModelAssetSensor(
                task_id="wait_asset",
                asset_id="{{ params.asset_id }}",
                deferrable=mode == "deferrable",
                poke_interval=1,
                timeout=timeout,
                soft_fail=soft,
            )
        DAGS[dag.dag_id] = dag

globals().update({f"asset_dag_{i}": d for i, d in enumerate(DAGS.values())})
