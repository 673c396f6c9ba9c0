"""Copy a model asset's files (GLB model, cover, ...) to any path or object store, verified by MD5."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow_provider_metastudio._compat import BaseOperator, object_storage_path
from airflow_provider_metastudio.asset_events import emit_outlet_events
from airflow_provider_metastudio.assets import FILE_CATEGORIES, AssetFile
from airflow_provider_metastudio.exceptions import (
    MetaStudioAssetFailedError,
    MetaStudioChecksumError,
    MetaStudioValidationError,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.lineage import model_dataset, operator_lineage, path_dataset

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
#: A checksum mismatch is downloaded again this many times before the task fails naming the file.
CHECKSUM_RETRIES = 1


class MetaStudioDownloadModelAssetOperator(BaseOperator):
    """Copy the files of a usable (``ACTIVED``) model asset to ``destination`` and write a manifest.

    Each file is streamed from its pre-signed URL (read fresh from the asset call, never from XCom)
    through Airflow's ``ObjectStoragePath`` (a local folder, ``file://``, ``s3://``, ``gs://``...)
    and checked against the asset's size and MD5. A file already at the destination with the right
    size and MD5 is not downloaded again (a re-run costs one asset read). A mismatch is downloaded
    once more, then the task fails naming the file, and the bad copy is removed.

    ``manifest.json`` lists, per file: ``file_name``, ``category``, ``size``, ``md5`` (base64, as
    the service lists it), ``path`` and ``status`` (``downloaded`` or ``present``). XCom: the
    return value is the manifest (with ``manifest_path``), key ``paths`` the written paths. Outlet
    assets/datasets get ``model_asset_id``, ``job_id``, ``paths`` and ``manifest_path`` in ``extra``.

    :param asset_id: the asset (templated), usually a job's ``model_asset_id``.
    :param destination: a folder path or URI (templated); the files keep the service's names.
    :param categories: which files, by ``asset_file_category`` (default MAIN and COVER). A category
        the asset lacks (a PARTIAL_SUCCEED model has no cover) is logged, not an error.
    :param job_id: optional, only carried into the manifest and outlet events (templated).
    :param manifest_name: file name of the manifest in ``destination``.
    """

    template_fields: Sequence[str] = ("asset_id", "destination", "job_id")
    ui_color = "#c7000b"

    def __init__(
        self,
        *,
        asset_id: str,
        destination: Any,
        categories: Sequence[str] = ("MAIN", "COVER"),
        job_id: str | None = None,
        manifest_name: str = "manifest.json",
        metastudio_conn_id: str = MetaStudioHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(categories, str):
            categories = (categories,)
        unknown = [c for c in categories if c not in FILE_CATEGORIES]
        if not categories or unknown:
            raise MetaStudioValidationError(
                "categories", f"{unknown or 'none'} given; choose from {', '.join(FILE_CATEGORIES)}"
            )
        if not _SAFE_NAME.fullmatch(manifest_name):
            raise MetaStudioValidationError(
                "manifest_name", f"{manifest_name!r:.60} is not a plain file name"
            )
        self.asset_id = asset_id
        self.destination = destination
        self.categories = tuple(categories)
        self.job_id = job_id
        self.manifest_name = manifest_name
        self.metastudio_conn_id = metastudio_conn_id
        self._lineage: tuple[str, list[str]] | None = None  # (asset id, written paths) for OpenLineage

    @cached_property
    def hook(self) -> MetaStudioHook:
        return MetaStudioHook(self.metastudio_conn_id)

    def execute(self, context: Any) -> dict[str, Any]:
        asset = self.hook.get_asset(self.asset_id)  # the hook validates the id first
        if not asset.is_usable:
            raise MetaStudioAssetFailedError(
                asset.asset_id,
                asset.state,
                "its files can be downloaded only when ACTIVED (wait with MetaStudioModelAssetSensor)",
            )
        files = asset.files_of(self.categories)
        missing = sorted(set(self.categories) - {f.category for f in files})
        if missing:
            self.log.warning("Model asset %s has no %s file", asset.asset_id, " or ".join(missing))
        folder = object_storage_path(self.destination)
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        used = {self.manifest_name.lower()}  # no file may overwrite the manifest
        for file in files:
            name = _file_name(file, used)
            path = folder / name
            status = self._copy(file, path)
            entries.append(
                {
                    "file_name": file.file_name,
                    "category": file.category,
                    "size": file.size,
                    "md5": file.md5,
                    "path": str(path),
                    "status": status,
                }
            )
        manifest: dict[str, Any] = {
            "model_asset_id": asset.asset_id,
            "job_id": self.job_id or None,
            "asset_name": asset.asset_name,
            "asset_type": asset.asset_type,
            "files": entries,
        }
        manifest_path = folder / self.manifest_name
        with manifest_path.open("w") as f:
            f.write(json.dumps(manifest, indent=2, sort_keys=True))
        manifest["manifest_path"] = str(manifest_path)
        paths = [str(e["path"]) for e in entries]
        ti = context["ti"]
        ti.xcom_push(key="paths", value=paths)
        ti.xcom_push(key="manifest_path", value=str(manifest_path))
        self._lineage = (asset.asset_id, [*paths, str(manifest_path)])
        emit_outlet_events(
            self,
            context,
            model_asset_id=asset.asset_id,
            job_id=self.job_id or None,
            paths=paths,
            manifest_path=str(manifest_path),
        )
        self.log.info(
            "Model asset %s: %d files at %s (%d already present)",
            asset.asset_id,
            len(entries),
            folder,
            sum(e["status"] == "present" for e in entries),
        )
        return manifest

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The model asset in, the written files out (None without the OpenLineage provider)."""
        if self._lineage is None:
            return None
        asset_id, paths = self._lineage
        inputs = [model_dataset(self.hook.config.project_id, asset_id)]
        return operator_lineage(inputs, [path_dataset(p) for p in paths])

    def _copy(self, file: AssetFile, path: Any) -> str:
        """Download ``file`` to ``path`` unless an identical copy is there; ``present``/``downloaded``."""
        if _matches(file, path):
            self.log.info("%s is already at %s with the right MD5; not downloaded again", file.label, path)
            return "present"
        for attempt in range(CHECKSUM_RETRIES + 1):
            try:
                with path.open("wb") as out:
                    got = self.hook.download_asset_file(file, out)
            except MetaStudioChecksumError as e:
                if attempt < CHECKSUM_RETRIES:
                    self.log.warning("%s; downloading it once more", e)
                    continue
                path.unlink(missing_ok=True)  # a later run must not take the bad copy for the file
                raise
            self.log.info("Copied %s (%d bytes) to %s", file.label, got.size, path)
            return "downloaded"
        raise AssertionError("unreachable")  # pragma: no cover


def _matches(file: AssetFile, path: Any) -> bool:
    """Whether ``path`` holds exactly ``file`` (size and MD5 as listed); False when unverifiable."""
    if file.md5_hex is None or not path.exists():
        return False
    digest = hashlib.md5(usedforsecurity=False)  # integrity check, not security
    size = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
            size += len(chunk)
    return (file.size is None or size == file.size) and base64.b64encode(digest.digest()).decode() == file.md5


def _file_name(file: AssetFile, used: set[str]) -> str:
    """The service's file name when it is a plain, unique name; else one built from the category and id.

    The name goes into a path: ``../x``, ``a/b`` or a name the manifest already uses never does.
    """
    name = file.file_name or ""
    if not _SAFE_NAME.fullmatch(name) or name.lower() in used:
        ext = (file.file_type or "bin").lower()
        ext = ext if re.fullmatch(r"[a-z0-9]{1,10}", ext) else "bin"
        ident = re.sub(r"[^A-Za-z0-9_-]", "", file.file_id or "")[:64] or str(len(used))
        name = f"{(file.category or 'file').lower()}_{ident}.{ext}"
    used.add(name.lower())
    return name
