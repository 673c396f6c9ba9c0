"""Creates whose jobs end within seconds of the deferral (the test moves the emulator's clock as
soon as a task defers): the Airflow 3 deferral race (apache/airflow#66374, #72716) gets its chance.
Retries are on, as the README advises for Airflow versions without every fix."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_provider_metastudio.operators.picture_modeling import MetaStudioCreatePictureModelingJobOperator

with DAG(
    dag_id="deployment_quick_fire",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    params={"count": 20},
    default_args={"retries": 2, "retry_delay": timedelta(seconds=2)},
):

    @task
    def photos(**context) -> list[str]:
        return [f"https://photos.example.com/quick/{i}.png" for i in range(context["params"]["count"])]

    MetaStudioCreatePictureModelingJobOperator.partial(
        task_id="create_job", style_id="system_male_002", deferrable=True, poll_interval=1, timeout=600
    ).expand(picture_url=photos())
