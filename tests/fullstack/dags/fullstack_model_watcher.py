"""Full-stack: an asset watched by MetaStudioModelLibraryTrigger and a DAG scheduled on it (one
EmptyOperator: the test counts runs and the events they consumed, not task work)."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, AssetWatcher

from airflow_provider_metastudio.triggers.model_library import MetaStudioModelLibraryTrigger

MODELS = Asset(
    "fullstack_models",
    watchers=[
        AssetWatcher(
            name="fullstack_models",
            trigger=MetaStudioModelLibraryTrigger(
                name="fullstack_models", poll_interval=float(os.environ["METASTUDIO_WATCHER_POLL_INTERVAL"])
            ),
        )
    ],
)

with DAG(
    dag_id="fullstack_model_watcher",
    start_date=datetime(2026, 1, 1),
    schedule=[MODELS],
    catchup=False,
):
    EmptyOperator(task_id="noop")
