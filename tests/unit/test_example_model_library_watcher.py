"""The watcher example: it imports on every Airflow line, defines its DAG on Airflow 3, and its
consumer skips a model an earlier event already announced."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from testsupport import EXAMPLE_DAGS

from airflow_provider_metastudio._compat import AIRFLOW_V_3

T0 = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def example(request):
    sys.path.insert(0, str(EXAMPLE_DAGS))  # as Airflow does for its DAGs folder
    request.addfinalizer(lambda: sys.path.remove(str(EXAMPLE_DAGS)))
    name = "example_metastudio_model_library_watcher"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE_DAGS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defines_the_watched_asset_and_its_dag_on_airflow_3_only(example):
    if not AIRFLOW_V_3:
        assert not hasattr(example, "dag")
        return
    from airflow_provider_metastudio.triggers.model_library import MetaStudioModelLibraryTrigger

    (watcher,) = example.MODEL_LIBRARY.watchers
    assert isinstance(watcher.trigger, MetaStudioModelLibraryTrigger)
    assert {"new_models", "download_model", "check_models"} <= set(example.dag.task_ids)


def _event(n: int, at: float, key: str | None = None):
    payload = {"model_asset_id": f"asset-{n}", "job_id": f"job-{n}", "dedupe_key": key or f"k{n}"}
    return SimpleNamespace(
        extra={"from_trigger": True, "payload": payload}, timestamp=T0 + timedelta(seconds=at)
    )


def test_consumer_skips_a_model_an_earlier_event_announced(example):
    first, again, other = _event(1, 0), _event(1, 5), _event(2, 6)
    history = [first, again, other]
    # the run of the first announcement downloads it; the run of the repeat does not
    assert [m["asset_id"] for m in example.new_models_from([first], history)] == ["asset-1"]
    assert example.new_models_from([again], history) == []
    assert [m["asset_id"] for m in example.new_models_from([again, other], history)] == ["asset-2"]
    # a batched run with both copies keeps one
    assert [m["asset_id"] for m in example.new_models_from([first, again], history)] == ["asset-1"]
    assert example.new_models_from([first], [])[0]["destination"].endswith("/asset-1/")
