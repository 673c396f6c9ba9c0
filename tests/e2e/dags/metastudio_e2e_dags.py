"""DAGs the end-to-end tests run with dag.test() (Airflow 3 needs them in the dags folder)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow_provider_metastudio.operators.picture_modeling import (
    MetaStudioCreatePictureModelingJobOperator,
    MetaStudioGetPictureModelingJobOperator,
)
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[no-redef]

MODES = ("poke", "reschedule", "deferrable")
DAGS: dict[str, DAG] = {}
JOB_ID = "{{ ti.xcom_pull(task_ids='create', key='job_id') }}"


def _dag(dag_id: str) -> DAG:
    return DAG(
        dag_id=dag_id,
        start_date=datetime(2026, 1, 1),
        schedule=None,
        catchup=False,
        params={"name": "model", "cover_dir": "/tmp", "job_id": ""},
        default_args={"retries": 0},
    )


def _sensor(mode: str, **kwargs) -> MetaStudioPictureModelingJobSensor:
    return MetaStudioPictureModelingJobSensor(
        task_id="wait",
        mode="reschedule" if mode == "reschedule" else "poke",
        deferrable=mode == "deferrable",
        poke_interval=1,
        **kwargs,
    )


for mode in MODES:
    for variant, accept in (("", True), ("_strict", False)):
        with _dag(f"e2e_{mode}{variant}") as dag:
            create = MetaStudioCreatePictureModelingJobOperator(
                task_id="create",
                picture_url="https://photos.example.com/face.png",
                style_id="system_female_001",
                name="{{ params.name }}",
                wait_for_completion=False,
            )
            wait = _sensor(mode, job_id=JOB_ID, timeout=120, accept_partial_success=accept)
            fetch = MetaStudioGetPictureModelingJobOperator(
                task_id="fetch", job_id=JOB_ID, cover_destination="{{ params.cover_dir }}/"
            )
            create >> wait >> fetch
        DAGS[dag.dag_id] = dag
    for variant, soft in (("_timeout", False), ("_timeout_soft", True)):
        with _dag(f"e2e_{mode}{variant}") as dag:
            _sensor(mode, job_id="{{ params.job_id }}", timeout=3, soft_fail=soft)
        DAGS[dag.dag_id] = dag

for deferrable in (False, True):
    with _dag(f"e2e_create_wait_{'deferrable' if deferrable else 'blocking'}") as dag:
        MetaStudioCreatePictureModelingJobOperator(
            task_id="create",
            picture_url="https://photos.example.com/face.png",
            style_id="system_male_001",
            name="{{ params.name }}",
            deferrable=deferrable,
            poll_interval=1,
            timeout=120,
            cover_destination="{{ params.cover_dir }}/covers/",
        )
    DAGS[dag.dag_id] = dag

# A sensor with soft_fail on a job that fails: only a timeout may skip it.
for mode in MODES:
    with _dag(f"e2e_{mode}_soft_failed") as dag:
        _sensor(mode, job_id="{{ params.job_id }}", timeout=120, soft_fail=True)
    DAGS[dag.dag_id] = dag

# The create operator with retries, its name left to the default (unique per task run): a retry
# must adopt the job an earlier try created instead of paying for another.
RETRY_TIMEOUTS = {"": 60, "_short": 3}
for deferrable in (False, True):
    for variant, timeout in RETRY_TIMEOUTS.items():
        with _dag(f"e2e_retry_{'deferrable' if deferrable else 'blocking'}{variant}") as dag:
            MetaStudioCreatePictureModelingJobOperator(
                task_id="create",
                picture_url="https://photos.example.com/face.png",
                style_id="system_male_001",
                deferrable=deferrable,
                poll_interval=0.5,
                timeout=timeout,
                retries=2,
                retry_delay=timedelta(milliseconds=100),
            )
        DAGS[dag.dag_id] = dag

globals().update({f"dag_{i}": d for i, d in enumerate(DAGS.values())})
