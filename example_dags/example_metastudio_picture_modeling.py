"""Photo URL -> 3D digital-human model -> checked cover picture and a manifest.

create_job (by URL, returns at once) -> wait_for_model (deferrable sensor: waits in the triggerer)
-> fetch_model (reads the finished job, copies its cover before the signed URL expires)
-> process_model (reads model_asset_id and the copied cover through XCom, checks the PNG, writes
a manifest next to it).
"""

from __future__ import annotations

import json
import os
import struct
from datetime import datetime, timedelta

from airflow_provider_metastudio.operators.picture_modeling import (
    MetaStudioCreatePictureModelingJobOperator,
    MetaStudioGetPictureModelingJobOperator,
)
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor

try:  # Airflow >= 3.0
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[no-redef]
    from airflow.decorators import task  # type: ignore[no-redef]
    from airflow.models.param import Param  # type: ignore[no-redef]

COVER_DIR = os.environ.get("METASTUDIO_COVER_DIR", "/tmp/metastudio-covers")


def png_size(path: str) -> dict:
    """Width and height of a PNG, from the IHDR chunk that follows its signature."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return {"width": width, "height": height}


with DAG(
    dag_id="example_metastudio_picture_modeling",
    description="Create a MetaStudio picture-modeling job from a photo URL and process its model",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["example", "metastudio"],
    params={
        "picture_url": Param("https://example.com/photos/face.png", type="string"),
        "style_id": Param("system_female_001", type="string"),
        "model_name": Param("airflow_demo_model", type="string"),
        "cover_dir": Param(COVER_DIR, type="string"),
        "poll_interval": Param(2, type="number"),
    },
    default_args={"retries": 0},
) as dag:
    create_job = MetaStudioCreatePictureModelingJobOperator(
        task_id="create_job",
        picture_url="{{ params.picture_url }}",
        style_id="{{ params.style_id }}",
        name="{{ params.model_name }}",
        wait_for_completion=False,
    )

    wait_for_model = MetaStudioPictureModelingJobSensor(
        task_id="wait_for_model",
        job_id="{{ ti.xcom_pull(task_ids='create_job', key='job_id') }}",
        deferrable=True,
        poke_interval=2,
        timeout=timedelta(minutes=30).total_seconds(),
    )

    fetch_model = MetaStudioGetPictureModelingJobOperator(
        task_id="fetch_model",
        job_id="{{ ti.xcom_pull(task_ids='create_job', key='job_id') }}",
        cover_destination="{{ params.cover_dir }}/",
    )

    @task
    def process_model(model_asset_id: str, cover_path: str | None, job: dict) -> dict:
        """Downstream asset processing: verify the cover picture and record the model."""
        manifest = {
            "model_asset_id": model_asset_id,
            "job_id": job["job_id"],
            "state": job["state"],
            "style_id": job["style_id"],
            "finished_at": job["end_time"],
            "cover": None,
        }
        if cover_path:
            local = cover_path.removeprefix("file://")
            manifest["cover"] = {
                "path": cover_path,
                "bytes": os.path.getsize(local),
                **png_size(local),
            }
            manifest_path = os.path.join(os.path.dirname(local), f"{model_asset_id}.manifest.json")
        else:
            manifest_path = os.path.join(COVER_DIR, f"{model_asset_id}.manifest.json")
        os.makedirs(os.path.dirname(manifest_path), exist_ok=True)
        with open(manifest_path, "w") as f:
            json.dump(manifest, f, indent=2)
        manifest["manifest_path"] = manifest_path
        return manifest

    processed = process_model(
        model_asset_id=fetch_model.output["model_asset_id"],
        cover_path=fetch_model.output["model_cover_path"],
        job=wait_for_model.output,
    )
    create_job >> wait_for_model >> fetch_model
