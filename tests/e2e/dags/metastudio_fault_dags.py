"""DAGs the fault-injection and secrets tests run with dag.test() (Airflow 3 needs them in the dags folder).

The main flow: create a job from a photo URL, wait for it with the sensor (reschedule or deferrable),
then fetch it and copy its cover. Retries come from the hook's own defaults (the DAG sets none), so a
fault either heals inside one task try or fails the task.
"""

from __future__ import annotations

from datetime import datetime

from airflow_provider_metastudio.operators.picture_modeling import (
    MetaStudioCreatePictureModelingJobOperator,
    MetaStudioGetPictureModelingJobOperator,
)
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[no-redef]

MODES = ("reschedule", "deferrable")
DAGS: dict[str, DAG] = {}
JOB_ID = "{{ ti.xcom_pull(task_ids='create', key='job_id') }}"
PICTURE_URL = "https://photos.example.com/face.png"
STYLE_ID = "system_female_001"

for mode in MODES:
    with DAG(
        dag_id=f"fault_main_{mode}",
        start_date=datetime(2026, 1, 1),
        schedule=None,
        catchup=False,
        params={"name": "model", "cover_dir": "/tmp"},
        default_args={"retries": 0},
    ) as dag:
        create = MetaStudioCreatePictureModelingJobOperator(
            task_id="create",
            picture_url=PICTURE_URL,
            style_id=STYLE_ID,
            name="{{ params.name }}",
            wait_for_completion=False,
        )
        wait = MetaStudioPictureModelingJobSensor(
            task_id="wait",
            job_id=JOB_ID,
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferrable",
            poke_interval=1,
            timeout=90,
        )
        fetch = MetaStudioGetPictureModelingJobOperator(
            task_id="fetch", job_id=JOB_ID, cover_destination="{{ params.cover_dir }}/"
        )
        create >> wait >> fetch
    DAGS[dag.dag_id] = dag

globals().update({f"fault_dag_{i}": d for i, d in enumerate(DAGS.values())})
