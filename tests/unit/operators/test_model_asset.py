"""MetaStudioDownloadModelAssetOperator: argument checks and file naming (issue #14)."""

from __future__ import annotations

import pytest

from airflow_provider_metastudio.assets import AssetFile
from airflow_provider_metastudio.exceptions import MetaStudioValidationError
from airflow_provider_metastudio.operators.model_asset import MetaStudioDownloadModelAssetOperator, _file_name


def _f(name, category="MAIN", file_id="f-1", file_type="glb"):
    return AssetFile(
        file_id=file_id, file_name=name, category=category, size=1, md5=None, file_type=file_type
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"categories": ["MAIN", "MODEL"]}, "categories"),
        ({"categories": []}, "categories"),
        ({"manifest_name": "../m.json"}, "manifest_name"),
    ],
)
def test_bad_arguments_fail_when_the_task_is_built(kwargs, field):
    with pytest.raises(MetaStudioValidationError, match=field):
        MetaStudioDownloadModelAssetOperator(task_id="d", asset_id="a", destination="/tmp/x", **kwargs)


def test_single_category_string_is_accepted():
    op = MetaStudioDownloadModelAssetOperator(task_id="d", asset_id="a", destination="/x", categories="MAIN")
    assert op.categories == ("MAIN",)


def test_file_names_never_leave_the_folder_nor_collide():
    used = {"manifest.json"}
    assert _file_name(_f("model.glb"), used) == "model.glb"
    assert _file_name(_f("model.glb", "OTHER", "f-2"), used) == "other_f-2.glb"  # duplicate name
    assert _file_name(_f("../../etc/passwd", "COVER", "f/3", "png"), used) == "cover_f3.png"
    assert _file_name(_f("manifest.json", "OTHER", "f-4", "json"), used) == "other_f-4.json"
    assert _file_name(_f(None, "OTHER", "f-5", "tar.gz"), used) == "other_f-5.bin"
