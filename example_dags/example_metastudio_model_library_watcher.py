"""React to every new model: one DAG run per model the tenant finishes, wherever it was made.

The asset ``metastudio_model_library`` has an ``AssetWatcher`` with
``MetaStudioModelLibraryTrigger``: the triggerer reads the tenant's finished jobs (the same list
calls its job waits make) and every SUCCEED or PARTIAL_SUCCEED job becomes one asset event, whose
``extra["payload"]`` names the model (``model_asset_id``, ``job_id``, ``name``, ``style_id``,
``state``, ``end_time``, ``dedupe_key``). This DAG, scheduled on the asset, downloads each model
named by its triggering events and checks its GLB (``check_models`` of the asset consumer example).

A model can be announced twice (Airflow 3.0-3.2 replay a few minutes after a triggerer restart;
3.3 only the events stored in the second before a crash): ``new_models`` skips a model whose
``dedupe_key`` an earlier event of the asset already carried.

Airflow >= 3.0 (asset watchers); on 2.11 this file defines no DAG: schedule a DAG that lists the
finished jobs and waits with ``MetaStudioPictureModelingJobSensor`` instead.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow_provider_metastudio._compat import AIRFLOW_V_3
from airflow_provider_metastudio.operators.model_asset import MetaStudioDownloadModelAssetOperator

MODEL_DIR = os.environ.get("METASTUDIO_MODEL_DIR", "/tmp/metastudio-models")
POLL_INTERVAL = float(os.environ.get("METASTUDIO_WATCHER_POLL_INTERVAL", "10"))


def _payload(event: Any) -> dict[str, Any]:
    extra = getattr(event, "extra", None) or {}
    return extra.get("payload") or {}


def new_models_from(triggering: list[Any], earlier: list[Any]) -> list[dict[str, Any]]:
    """One ``{asset_id, job_id, destination}`` per model of ``triggering`` events, leaving out a
    model whose ``dedupe_key`` an event of ``earlier`` (the asset's events) had before it."""
    first_seen: dict[str, Any] = {}
    for event in earlier:
        key = _payload(event).get("dedupe_key")
        if key and (key not in first_seen or event.timestamp < first_seen[key]):
            first_seen[key] = event.timestamp
    models: dict[str, dict[str, Any]] = {}
    for event in triggering:
        payload = _payload(event)
        key, asset_id = payload.get("dedupe_key"), payload.get("model_asset_id")
        if not asset_id or (key in first_seen and first_seen[key] < event.timestamp):
            continue  # announced before: that run handles it
        models[asset_id] = {
            "asset_id": asset_id,
            "job_id": payload.get("job_id"),
            "destination": f"{MODEL_DIR}/{asset_id}/",
        }
    return list(models.values())


if AIRFLOW_V_3:
    from airflow.sdk import DAG, Asset, AssetWatcher, task
    from example_metastudio_asset_consumer import check_models  # the same GLB check

    from airflow_provider_metastudio.triggers.model_library import MetaStudioModelLibraryTrigger

    MODEL_LIBRARY = Asset(
        "metastudio_model_library",
        watchers=[
            AssetWatcher(
                name="metastudio_model_library_watcher",
                trigger=MetaStudioModelLibraryTrigger(
                    name="metastudio_model_library_watcher", poll_interval=POLL_INTERVAL
                ),
            )
        ],
    )

    @task(inlets=[MODEL_LIBRARY])
    def new_models(**context: Any) -> list[dict[str, Any]]:
        triggering = list(context["triggering_asset_events"][MODEL_LIBRARY])
        ends = [p["end_time"] for p in map(_payload, triggering) if p.get("end_time")]
        # Every copy of an event was made after its model's job ended: read the asset's events
        # from the oldest such end on, not its whole history.
        events = context["inlet_events"][MODEL_LIBRARY]
        if ends and hasattr(events, "after"):
            events = events.after(min(ends))
        return new_models_from(triggering, list(events))

    with DAG(
        dag_id="example_metastudio_model_library_watcher",
        start_date=datetime(2026, 1, 1),
        schedule=[MODEL_LIBRARY],
        catchup=False,
        tags=["metastudio", "example"],
    ) as dag:
        models = new_models()
        downloads = MetaStudioDownloadModelAssetOperator.partial(task_id="download_model").expand_kwargs(
            models
        )
        check_models(downloads.output)
