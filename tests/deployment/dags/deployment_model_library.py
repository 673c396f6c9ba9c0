"""The model-library watcher on the production-shaped stack: an asset whose ``AssetWatcher`` announces
each model the tenant finishes under the name glob ``deployment-outside-*`` (jobs made outside
Airflow, through the emulator's admin API; the other scenarios' jobs do not match), and a DAG
scheduled on it that records the models of its triggering events."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_metastudio.triggers.model_library import MetaStudioModelLibraryTrigger

WATCHER = "deployment_model_library_watcher"
MODELS = Asset(
    "deployment_model_library",
    watchers=[
        AssetWatcher(
            name=WATCHER,
            trigger=MetaStudioModelLibraryTrigger(
                name=WATCHER, name_pattern="deployment-outside-*", poll_interval=5
            ),
        )
    ],
)

with DAG(
    dag_id="deployment_model_library",
    start_date=datetime(2026, 1, 1),
    schedule=[MODELS],
    catchup=False,
    default_args={"retries": 0},
):

    @task(inlets=[MODELS])
    def models(**context) -> list[str]:
        events = context["triggering_asset_events"][MODELS]
        return sorted({(e.extra or {}).get("payload", {}).get("model_asset_id") for e in events} - {None})

    models()
