"""MetaStudioDownloadModelAssetOperator: argument checks, file naming (issue #14), and what execute
does with the hook's asset read and downloads (replaced here; no HTTP): files, manifest, XCom."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from testsupport import BAD_JOB_IDS
from testsupport.tasks import ASSET_ID, JOB_ID, asset, asset_file, context, pushed, use_connection

from airflow_provider_metastudio.api import Downloaded
from airflow_provider_metastudio.assets import AssetFile
from airflow_provider_metastudio.exceptions import (
    MetaStudioAssetFailedError,
    MetaStudioChecksumError,
    MetaStudioValidationError,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.operators.model_asset import MetaStudioDownloadModelAssetOperator, _file_name

GLB = b"glTF\x02\x00\x00\x00 model bytes"
PNG = b"\x89PNG\r\n\x1a\n cover bytes"
FILES = {"model.glb": GLB, "cover.png": PNG}


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


# -- execute ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    use_connection(monkeypatch)


@pytest.fixture
def hook():
    """The hook's asset read (an ACTIVED asset with a model and a cover) and file download."""

    def download(file, out):
        data = FILES[file.file_name]
        out.write(data)
        return Downloaded(len(data), file.md5)

    files = [asset_file("model.glb", GLB, "MAIN"), asset_file("cover.png", PNG, "COVER")]
    with (
        mock.patch.object(MetaStudioHook, "get_asset", return_value=asset(files=files)) as get_asset,
        mock.patch.object(MetaStudioHook, "download_asset_file", side_effect=download) as download_file,
    ):
        yield mock.Mock(get_asset=get_asset, download=download_file)


def download_op(tmp_path, **kwargs):
    kwargs = {"task_id": "d", "asset_id": ASSET_ID, "destination": str(tmp_path), "job_id": JOB_ID, **kwargs}
    return MetaStudioDownloadModelAssetOperator(**kwargs)


def test_execute_copies_the_files_writes_the_manifest_and_pushes_the_paths(hook, tmp_path):
    ctx = context()
    manifest = download_op(tmp_path).execute(ctx)
    hook.get_asset.assert_called_once_with(ASSET_ID)
    assert (tmp_path / "model.glb").read_bytes() == GLB and (tmp_path / "cover.png").read_bytes() == PNG
    paths = [str(tmp_path / "model.glb"), str(tmp_path / "cover.png")]
    assert [f["path"] for f in manifest["files"]] == paths
    assert [f["status"] for f in manifest["files"]] == ["downloaded", "downloaded"]
    assert (manifest["model_asset_id"], manifest["job_id"]) == (ASSET_ID, JOB_ID)
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written == {k: v for k, v in manifest.items() if k != "manifest_path"}
    assert "s3cr3t" not in (tmp_path / "manifest.json").read_text()  # no download URL
    assert pushed(ctx) == {"paths": paths, "manifest_path": str(tmp_path / "manifest.json")}


def test_a_second_run_downloads_nothing_already_present(hook, tmp_path):
    download_op(tmp_path).execute(context())
    hook.download.reset_mock()
    manifest = download_op(tmp_path).execute(context())
    hook.download.assert_not_called()
    assert [f["status"] for f in manifest["files"]] == ["present", "present"]


def test_only_the_chosen_categories_are_copied(hook, tmp_path):
    manifest = download_op(tmp_path, categories="COVER").execute(context())
    assert [f["category"] for f in manifest["files"]] == ["COVER"]
    assert not (tmp_path / "model.glb").exists()


def test_a_checksum_mismatch_is_downloaded_once_more_then_fails_and_leaves_no_bad_copy(hook, tmp_path):
    def corrupt(file, out):
        out.write(b"garbage")
        raise MetaStudioChecksumError(file.label, "MD5 mismatch")

    hook.download.side_effect = corrupt
    with pytest.raises(MetaStudioChecksumError, match="MD5 mismatch"):
        download_op(tmp_path, categories="MAIN").execute(context())
    assert hook.download.call_count == 2
    assert not (tmp_path / "model.glb").exists()


@pytest.mark.parametrize("state", ["CREATING", "FAILED", "BLOCK"])
def test_an_asset_that_is_not_actived_fails_before_any_download(hook, tmp_path, state):
    hook.get_asset.return_value = asset(state)
    with pytest.raises(MetaStudioAssetFailedError, match=f"{ASSET_ID} is {state}"):
        download_op(tmp_path).execute(context())
    hook.download.assert_not_called()


@pytest.mark.parametrize("asset_id", BAD_JOB_IDS.values(), ids=list(BAD_JOB_IDS))
def test_a_bad_asset_id_is_refused_naming_the_field_before_any_request(requests_mock, tmp_path, asset_id):
    # The real hook: the id is refused before any request, whichever layer checks it.
    with pytest.raises(MetaStudioValidationError, match="asset_id"):
        download_op(tmp_path, asset_id=asset_id).execute(context())
    assert requests_mock.call_count == 0
