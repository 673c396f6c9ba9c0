"""Three deferrable sensors on three jobs at once: the full-stack test reads each task's own log."""

from __future__ import annotations

from datetime import datetime

from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[no-redef]

with DAG(
    dag_id="fullstack_three_waits",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    params={"job_ids": ["", "", ""]},
):
    for i in range(3):
        MetaStudioPictureModelingJobSensor(
            task_id=f"wait_{i}",
            job_id=f"{{{{ params.job_ids[{i}] }}}}",
            deferrable=True,
            poke_interval=2,
            timeout=600,
        )
