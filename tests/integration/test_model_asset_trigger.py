"""MetaStudioModelAssetTrigger in real event loops against the emulator (issue #14)."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_metastudio.triggers.model_asset import MetaStudioModelAssetTrigger

pytestmark = pytest.mark.metastudio_emulator(
    waiting_seconds=0.2, processing_seconds=0.3, asset_active_delay=0.5, quotas_enabled=False
)


def _run(trigger: MetaStudioModelAssetTrigger) -> list[dict]:
    async def collect() -> list[dict]:
        return [e.payload async for e in trigger.run()]

    return asyncio.run(collect())


def _trigger(asset_id: str, within: float = 20.0) -> MetaStudioModelAssetTrigger:
    return MetaStudioModelAssetTrigger(asset_id=asset_id, poll_interval=0.2, end_time=time.time() + within)


def test_serialize_round_trip():
    trigger = MetaStudioModelAssetTrigger(
        asset_id="a1", metastudio_conn_id="ms", poll_interval=5, end_time=9.5
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_metastudio.triggers.model_asset.MetaStudioModelAssetTrigger"
    assert kwargs == {"asset_id": "a1", "metastudio_conn_id": "ms", "poll_interval": 5, "end_time": 9.5}
    assert MetaStudioModelAssetTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_success_after_creating_without_urls(metastudio_emulator, metastudio_connection):
    asset_id = metastudio_emulator.jobs.create("trig")["model_asset_id"]
    (event,) = _run(_trigger(asset_id))
    assert event["status"] == "success" and event["asset"]["state"] == "ACTIVED"
    assert "Signature" not in str(event) and "'download_url'" not in str(event)
    assert metastudio_emulator.recorder.count(call="asset_show") >= 2


def test_transient_outage_keeps_waiting(metastudio_emulator, metastudio_connection):
    asset_id = metastudio_emulator.jobs.create("outage")["model_asset_id"]
    metastudio_emulator.faults.outage(1.5, call="asset_show", kind="503")
    (event,) = _run(_trigger(asset_id))
    assert event["status"] == "success"
    assert metastudio_emulator.recorder.count(call="asset_show", status=503) >= 1


def test_failed_and_error_and_timeout(metastudio_emulator, metastudio_connection):
    emu = metastudio_emulator
    blocked = emu.jobs.create("blocked")["model_asset_id"]
    emu.assets.set_state(blocked, "BLOCK")
    (failed,) = _run(_trigger(blocked))
    assert (failed["status"], failed["state"]) == ("failed", "BLOCK")
    assert "frozen by the emulator" in failed["message"]

    (error,) = _run(_trigger("0" * 32))  # unknown asset: 404, not transient
    assert (error["status"], error["http_status"], error["asset_id"]) == ("error", 404, "0" * 32)
    assert error["type"] == "MetaStudioNotFoundError"

    slow = emu.jobs.create("slow", waiting_seconds=3600)["model_asset_id"]
    started = time.monotonic()
    (timeout,) = _run(_trigger(slow, within=1.0))
    assert timeout["status"] == "timeout" and "still CREATING" in timeout["message"]
    assert time.monotonic() - started < 5
