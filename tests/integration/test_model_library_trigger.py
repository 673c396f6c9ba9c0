"""MetaStudioModelLibraryTrigger with ``wait_for_active`` in a real event loop against the emulator:
the event of a finished job waits for its model asset, read through the real hook and transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_metastudio._compat import AIRFLOW_V_3

pytestmark = [
    pytest.mark.skipif(not AIRFLOW_V_3, reason="asset watchers are Airflow >= 3.0"),
    # Assets turn ACTIVED 3 s after their job ends: long enough to tell a wait from none.
    pytest.mark.metastudio_emulator(
        waiting_seconds=0.2, processing_seconds=0.3, asset_active_delay=3.0, quotas_enabled=False
    ),
]


def _events(emu: Any, names: list[str], count: int) -> list[tuple[dict[str, Any], str]]:
    """Run the watcher, create jobs named ``names`` once it is listening, and return the first
    ``count`` event payloads, each with the emulator's asset state at the moment it fired."""
    from airflow_provider_metastudio.triggers.model_library import MetaStudioModelLibraryTrigger

    async def scenario() -> list[tuple[dict[str, Any], str]]:
        trigger = MetaStudioModelLibraryTrigger(name="library", poll_interval=0.5, wait_for_active=True)
        out: list[tuple[dict[str, Any], str]] = []

        async def collect() -> None:
            async for event in trigger.run():
                payload = event.payload
                out.append((payload, emu.assets.get(payload["model_asset_id"])["asset_state"]))
                if len(out) >= count:
                    return

        task = asyncio.ensure_future(collect())
        await asyncio.sleep(2)  # the watcher's first scan fixes "now": these jobs end after it
        for name in names:
            emu.jobs.create(name)
        await asyncio.wait_for(task, 60)
        return out

    return asyncio.run(scenario())


def test_wait_for_active_fires_once_the_model_asset_is_actived(metastudio_emulator, metastudio_connection):
    ((payload, state_then),) = _events(metastudio_emulator, ["library-active"], 1)
    assert payload["state"] == "SUCCEED"
    assert payload["asset_state"] == "ACTIVED"
    assert state_then == "ACTIVED"  # not fired while the asset was still being made
    assert metastudio_emulator.recorder.count(call="asset_show") >= 2  # it read the asset until then
    assert "url" not in " ".join(payload).lower()


def test_wait_for_active_reports_a_model_asset_that_failed(metastudio_emulator, metastudio_connection):
    metastudio_emulator.assets.set_outcome("library-blocked*", "BLOCK")
    ((payload, _),) = _events(metastudio_emulator, ["library-blocked"], 1)
    assert payload["state"] == "SUCCEED"
    assert payload["asset_state"] == "BLOCK"
