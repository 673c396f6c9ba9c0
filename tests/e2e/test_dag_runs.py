"""End to end: real Airflow runs the sensor and operators against the emulator over loopback.

Deferrable runs go through Airflow's own inline-trigger path of ``dag.test()`` (the trigger's
``run()`` in an event loop, its event handed back to ``execute_complete``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from airflow_provider_metastudio._compat import AIRFLOW_V_3
from airflow_provider_metastudio.links.picture_modeling import MetaStudioPictureModelingJobLink, console_url

pytestmark = pytest.mark.metastudio_emulator(waiting_seconds=1, processing_seconds=2, seed=7)
MODES = ("poke", "reschedule", "deferrable")
RESULT_KEYS = ("job_id", "state", "model_asset_id", "model_cover_url", "model_cover_url_expires_at")


def _object(url: str) -> str:
    return urlsplit(url).path


def _cover_bytes(url: str) -> bytes:
    resp = requests.get(url, timeout=10)
    resp.raise_for_status()
    return resp.content


@pytest.mark.parametrize("mode", MODES)
def test_success_pushes_xcoms_and_copies_cover(mode, run_dag, metastudio_emulator, tmp_path):
    result = run_dag(f"e2e_{mode}", name=f"ok-{mode}", cover_dir=str(tmp_path))

    assert result.state == "success", result.tasks
    job_id = result.xcoms[("create", "job_id")]
    asset_id = result.xcoms[("create", "model_asset_id")]
    assert metastudio_emulator.jobs.get(job_id)["model_asset_id"] == asset_id
    sensed = result.xcoms[("wait", "return_value")]
    assert (sensed["job_id"], sensed["state"], sensed["model_asset_id"]) == (job_id, "SUCCEED", asset_id)
    # The sensor carries the job's link too, in every mode.
    assert result.xcoms[("wait", "metastudio_console_url")] == console_url("cn-north-4", asset_id)
    if AIRFLOW_V_3:  # Airflow 3 computes links on the worker and stores them in XCom
        link_key = MetaStudioPictureModelingJobLink().xcom_key
        assert result.xcoms[("wait", link_key)] == console_url("cn-north-4", asset_id)
    fetched = result.xcoms[("fetch", "return_value")]
    for key in RESULT_KEYS:
        assert result.xcoms[("fetch", key)] == fetched[key]
    # The service signs a fresh cover URL on every read: compare the object, not the signature.
    assert _object(fetched["model_cover_url"]) == _object(
        metastudio_emulator.jobs.get(job_id)["model_cover_url"]
    )
    cover_path = Path(result.xcoms[("fetch", "model_cover_path")])
    assert cover_path == tmp_path / f"{asset_id}.png"
    assert cover_path.read_bytes() == _cover_bytes(fetched["model_cover_url"])
    assert cover_path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    log = [(r["time"], r["call"], r["status"]) for r in metastudio_emulator.recorder.request_log()]
    assert metastudio_emulator.recorder.count(status=429) == 0, log
    assert metastudio_emulator.recorder.counters()["jobs_created"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_partial_succeed_accepted_by_default(mode, run_dag, metastudio_emulator, tmp_path, caplog):
    metastudio_emulator.jobs.set_outcome("partial-*", "PARTIAL_SUCCEED")
    result = run_dag(f"e2e_{mode}", name=f"partial-{mode}", cover_dir=str(tmp_path))

    assert result.state == "success", result.tasks
    assert result.xcoms[("wait", "return_value")]["state"] == "PARTIAL_SUCCEED"
    assert result.xcoms.get(("fetch", "model_cover_url")) is None
    assert result.xcoms.get(("fetch", "model_cover_path")) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", MODES)
def test_partial_succeed_refused_when_strict(mode, run_dag, metastudio_emulator, tmp_path):
    metastudio_emulator.jobs.set_outcome("partial-*", "PARTIAL_SUCCEED")
    result = run_dag(f"e2e_{mode}_strict", name=f"partial-{mode}", cover_dir=str(tmp_path))

    assert result.tasks["wait"] == "failed"
    assert result.tasks["fetch"] == "upstream_failed"


@pytest.mark.parametrize("mode", MODES)
def test_failed_job_fails_the_task_with_the_error_code(
    mode, run_dag, metastudio_emulator, tmp_path, capfd, caplog
):
    metastudio_emulator.jobs.set_outcome("fail-*", "FAILED")
    result = run_dag(f"e2e_{mode}", name=f"fail-{mode}", cover_dir=str(tmp_path))

    assert result.tasks == {"create": "success", "wait": "failed", "fetch": "upstream_failed"}
    job = metastudio_emulator.jobs.get(result.xcoms[("create", "job_id")])
    code = job["error_info"]["error_code"]
    out, err = capfd.readouterr()
    logged = out + err + caplog.text
    assert f"ended FAILED: {code}" in logged


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft_fail"])
def test_timeout(mode, soft, run_dag, metastudio_emulator):
    job = metastudio_emulator.jobs.create(name="slow", waiting_seconds=3600)
    result = run_dag(f"e2e_{mode}_timeout{'_soft' if soft else ''}", job_id=job["job_id"])

    assert result.tasks["wait"] == ("skipped" if soft else "failed")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("outcome", ["FAILED", "CANCELED"])
def test_soft_fail_does_not_skip_a_failed_job(outcome, mode, run_dag, metastudio_emulator):
    """soft_fail is for timeouts: a job that failed fails the sensor in every mode (Airflow itself would
    skip any AirflowException on a deferred sensor's resume)."""
    job = metastudio_emulator.jobs.create(
        name="doomed", outcome=outcome, waiting_seconds=1, processing_seconds=2
    )
    result = run_dag(f"e2e_{mode}_soft_failed", job_id=job["job_id"])

    assert result.tasks["wait"] == "failed"


@pytest.mark.parametrize("deferrable", [False, True], ids=["blocking", "deferrable"])
def test_create_operator_waits_and_copies_cover(deferrable, run_dag, metastudio_emulator, tmp_path):
    dag_id = f"e2e_create_wait_{'deferrable' if deferrable else 'blocking'}"
    result = run_dag(dag_id, name="operator", cover_dir=str(tmp_path))

    assert result.state == "success", result.tasks
    x = result.xcoms
    job = metastudio_emulator.jobs.get(x[("create", "job_id")])
    assert x[("create", "state")] == "SUCCEED"
    assert x[("create", "model_asset_id")] == job["model_asset_id"]
    assert _object(x[("create", "return_value")]["model_cover_url"]) == _object(job["model_cover_url"])
    path = Path(x[("create", "model_cover_path")])
    assert path.parent == tmp_path / "covers"
    assert path.read_bytes() == _cover_bytes(job["model_cover_url"])
    expected_link = console_url("cn-north-4", job["model_asset_id"])
    assert x[("create", "metastudio_console_url")] == expected_link
    if AIRFLOW_V_3:  # Airflow 3 computes links on the worker and stores them in XCom
        assert x[("create", MetaStudioPictureModelingJobLink().xcom_key)] == expected_link
    assert metastudio_emulator.recorder.counters()["jobs_created"] == 1
    calls = [r["call"] for r in metastudio_emulator.recorder.request_log()]
    if deferrable:  # deferred before creating: the trigger's name lookup, then its create
        assert calls.index("list") < calls.index("create_by_url"), calls
    else:
        assert calls[0] == "create_by_url", calls


def test_extra_link_reads_xcom_through_ti_key(run_dag, e2e_dags, metastudio_emulator, tmp_path):
    result = run_dag("e2e_create_wait_blocking", name="link", cover_dir=str(tmp_path))
    asset_id = result.xcoms[("create", "model_asset_id")]
    if AIRFLOW_V_3:
        pytest.skip("Airflow 3 resolves links on the worker; covered by the XCom check above")
    from airflow.models.taskinstancekey import TaskInstanceKey

    op = e2e_dags.DAGS["e2e_create_wait_blocking"].get_task("create")
    key = TaskInstanceKey("e2e_create_wait_blocking", "create", result.run_id, 1)
    assert MetaStudioPictureModelingJobLink().get_link(op, ti_key=key) == console_url("cn-north-4", asset_id)


@pytest.mark.parametrize("mode", MODES)
def test_sensor_link_reads_xcom_through_ti_key(mode, run_dag, e2e_dags, metastudio_emulator):
    job = metastudio_emulator.jobs.create(name=f"sensed-{mode}", waiting_seconds=1, processing_seconds=2)
    dag_id = f"e2e_{mode}_soft_failed"  # a DAG of the sensor alone, on an external job
    result = run_dag(dag_id, job_id=job["job_id"])
    assert result.tasks["wait"] == "success", result.tasks
    expected = console_url("cn-north-4", metastudio_emulator.jobs.get(job["job_id"])["model_asset_id"])
    sensor = e2e_dags.DAGS[dag_id].get_task("wait")
    assert any(isinstance(link, MetaStudioPictureModelingJobLink) for link in sensor.operator_extra_links)
    if AIRFLOW_V_3:  # Airflow 3 resolves links on the worker and keeps them in XCom
        assert result.xcoms[("wait", MetaStudioPictureModelingJobLink().xcom_key)] == expected
        return
    from airflow.models.taskinstancekey import TaskInstanceKey

    key = TaskInstanceKey(dag_id, "wait", result.run_id, result.tries["wait"])
    assert MetaStudioPictureModelingJobLink().get_link(sensor, ti_key=key) == expected
