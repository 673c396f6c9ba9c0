"""The provider registry: valid against Airflow's schema, pointing at real code."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from testsupport.hook_http import (
    PROJECT_ID,
)

from airflow_provider_metastudio import __version__
from airflow_provider_metastudio.get_provider_info import CONN_FIELDS, get_provider_info
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook

# -- registry and connection form ---------------------------------------------------------------------------


def test_provider_info_matches_airflow_schema():
    import airflow
    import jsonschema

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-metastudio"
    assert info["versions"] == [__version__]


def test_provider_info_points_at_real_code():
    info = get_provider_info()
    (conn_type,) = info["connection-types"]
    module_name, _, class_name = conn_type["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module_name), class_name) is MetaStudioHook
    assert conn_type["connection-type"] == MetaStudioHook.conn_type == "metastudio"
    assert conn_type["hook-name"] == MetaStudioHook.hook_name
    for kind in ("hooks", "triggers", "sensors", "operators"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    (triggers,) = info["triggers"]
    assert "airflow_provider_metastudio.triggers.model_library" in triggers["python-modules"]
    for link in info["extra-links"]:
        module_name, _, class_name = link.rpartition(".")
        assert hasattr(importlib.import_module(module_name), class_name)


def test_conn_fields_are_valid_json_schemas():
    import jsonschema

    for name, spec in CONN_FIELDS.items():
        jsonschema.Draft7Validator.check_schema(spec["schema"])
        assert spec["label"] and spec["description"], name
    project = jsonschema.Draft7Validator(CONN_FIELDS["project_id"]["schema"])
    assert project.is_valid(PROJECT_ID) and not project.is_valid("../x")
