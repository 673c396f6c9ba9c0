"""The external-job example refuses a run without a usable job id when it is triggered."""

from __future__ import annotations

import copy
import importlib.util

import pytest
from testsupport import EXAMPLE_DAGS

EXAMPLE = EXAMPLE_DAGS / "example_metastudio_external_job.py"

try:  # Airflow >= 3.0
    from airflow.sdk.definitions.param import ParamValidationError
except ImportError:  # Airflow 2.11
    from airflow.exceptions import ParamValidationError  # type: ignore[no-redef,attr-defined]


def _dags():
    spec = importlib.util.spec_from_file_location("example_metastudio_external_job", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [module.dag, module.taskflow_dag]


def _validate(dag, conf):
    """What Airflow does with a trigger's conf (``create_dagrun``): merge it into a copy of the DAG's
    params, each value checked against its Param, then validate them all."""
    params = copy.deepcopy(dag.params)
    params.update(conf)
    return params.validate()


@pytest.mark.parametrize("conf", [{}, {"job_id": ""}, {"job_id": "../other"}, {"job_id": "a b"}])
def test_trigger_without_a_usable_job_id_is_refused(conf):
    for dag in _dags():
        with pytest.raises(ParamValidationError):
            _validate(dag, conf)


def test_trigger_with_a_job_id_passes():
    for dag in _dags():
        assert _validate(dag, {"job_id": "7a1b2c3d-job_01"})["job_id"] == "7a1b2c3d-job_01"
