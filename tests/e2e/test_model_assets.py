"""End to end (issue #14): create -> wait for the job -> wait for its model asset -> download the
files, on real Airflow (``dag.test()``) against the emulator; re-runs, corrupted downloads, failures."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from airflow_provider_metastudio.testing._media import PNG_SIGNATURE, parse_glb

pytestmark = [
    pytest.mark.metastudio_emulator(waiting_seconds=1, processing_seconds=2, asset_active_delay=2, seed=5),
]
MODES = ("poke", "reschedule", "deferrable")


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _ready_asset(emu, name="ready") -> str:
    asset_id = emu.jobs.create(name)["model_asset_id"]
    emu.clock.advance(10)
    return asset_id


def _file_downloads(emu) -> list[str]:
    return [r["path"].split("?")[0] for r in emu.recorder.request_log() if r["call"] == "asset_file"]


@pytest.mark.parametrize("mode", MODES)
def test_create_wait_asset_download(mode, run_asset_dag, metastudio_emulator, tmp_path, capfd, caplog):
    result = run_asset_dag(f"e2e_asset_{mode}", name=f"asset-{mode}", dest=str(tmp_path))

    assert result.state == "success", result.tasks
    asset_id = result.xcoms[("create", "model_asset_id")]
    sensed = result.xcoms[("wait_asset", "return_value")]
    assert (sensed["asset_id"], sensed["state"]) == (asset_id, "ACTIVED")
    manifest = result.xcoms[("download", "return_value")]
    folder = tmp_path / asset_id
    assert result.xcoms[("download", "paths")] == [str(folder / "model.glb"), str(folder / "cover.png")]
    assert parse_glb((folder / "model.glb").read_bytes())["asset"]["version"] == "2.0"
    assert (folder / "cover.png").read_bytes().startswith(PNG_SIGNATURE)
    assert not (folder / "model_meta.json").exists()  # OTHER is not in the default categories
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk["model_asset_id"] == asset_id and on_disk["job_id"] == result.xcoms[("create", "job_id")]
    for entry in on_disk["files"]:
        data = Path(entry["path"]).read_bytes()
        assert (entry["size"], entry["md5"], entry["status"]) == (len(data), _md5(data), "downloaded")
    assert manifest["files"] == on_disk["files"]
    # Download URLs are bearer credentials: nowhere in XCom, nor in any log line of the run.
    # (The job's cover URL is in the job tasks' XCom by design; the asset tasks push no URL.)
    everything = json.dumps([v for k, v in result.xcoms.items() if k[0] in ("wait_asset", "download")])
    assert "Signature=" not in everything and '"download_url"' not in everything
    out, err = capfd.readouterr()
    logged = out + err + caplog.text + result.task_logs
    assert not re.search(r"/files/\S*Signature=(?!\*\*\*)", logged)
    assert metastudio_emulator.recorder.count(status=429) == 0


def test_rerun_skips_files_already_present(run_asset_dag, metastudio_emulator, tmp_path):
    emu = metastudio_emulator
    asset_id = _ready_asset(emu)
    first = run_asset_dag("e2e_asset_download", asset_id=asset_id, dest=str(tmp_path))
    assert first.state == "success"
    assert len(_file_downloads(emu)) == 3
    (tmp_path / "cover.png").write_bytes(b"not the cover")  # one damaged copy is fetched again

    emu.recorder.reset()
    second = run_asset_dag("e2e_asset_download", asset_id=asset_id, dest=str(tmp_path))

    assert second.state == "success"
    statuses = {e["category"]: e["status"] for e in second.xcoms[("download", "return_value")]["files"]}
    assert statuses == {"MAIN": "present", "COVER": "downloaded", "OTHER": "present"}
    assert [p.rsplit("/", 1)[1] for p in _file_downloads(emu)] == ["cover.png"]
    assert (tmp_path / "cover.png").read_bytes() == emu.assets.file_bytes(asset_id, "COVER")


def test_corrupted_download_is_retried_once(run_asset_dag, metastudio_emulator, tmp_path):
    emu = metastudio_emulator
    asset_id = _ready_asset(emu)
    emu.assets.corrupt(asset_id, "MAIN", count=1)
    result = run_asset_dag("e2e_asset_download", asset_id=asset_id, dest=str(tmp_path))
    assert result.state == "success"
    assert [p.rsplit("/", 1)[1] for p in _file_downloads(emu)].count("model.glb") == 2
    assert (tmp_path / "model.glb").read_bytes() == emu.assets.file_bytes(asset_id)


def test_corrupted_download_fails_naming_the_file(
    run_asset_dag, metastudio_emulator, tmp_path, capfd, caplog
):
    emu = metastudio_emulator
    asset_id = _ready_asset(emu)
    emu.assets.corrupt(asset_id, "MAIN")  # every download
    result = run_asset_dag("e2e_asset_download", asset_id=asset_id, dest=str(tmp_path))

    assert result.tasks == {"download": "failed"}
    assert [p.rsplit("/", 1)[1] for p in _file_downloads(emu)].count("model.glb") == 2
    assert not (tmp_path / "model.glb").exists()  # the bad copy is removed
    assert not (tmp_path / "manifest.json").exists()
    out, err = capfd.readouterr()
    logged = out + err + caplog.text + result.task_logs
    assert "Asset file model.glb (MAIN" in logged and "failed verification: MD5" in logged


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
@pytest.mark.parametrize("state", ["FAILED", "BLOCK", "DELETED"])
def test_asset_sensor_fails_on_dead_assets(mode, state, run_asset_dag, metastudio_emulator, capfd, caplog):
    emu = metastudio_emulator
    asset_id = emu.jobs.create("doomed")["model_asset_id"]  # CREATING: the sensor waits (defers)
    emu.assets.set_state(asset_id, state)
    result = run_asset_dag(f"e2e_asset_wait_{mode}", asset_id=asset_id)
    assert result.tasks == {"wait_asset": "failed"}
    out, err = capfd.readouterr()
    assert f"Model asset {asset_id} is {state}" in out + err + caplog.text + result.task_logs


def test_deferred_asset_sensor_waits_for_actived(run_asset_dag, metastudio_emulator):
    emu = metastudio_emulator
    # ACTIVED 10 s from now: the sensor defers (3.0's dag.test() may take 5 s to start the task).
    asset_id = emu.jobs.create("later", waiting_seconds=6)["model_asset_id"]
    result = run_asset_dag("e2e_asset_wait_deferrable", asset_id=asset_id)
    assert result.state == "success", result.tasks
    assert result.xcoms[("wait_asset", "return_value")]["state"] == "ACTIVED"
    assert emu.recorder.count(call="asset_show") >= 2


def _events(db, dag_id: str, run_id: str) -> dict[str, dict]:
    """task id -> the ``extra`` of the asset (Airflow 3) or dataset (2.11) event it emitted."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        table = "asset_event" if "asset_event" in tables else "dataset_event"
        rows = conn.execute(
            f"SELECT source_task_id, extra FROM {table} WHERE source_dag_id = ? AND source_run_id = ?",
            (dag_id, run_id),
        ).fetchall()
    finally:
        conn.close()
    return {task: json.loads(extra) if isinstance(extra, str) else extra for task, extra in rows}


