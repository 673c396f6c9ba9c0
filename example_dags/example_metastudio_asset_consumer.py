"""Consumer: every new model announced on ``metastudio://{project_id}/assets`` is downloaded and checked.

Scheduled on the asset the producer (``example_metastudio_asset_producer``) updates. One run may be
triggered by several events (the scheduler batches them): ``models_from_events`` reads each
triggering event's ``extra`` (``model_asset_id``, ``job_id``), one download is mapped per model
(the GLB model and the cover, verified by MD5, with a manifest), and ``check_models`` reads each
manifest and checks the GLB header.
"""

from __future__ import annotations

import json
import os
import struct
from datetime import datetime

from airflow_provider_metastudio.asset_events import asset_uri
from airflow_provider_metastudio.operators.model_asset import MetaStudioDownloadModelAssetOperator

try:  # Airflow >= 3.0
    from airflow.sdk import DAG, Asset, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[no-redef]
    from airflow.datasets import Dataset as Asset  # type: ignore[no-redef,assignment]
    from airflow.decorators import task  # type: ignore[no-redef]

PROJECT_ID = os.environ.get("METASTUDIO_PROJECT_ID", "5f0e6b3a9c1d4e7f8a2b3c4d5e6f7a8b")
MODEL_LIBRARY = Asset(asset_uri(PROJECT_ID))
MODEL_DIR = os.environ.get("METASTUDIO_MODEL_DIR", "/tmp/metastudio-models")


@task
def models_from_events(**context) -> list[dict]:
    """One ``{asset_id, job_id, destination}`` per triggering event (Airflow 3 and 2.11 names)."""
    events = context.get("triggering_asset_events") or context.get("triggering_dataset_events") or {}
    models = {}
    for asset_events in events.values():
        for event in asset_events:
            extra = event.extra or {}
            asset_id = extra.get("model_asset_id")
            if asset_id:
                models[asset_id] = {
                    "asset_id": asset_id,
                    "job_id": extra.get("job_id"),
                    "destination": f"{MODEL_DIR}/{asset_id}/",
                }
    return list(models.values())


@task
def check_models(manifests: list[dict]) -> list[dict]:
    """Read each manifest and check that the MAIN file is a binary glTF 2.0 (GLB) file."""
    checked = []
    for manifest in manifests:
        with open(manifest["manifest_path"]) as f:
            files = json.load(f)["files"]
        main = next(f for f in files if f["category"] == "MAIN")
        with open(main["path"], "rb") as f:
            magic, version, length = struct.unpack("<4sII", f.read(12))
        if magic != b"glTF" or version != 2 or length != main["size"]:
            raise ValueError(f"{main['path']} is not a complete GLB 2.0 file")
        checked.append({"model_asset_id": manifest["model_asset_id"], "glb": main["path"], "bytes": length})
    return checked


with DAG(
    dag_id="example_metastudio_asset_consumer",
    start_date=datetime(2026, 1, 1),
    schedule=[MODEL_LIBRARY],
    catchup=False,
    tags=["metastudio", "example"],
) as dag:
    models = models_from_events()
    downloads = MetaStudioDownloadModelAssetOperator.partial(task_id="download_model").expand_kwargs(models)
    check_models(downloads.output)
