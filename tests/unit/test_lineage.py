"""OpenLineage facets of the operators (issue #14, item 5).

The facets need ``apache-airflow-providers-openlineage`` (never a dependency of this provider): the
tests that read them skip without it, except under ``scripts/run-tests.sh`` on the Airflow lines
whose venv installs it (``METASTUDIO_EXPECT_OPENLINEAGE=1``), where a missing provider fails them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_metastudio.lineage import model_dataset, operator_lineage, path_dataset
from airflow_provider_metastudio.operators.model_asset import MetaStudioDownloadModelAssetOperator
from airflow_provider_metastudio.operators.picture_modeling import MetaStudioCreatePictureModelingJobOperator
from airflow_provider_metastudio.testing._media import make_png

HAS_OPENLINEAGE = importlib.util.find_spec("airflow.providers.openlineage") is not None
requires_openlineage = pytest.mark.skipif(
    not HAS_OPENLINEAGE and not os.environ.get("METASTUDIO_EXPECT_OPENLINEAGE"),
    reason="apache-airflow-providers-openlineage is not installed (pip install '.[openlineage]')",
)
PICTURE_URL = "https://uploader:pw@photos.example.com:8443/faces/face.png?X-Amz-Signature=abc&Expires=9"
FAST = pytest.mark.metastudio_emulator(waiting_seconds=0, processing_seconds=1, asset_active_delay=0, seed=3)


class _TI:
    """What the operators use of a task instance: its ids (the default job name) and XCom pushes."""

    dag_id, task_id, run_id, map_index, try_number = "lineage", "create", "manual__1", -1, 1

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def _context() -> dict[str, Any]:
    return {"ti": _TI(), "outlet_events": {}}


def _pairs(datasets) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets]


def test_dataset_names():
    project, asset = "p" * 32, "a" * 32
    assert model_dataset(project, asset) == (f"metastudio://{project}", f"assets/{asset}")
    assert path_dataset("/data/m/model.glb") == ("file", "/data/m/model.glb")
    assert path_dataset("file:///data/m/model.glb") == ("file", "/data/m/model.glb")
    assert path_dataset("s3://bucket/m/model.glb") == ("s3://bucket", "m/model.glb")
    # Credentials of a URL (user info, a pre-signed query) never become part of a dataset name.
    assert path_dataset(PICTURE_URL) == ("https://photos.example.com:8443", "faces/face.png")
    assert path_dataset("HTTPS://Photos.example.com/f.png#x") == ("https://photos.example.com", "f.png")


def test_no_lineage_without_the_openlineage_provider(monkeypatch, tmp_path):
    # A None entry in sys.modules makes the import fail as if the provider were not installed.
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)
    assert operator_lineage([("file", "/in")], [("file", "/out")]) is None
    op = MetaStudioCreatePictureModelingJobOperator(task_id="c", picture_url=PICTURE_URL, style_id="s")
    assert op.get_openlineage_facets_on_complete(None) is None
    op._lineage_outputs = [model_dataset("p" * 32, "a" * 32)]
    assert op.get_openlineage_facets_on_complete(None) is None


@requires_openlineage
def test_nothing_to_report_before_the_task_ran():
    op = MetaStudioCreatePictureModelingJobOperator(task_id="c", picture_url=PICTURE_URL, style_id="s")
    assert op.get_openlineage_facets_on_complete(None) is None
    dl = MetaStudioDownloadModelAssetOperator(task_id="d", asset_id="a" * 32, destination="/tmp/x")
    assert dl.get_openlineage_facets_on_complete(None) is None


@requires_openlineage
@FAST
def test_create_by_url_reports_the_picture_the_model_and_the_cover(
    metastudio_emulator, metastudio_connection, tmp_path
):
    from airflow.providers.openlineage.extractors import OperatorLineage

    op = MetaStudioCreatePictureModelingJobOperator(
        task_id="create",
        picture_url=PICTURE_URL,
        style_id="system_female_001",
        name="lineage-url",
        poll_interval=0.2,
        timeout=60,
        cover_destination=f"{tmp_path}/covers/",
    )
    result = op.execute(_context())

    lineage = op.get_openlineage_facets_on_complete(None)
    assert isinstance(lineage, OperatorLineage)
    assert _pairs(lineage.inputs) == [("https://photos.example.com:8443", "faces/face.png")]
    assert _pairs(lineage.outputs) == [
        (f"metastudio://{metastudio_emulator.project_id}", f"assets/{result['model_asset_id']}"),
        ("file", result["model_cover_path"]),
    ]
    assert "Signature" not in repr(lineage) and "pw@" not in repr(lineage)


@requires_openlineage
@FAST
def test_create_from_an_uploaded_photo_without_waiting(metastudio_emulator, metastudio_connection, tmp_path):
    photo = tmp_path / "face.png"
    photo.write_bytes(make_png())
    op = MetaStudioCreatePictureModelingJobOperator(
        task_id="create", photo=str(photo), style_id="system_male_001", wait_for_completion=False
    )
    context = _context()
    op.execute(context)

    lineage = op.get_openlineage_facets_on_complete(None)
    asset_id = context["ti"].xcoms["model_asset_id"]
    assert _pairs(lineage.inputs) == [("file", str(photo))]
    assert _pairs(lineage.outputs) == [
        (f"metastudio://{metastudio_emulator.project_id}", f"assets/{asset_id}")
    ]


@requires_openlineage
@FAST
def test_create_from_photo_bytes_has_the_model_but_no_input(metastudio_emulator, metastudio_connection):
    op = MetaStudioCreatePictureModelingJobOperator(
        task_id="create", photo=make_png(), style_id="system_male_001", wait_for_completion=False
    )
    op.execute(_context())
    lineage = op.get_openlineage_facets_on_complete(None)
    assert lineage.inputs == [] and [d.namespace for d in lineage.outputs] == [
        f"metastudio://{metastudio_emulator.project_id}"
    ]


@requires_openlineage
@FAST
def test_download_reports_the_model_in_and_the_written_files_out(
    metastudio_emulator, metastudio_connection, tmp_path
):
    emu = metastudio_emulator
    asset_id = emu.jobs.create("lineage-download")["model_asset_id"]
    emu.clock.advance(10)  # the job succeeded and its asset is ACTIVED
    op = MetaStudioDownloadModelAssetOperator(
        task_id="download", asset_id=asset_id, destination=str(tmp_path)
    )
    context = _context()
    manifest = op.execute(context)

    lineage = op.get_openlineage_facets_on_complete(None)
    assert _pairs(lineage.inputs) == [(f"metastudio://{emu.project_id}", f"assets/{asset_id}")]
    written = [*context["ti"].xcoms["paths"], manifest["manifest_path"]]
    assert written == [
        str(tmp_path / "model.glb"),
        str(tmp_path / "cover.png"),
        str(tmp_path / "manifest.json"),
    ]
    assert _pairs(lineage.outputs) == [("file", p) for p in written]


@requires_openlineage
def test_openlineage_extractor_uses_the_operator_facets():
    """The provider's own extractor machinery picks our method up (the listener calls it)."""
    from airflow.providers.openlineage.extractors.manager import ExtractorManager

    op = MetaStudioCreatePictureModelingJobOperator(task_id="c", picture_url=PICTURE_URL, style_id="s")
    op._lineage_outputs = [model_dataset("p" * 32, "a" * 32)]
    extractor = ExtractorManager().get_extractor_class(op)
    assert extractor is not None
    lineage = extractor(op).extract_on_complete(SimpleNamespace(task=op))
    assert _pairs(lineage.outputs) == [(f"metastudio://{'p' * 32}", f"assets/{'a' * 32}")]