def test_outlet_events_carry_the_model(run_asset_dag, metastudio_emulator, tmp_path, airflow_db):
    result = run_asset_dag("e2e_asset_poke", name="events", dest=str(tmp_path))
    assert result.state == "success", result.tasks

    events = _events(airflow_db, "e2e_asset_poke", result.run_id)
    job_id = result.xcoms[("create", "job_id")]
    asset_id = result.xcoms[("create", "model_asset_id")]
    assert events["create"] == {"model_asset_id": asset_id, "job_id": job_id}
    download = events["download"]
    assert (download["model_asset_id"], download["job_id"]) == (asset_id, job_id)
    assert download["paths"] == result.xcoms[("download", "paths")]
    assert download["manifest_path"] == str(tmp_path / asset_id / "manifest.json")


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_soft_fail_skips_a_timeout_only(mode, run_asset_dag, metastudio_emulator):
    emu = metastudio_emulator
    slow = emu.jobs.create("slow", waiting_seconds=3600)["model_asset_id"]  # CREATING for an hour
    emu.jobs.set_outcome("doom*", "FAILED")
    dead = emu.jobs.create("doomed")["model_asset_id"]  # CREATING, FAILED when its job fails (3 s)
    assert run_asset_dag(f"e2e_asset_wait_{mode}_soft", asset_id=slow).tasks == {"wait_asset": "skipped"}
    assert run_asset_dag(f"e2e_asset_wait_{mode}_soft", asset_id=dead).tasks == {"wait_asset": "failed"}
