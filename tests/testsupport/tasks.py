"""What the sensor, operator and link unit tests share: a connection, real jobs and a task context.

Only the hook's public calls are replaced (:func:`patch_job_reads`); the tasks under test run their
real code against a ``MagicMock`` task instance whose ``xcom_push`` calls are recorded.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from typing import Any
from unittest import mock

import pytest

from airflow_provider_metastudio.assets import DigitalAsset
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.models import PictureModelingJob
from testsupport import DATA

AK = "HPUAEXAMPLEAK0000001"
SK = "SKsecret-task-tests-7b1f0c9e"
PROJECT_ID = "0d697589d98091f12f92c0073501cd79"
REGION = "cn-east-3"
#: The contract's example job (``tests/data/job_succeed.json``), as the service sends it.
JOB_SUCCEED: dict[str, Any] = json.loads((DATA / "job_succeed.json").read_text())
JOB_ID = JOB_SUCCEED["job_id"]
ASSET_ID = JOB_SUCCEED["model_asset_id"]


def use_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default ``metastudio`` connection, from the environment (no database)."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_METASTUDIO_DEFAULT",
        json.dumps(
            {
                "conn_type": "metastudio",
                "login": AK,
                "password": SK,
                "extra": {"project_id": PROJECT_ID, "region": REGION, "rate_limits": False},
            }
        ),
    )


def job(state: str = "SUCCEED", **fields: Any) -> PictureModelingJob:
    """The contract's example job in ``state``, parsed by the model's own parser.

    Running states carry no end time, cover or error; ``fields`` overrides any raw field.
    """
    data = dict(JOB_SUCCEED, state=state)
    if state in ("WAITING", "PROCESSING"):
        data.update(end_time=None, model_cover_url=None)
    return PictureModelingJob.from_api({**data, **fields})


def asset_file(
    name: str = "model.glb", data: bytes = b"glTF model", category: str = "MAIN"
) -> dict[str, Any]:
    """One file of an asset as the asset-details call lists it, with ``data``'s size and MD5."""
    return {
        "file_id": f"file-{category.lower()}",
        "file_name": name,
        "asset_file_category": category,
        "file_size": len(data),
        "file_md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
        "file_type": name.rsplit(".", 1)[-1],
        # A 24-hour bearer URL: never in XCom, an event or a log.
        "download_url": f"https://obs.example.test/{name}?AccessKeyId=AK&Expires=1795000000&Signature=s3cr3t",
    }


def asset(state: str = "ACTIVED", files: list[dict[str, Any]] | None = None, **fields: Any) -> DigitalAsset:
    """The job's model asset in ``state``, parsed by the model's own parser (one MAIN file by default)."""
    return DigitalAsset.from_api(
        {
            "project_id": PROJECT_ID,
            "asset_id": ASSET_ID,
            "asset_name": "model_1",
            "asset_type": "HUMAN_MODEL",
            "asset_state": state,
            "create_time": "2026-11-24T09:30:15Z",
            "files": [asset_file()] if files is None else files,
            **fields,
        }
    )


def patch_job_reads(*jobs: PictureModelingJob | BaseException) -> mock.MagicMock:
    """Make the hook's job-details read return ``jobs`` in turn (an exception is raised).

    The caller stops the patch with :func:`mock.patch.stopall` (the ``hook_reads`` fixtures do).
    """
    reads = mock.MagicMock(side_effect=list(jobs))
    mock.patch.object(MetaStudioHook, "get_picture_modeling_job", reads).start()
    return reads


def context(try_number: int = 1, **ti_attrs: Any) -> dict[str, Any]:
    """A bare task context: a mocked task instance of ``try_number`` (XCom pushes are recorded)."""
    ti = mock.MagicMock(try_number=try_number, **ti_attrs)
    return {"ti": ti}


def pushed(ctx: dict[str, Any]) -> dict[str, Any]:
    """The XComs the task pushed, by key; fails if any key was pushed more than once."""
    calls = [c.kwargs for c in ctx["ti"].xcom_push.call_args_list]
    counts = Counter(c["key"] for c in calls)
    assert all(n == 1 for n in counts.values()), f"pushed more than once: {counts}"
    return {c["key"]: c["value"] for c in calls}


def push_counts(ctx: dict[str, Any]) -> Counter[str]:
    """How many times each XCom key was pushed."""
    return Counter(c.kwargs["key"] for c in ctx["ti"].xcom_push.call_args_list)
