"""The metastudio:// asset URI scheme, outlet events and the asset example DAGs (issue #14)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from testsupport import EXAMPLE_DAGS

from airflow_provider_metastudio.asset_events import asset_uri, emit_outlet_events, sanitize_uri
from airflow_provider_metastudio.get_provider_info import get_provider_info

PROJECT = "5f0e6b3a9c1d4e7f8a2b3c4d5e6f7a8b"
ASSET = "4b1d0f5e7a9c4c2e8f3a6b5d7c9e1f20"
EXAMPLES = EXAMPLE_DAGS

try:
    from airflow.sdk import Asset
except ImportError:  # Airflow 2.11
    from airflow.datasets import Dataset as Asset  # type: ignore[no-redef,assignment]


@pytest.mark.parametrize(
    ("uri", "normalized"),
    [
        (f"metastudio://{PROJECT}/assets", f"metastudio://{PROJECT}/assets"),
        (f"metastudio://{PROJECT}/assets/", f"metastudio://{PROJECT}/assets"),
        (f"METASTUDIO://{PROJECT}/assets/{ASSET}", f"metastudio://{PROJECT}/assets/{ASSET}"),
    ],
)
def test_sanitize_accepts_and_normalizes(uri, normalized):
    assert sanitize_uri(urlsplit(uri)).geturl() == normalized


@pytest.mark.parametrize(
    "uri",
    [
        "metastudio:///assets",
        f"metastudio://{PROJECT}",
        f"metastudio://{PROJECT}/jobs/x",
        f"metastudio://{PROJECT}/assets/a/b",
        f"metastudio://{PROJECT}/assets/..",
        f"metastudio://{PROJECT}/assets?x=1",
        f"metastudio://user:pw@{PROJECT}/assets",
        f"metastudio://{PROJECT}:80/assets",
        "metastudio://bad%20project/assets",
    ],
)
def test_sanitize_refuses(uri):
    with pytest.raises(ValueError, match="metastudio://"):
        sanitize_uri(urlsplit(uri))


def test_asset_uri_helper_and_registration():
    assert asset_uri(PROJECT) == f"metastudio://{PROJECT}/assets"
    assert asset_uri(PROJECT, ASSET) == f"metastudio://{PROJECT}/assets/{ASSET}"
    with pytest.raises(ValueError):
        asset_uri(PROJECT, "../x")
    info = get_provider_info()
    for key in ("asset-uris", "dataset-uris"):
        (entry,) = info[key]
        assert entry == {
            "schemes": ["metastudio"],
            "handler": "airflow_provider_metastudio.asset_events.sanitize_uri",
        }


class _EventsByEquality(Mapping):
    """A stand-in for Airflow's outlet/triggering event accessors, keyed by equality: Airflow 3.0's
    ``Asset`` is not hashable (its accessors key events by the asset's key), so no dict can be one."""

    def __init__(self, items=(), default=None) -> None:
        self.pairs = list(items)
        self.default = default  # makes a missing key's value (an outlet event), recorded

    def __getitem__(self, key):
        for k, v in self.pairs:
            if k == key:
                return v
        if self.default is None:
            raise KeyError(key)
        self.pairs.append((key, self.default()))
        return self.pairs[-1][1]

    def __iter__(self):
        return iter([k for k, _ in self.pairs])

    def __len__(self) -> int:
        return len(self.pairs)


def test_emit_sets_extra_only_on_asset_outlets():
    library = Asset(asset_uri(PROJECT))
    events = _EventsByEquality(default=lambda: SimpleNamespace(extra={}))

    task = SimpleNamespace(outlets=[library, "not an asset"])
    extra = emit_outlet_events(task, {"outlet_events": events}, model_asset_id=ASSET, job_id=None)
    assert extra == {"model_asset_id": ASSET}
    assert list(events) == [library] and events[library].extra == {"model_asset_id": ASSET}
    assert emit_outlet_events(SimpleNamespace(outlets=[]), {"outlet_events": _EventsByEquality()}, x=1) == {}


@pytest.mark.parametrize("name", ["example_metastudio_asset_producer", "example_metastudio_asset_consumer"])
def test_example_dags_import(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.MODEL_LIBRARY.uri == f"metastudio://{PROJECT}/assets"
    if name.endswith("producer"):
        assert module.dag.get_task("wait_for_model_asset").outlets == [module.MODEL_LIBRARY]
    else:
        assert {"models_from_events", "download_model", "check_models"} <= set(module.dag.task_ids)


def test_consumer_reads_models_from_triggering_events():
    spec = importlib.util.spec_from_file_location(
        "consumer", EXAMPLES / "example_metastudio_asset_consumer.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    event = SimpleNamespace(extra={"model_asset_id": ASSET, "job_id": "j1"})
    fn = module.models_from_events.function
    events = _EventsByEquality([(module.MODEL_LIBRARY, [event, event, SimpleNamespace(extra={})])])
    got = fn(triggering_asset_events=events)
    assert got == [{"asset_id": ASSET, "job_id": "j1", "destination": f"{module.MODEL_DIR}/{ASSET}/"}]
