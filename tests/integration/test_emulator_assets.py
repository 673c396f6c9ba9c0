"""The emulator's asset library (issue #14), driven through the provider's hook over loopback."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest
import requests

from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioChecksumError,
    MetaStudioNotFoundError,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.testing import MetaStudioEmulator
from airflow_provider_metastudio.testing._media import PNG_SIGNATURE, parse_glb

pytestmark = pytest.mark.metastudio_emulator(
    waiting_seconds=1, processing_seconds=2, asset_active_delay=5, quotas_enabled=False
)


@pytest.fixture
def hook(metastudio_emulator: MetaStudioEmulator) -> MetaStudioHook:
    conn = metastudio_emulator.connection_dict()
    config = MetaStudioConnectionConfig.from_parts(
        login=conn["login"],
        password=conn["password"],
        extra={**conn["extra"], "rate_limits": False},
        **metastudio_emulator.connection_destination(),
    )
    return MetaStudioHook(config=config, retry_delay=0, retry_limit=1)


def test_asset_lifecycle_follows_the_job(
    metastudio_emulator: MetaStudioEmulator, hook: MetaStudioHook
) -> None:
    emu = metastudio_emulator
    job = emu.jobs.create("model_a", "system_female_001")
    asset_id = job["model_asset_id"]
    assert hook.get_asset(asset_id).state == "CREATING"
    emu.clock.advance(3)  # the job is SUCCEED, the asset not ready yet
    assert emu.jobs.get(job["job_id"])["state"] == "SUCCEED"
    asset = hook.get_asset(asset_id)
    assert (asset.state, asset.files) == ("CREATING", ())
    emu.clock.advance(5)
    asset = hook.get_asset(asset_id)
    assert asset.is_usable and asset.asset_type == "HUMAN_MODEL"
    assert [f.category for f in asset.files] == ["MAIN", "COVER", "OTHER"]
    assert all(f.download_url_expires_at is not None for f in asset.files)


def test_downloads_are_real_files_with_matching_md5(
    metastudio_emulator: MetaStudioEmulator, hook: MetaStudioHook
) -> None:
    emu = metastudio_emulator
    asset_id = emu.jobs.create("model_b")["model_asset_id"]
    emu.clock.advance(10)
    asset = hook.get_asset(asset_id)
    main, cover = asset.files_of(["MAIN"])[0], asset.files_of(["COVER"])[0]
    out = io.BytesIO()
    got = hook.download_asset_file(main, out)
    assert parse_glb(out.getvalue())["asset"] == {"version": "2.0", "generator": "metastudio-emulator"}
    assert got.md5 == base64.b64encode(hashlib.md5(out.getvalue()).digest()).decode() == main.md5
    cover_out = io.BytesIO()
    hook.download_asset_file(cover, cover_out)
    assert cover_out.getvalue().startswith(PNG_SIGNATURE)


def test_corrupted_download_fails_the_md5_check(metastudio_emulator: MetaStudioEmulator, hook) -> None:
    emu = metastudio_emulator
    asset_id = emu.jobs.create("model_c")["model_asset_id"]
    emu.clock.advance(10)
    emu.assets.corrupt(asset_id, "MAIN", count=1)
    main = hook.get_asset(asset_id).files_of(["MAIN"])[0]
    with pytest.raises(MetaStudioChecksumError, match="model.glb"):
        hook.download_asset_file(main, io.BytesIO())
    out = io.BytesIO()
    hook.download_asset_file(main, out)  # count=1: the next download is right
    assert out.getvalue() == emu.assets.file_bytes(asset_id)


def test_download_url_expires(metastudio_emulator: MetaStudioEmulator, hook) -> None:
    emu = metastudio_emulator
    asset_id = emu.jobs.create("model_d")["model_asset_id"]
    emu.clock.advance(10)
    main = hook.get_asset(asset_id).files_of(["MAIN"])[0]
    emu.clock.advance(24 * 3600 + 1)
    with pytest.raises(MetaStudioAuthError, match="expires at"):
        hook.download_asset_file(main, io.BytesIO())
    # a tampered signature is refused too
    url = main.download_url.replace("Expires=", "Expires=9")
    assert requests.get(url, timeout=10).status_code == 403


@pytest.mark.metastudio_emulator(
    asset_outcomes_by_name={"*blocked*": "BLOCK", "*broken*": "FAILED"},
    outcomes_by_name={"*jobfail*": "FAILED"},
)
def test_outcomes_by_name_and_forced_states(metastudio_emulator: MetaStudioEmulator, hook) -> None:
    emu = metastudio_emulator
    ids = {n: emu.jobs.create(n)["model_asset_id"] for n in ("m_blocked", "m_broken", "m_jobfail", "m_ok")}
    emu.clock.advance(10)
    states = {n: hook.get_asset(i).state for n, i in ids.items()}
    assert states == {"m_blocked": "BLOCK", "m_broken": "FAILED", "m_jobfail": "FAILED", "m_ok": "ACTIVED"}
    blocked = hook.get_asset(ids["m_blocked"])
    assert blocked.is_failure and all(f.download_url is None for f in blocked.files)
    emu.assets.set_state(ids["m_ok"], "DELETED")
    assert hook.get_asset(ids["m_ok"]).is_failure
    emu.assets.set_state(ids["m_jobfail"], "SOMETHING_NEW")
    odd = hook.get_asset(ids["m_jobfail"])
    assert (odd.state, odd.is_usable, odd.is_failure, odd.known_state) == (
        "SOMETHING_NEW",
        False,
        False,
        None,
    )


def test_unknown_asset_is_404(hook, metastudio_emulator) -> None:
    with pytest.raises(MetaStudioNotFoundError):
        hook.get_asset("0" * 32)


def test_list_filters_and_pages(metastudio_emulator: MetaStudioEmulator, hook) -> None:
    emu = metastudio_emulator
    for i in range(5):
        emu.jobs.create(f"lst_{i}", "system_male_001" if i % 2 else "system_female_001")
    emu.clock.advance(10)
    emu.jobs.create("lst_late")  # still CREATING
    assert len(list(hook.list_assets(page_size=2))) == 6
    active = list(hook.list_assets(states="ACTIVED", style_id="system_male_001", sort_dir="desc"))
    assert [a.asset_name for a in active] == ["lst_3", "lst_1"]
    assert [a.asset_name for a in hook.list_assets(name="LATE")] == ["lst_late"]
    assert list(hook.list_assets(states=["FAILED", "BLOCK"])) == []


def test_admin_interface_for_assets(metastudio_emulator: MetaStudioEmulator) -> None:
    emu = metastudio_emulator
    asset_id = emu.jobs.create("adm")["model_asset_id"]
    base = f"{emu.base_url}/_emulator"
    assert requests.get(f"{base}/assets/{asset_id}", timeout=10).json()["asset_state"] == "CREATING"
    r = requests.post(f"{base}/assets/{asset_id}/state", json={"state": "BLOCK"}, timeout=10)
    assert r.json()["asset_state"] == "BLOCK"
    r = requests.put(f"{base}/assets/{asset_id}/corrupt", json={"category": "COVER", "count": 2}, timeout=10)
    assert r.json()["corrupt"] == {f"{asset_id}/COVER": 2}
    r = requests.post(f"{base}/asset-outcomes", json={"pattern": "*x*", "state": "FAILED"}, timeout=10)
    assert r.json()["outcomes"] == {"*x*": "FAILED"}
    assert requests.get(f"{base}/assets/nope", timeout=10).status_code == 404
