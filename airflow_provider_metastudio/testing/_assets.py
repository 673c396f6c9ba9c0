"""The emulated asset library: every picture-modeling job's ``model_asset_id`` is an asset here.

Like jobs, an asset's state is derived from the emulated clock when it is read: ``CREATING`` while
its job runs and for ``asset_active_delay`` seconds after the job's SUCCEED/PARTIAL_SUCCEED, then
``ACTIVED`` (or ``FAILED``/``BLOCK`` by a pattern of the job's name); ``FAILED`` when the job failed
or was canceled. An admin may pin any state (e.g. ``DELETED``). None of this timing is stated by the
contract; it is one plausible service a client must cope with.

Files of an ACTIVED ``HUMAN_MODEL``: MAIN (a small valid GLB), COVER (the cover PNG; not for a
PARTIAL_SUCCEED job, whose screenshot failed) and OTHER (a JSON note). Their pre-signed URLs live
under ``/obs/{project}/{asset}/files/{file_id}/{name}`` and expire after ``asset_url_ttl``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from airflow_provider_metastudio._asset_vocabulary import (
    ASSET_SOURCES,
    ASSET_TYPES,
    FILE_CATEGORIES,
    AssetState,
)
from airflow_provider_metastudio.testing._clock import parse_rfc3339, rfc3339
from airflow_provider_metastudio.testing._config import ASSET_OUTCOMES
from airflow_provider_metastudio.testing._job_requests import SORT_KEYS
from airflow_provider_metastudio.testing._media import cover_png, make_glb
from airflow_provider_metastudio.testing._replies import Reply, error_reply, invalid, json_reply, obs_error

if TYPE_CHECKING:
    from airflow_provider_metastudio.testing._jobs import Job, Jobs
    from airflow_provider_metastudio.testing._shared import Shared

ASSET_STATES: tuple[str, ...] = tuple(s.value for s in AssetState)
_CREATING, _FAILED, _ACTIVED = AssetState.CREATING.value, AssetState.FAILED.value, AssetState.ACTIVED.value
_BLOCK, _UNACTIVED = AssetState.BLOCK.value, AssetState.UNACTIVED.value

# The contract does not state the code for an unknown asset id; this one mirrors the job's.
ASSET_NOT_FOUND = ("MSS.00000003", "Asset not found")


@dataclass(frozen=True)
class _File:
    category: str
    file_id: str
    name: str
    content_type: str
    data: bytes


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


class Assets:
    """The model asset of every job, derived from the job's timeline (see the module docstring)."""

    def __init__(self, shared: Shared, jobs: Jobs) -> None:
        self._shared = shared
        self._jobs = jobs
        self.active_delay = float(shared.config.asset_active_delay)
        self.url_ttl = float(shared.config.asset_url_ttl)
        self._outcomes: dict[str, str] = dict(shared.config.asset_outcomes_by_name)
        self._forced: dict[str, tuple[str, float]] = {}  # asset id -> (state, when)
        self._corrupt: dict[tuple[str, str], int] = {}  # (asset id, category) -> downloads left; -1: all
        self._files: dict[str, tuple[_File, ...]] = {}

    # ---------------------------------------------------------------- for tests

    def set_outcome(self, pattern: str, state: str | None) -> None:
        """Assets of jobs whose name matches ``pattern`` end in ``state`` once ready; None removes it."""
        with self._shared.lock:
            if state is None:
                self._outcomes.pop(pattern, None)
                return
            if state not in ASSET_OUTCOMES:
                raise ValueError(f"asset outcome {state!r} is not one of {', '.join(ASSET_OUTCOMES)}")
            self._outcomes[pattern] = state

    def get(self, asset_id: str) -> dict[str, Any]:
        """The asset as ``GET /v1/{project_id}/digital-assets/{asset_id}`` would show it now.

        :raises KeyError: no job has this ``model_asset_id``.
        """
        return self.info(self.job_of(asset_id))

    def file_bytes(self, asset_id: str, category: str = "MAIN") -> bytes:
        """The true content of one of an asset's files (whatever its state).

        :raises KeyError: no such asset.
        :raises StopIteration: the asset has no file of this category.
        """
        return next(f.data for f in self.files(self.job_of(asset_id)) if f.category == category)

    def set_state(self, asset_id: str, state: str) -> dict[str, Any]:
        """Pin an asset to ``state`` from now on (``DELETED``, ``BLOCK``, ``FAILED``, an unknown word).

        :return: the asset as the service now shows it.
        """
        if not isinstance(state, str) or not state.isupper() or not state.replace("_", "").isalnum():
            raise ValueError(f"asset state {state!r} must be an upper-case word such as ACTIVED")
        with self._shared.lock:
            job = self.job_of(asset_id)
            self._forced[asset_id] = (state, self._shared.now())
            return self.info(job)

    def corrupt(self, asset_id: str, category: str = "MAIN", count: int | None = None) -> None:
        """Serve wrong bytes (same length, so only the MD5 tells) for one of an asset's files.

        :param category: the file's ``asset_file_category``.
        :param count: how many downloads are corrupted; None: every one until :meth:`reset`.
        """
        if category not in FILE_CATEGORIES:
            raise ValueError(f"category {category!r} is not one of {', '.join(FILE_CATEGORIES)}")
        with self._shared.lock:
            self.job_of(asset_id)
            self._corrupt[(asset_id, category)] = -1 if count is None else int(count)

    def clear_corruption(self, asset_id: str | None = None) -> None:
        """Serve the true bytes again, for one asset or (None) every asset."""
        with self._shared.lock:
            for key in [k for k in self._corrupt if asset_id is None or k[0] == asset_id]:
                del self._corrupt[key]

    def reset(self) -> None:
        """Forget pinned states, corruptions and cached files (outcome patterns are kept)."""
        with self._shared.lock:
            self._forced.clear()
            self._corrupt.clear()
            self._files.clear()

    # ---------------------------------------------------------------- views

    def job_of(self, asset_id: str) -> Job:
        """The job whose ``model_asset_id`` this is.

        :raises KeyError: no such asset.
        """
        with self._shared.lock:
            for job in self._jobs.all():
                if job.model_asset_id == asset_id:
                    return job
        raise KeyError(f"no asset {asset_id!r}")

    def timeline(self, job: Job, now: float) -> tuple[str, float]:
        """``(asset_state, update_time)`` of a job's asset at emulated time ``now``."""
        forced = self._forced.get(job.model_asset_id)
        if forced is not None:
            return forced
        state, _, end, _ = job.timeline(now)
        if state in ("SUCCEED", "PARTIAL_SUCCEED") and end is not None:
            ready = end + self.active_delay
            if now < ready:
                return _CREATING, job.create_time
            outcome = next(
                (s for p, s in self._outcomes.items() if fnmatch.fnmatchcase(job.name, p)), _ACTIVED
            )
            return outcome, ready
        if state in ("FAILED", "CANCELED") and end is not None:
            return _FAILED, end
        return _CREATING, job.create_time

    def files(self, job: Job) -> tuple[_File, ...]:
        cached = self._files.get(job.model_asset_id)
        if cached is None:
            seed = hashlib.sha256(job.model_asset_id.encode()).hexdigest()
            meta = {"job_id": job.job_id, "style_id": job.style_id, "generator": "metastudio-emulator"}
            files = [_File("MAIN", seed[:32], "model.glb", "model/gltf-binary", make_glb(job.name))]
            if job.outcome != "PARTIAL_SUCCEED":  # its cover screenshot failed
                files.append(_File("COVER", seed[32:64], "cover.png", "image/png", cover_png()))
            meta_id = hashlib.sha256(seed.encode()).hexdigest()[:32]
            files.append(
                _File("OTHER", meta_id, "model_meta.json", "application/json", json.dumps(meta).encode())
            )
            cached = self._files[job.model_asset_id] = tuple(files)
        return cached

    def info(self, job: Job, now: float | None = None) -> dict[str, Any]:
        """The asset as ``ShowAssetResponse`` (and the list's items) shows it."""
        now = self._shared.now() if now is None else now
        state, update = self.timeline(job, now)
        files: list[dict[str, Any]] = []
        if state in (_ACTIVED, _BLOCK, _UNACTIVED):
            for f in self.files(job):
                entry: dict[str, Any] = {
                    "file_id": f.file_id,
                    "file_name": f.name,
                    "file_md5": _md5_b64(f.data),
                    "file_size": len(f.data),
                    "file_type": f.name.rsplit(".", 1)[-1],
                    "asset_file_category": f.category,
                    "state": _BLOCK if state == _BLOCK else "CREATED",
                }
                if state != _BLOCK:  # a frozen asset's files cannot be viewed
                    path = f"/obs/{job.project_id}/{job.model_asset_id}/files/{f.file_id}/{f.name}"
                    entry["download_url"] = self._shared.presigned_url(path, self.url_ttl, now)
                files.append(entry)
        info: dict[str, Any] = {
            "project_id": job.project_id,
            "asset_id": job.model_asset_id,
            "produce_id": job.job_id,
            "asset_name": job.name,
            "asset_description": "",
            "create_time": rfc3339(job.create_time),
            "update_time": rfc3339(update),
            "asset_type": "HUMAN_MODEL",
            "asset_state": state,
            "tags": ["picture-modeling", job.style_id],
            "system_properties": [],
            "files": files,
            "asset_order": job.seq,
            "supported_service": [],
        }
        if state == _BLOCK:
            info["block_reason_code"] = "EMU.BLOCK"
            info["reason"] = "frozen by the emulator"
        if state == _FAILED:
            info["reason"] = (job.error_info or {}).get("error_msg") or "the model could not be stored"
        return info

    # ---------------------------------------------------------------- service calls

    def show(self, project_id: str, asset_id: str) -> Reply:
        with self._shared.lock:
            try:
                job = self.job_of(asset_id)
            except KeyError:
                job = None
            if job is None or job.project_id != project_id:
                return error_reply(404, *ASSET_NOT_FOUND)
            return json_reply(200, self.info(job))

    def list(self, project_id: str, raw_query: str) -> Reply:
        query = parse_qs(raw_query, keep_blank_values=True)

        def single(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        def csv(name: str, allowed: tuple[str, ...]) -> set[str] | Reply:
            found: set[str] = set()
            for raw in query.get(name, []):
                for item in (s.strip() for s in raw.split(",")):
                    if item and item not in allowed:
                        return invalid(name, f"{item[:40]!r} is not allowed")
                    if item:
                        found.add(item)
            return found

        states = csv("asset_state", ASSET_STATES)
        if not isinstance(states, set):
            return states
        types = csv("asset_type", ASSET_TYPES)
        if not isinstance(types, set):
            return types
        sort_key = single("sort_key") or "create_time"
        if sort_key not in SORT_KEYS:
            return invalid("sort_key", "must be create_time, update_time or asset_order")
        sort_dir = (single("sort_dir") or "asc").lower()
        if sort_dir not in ("asc", "desc"):
            return invalid("sort_dir", "must be asc or desc")
        source = single("asset_source") or "CUSTOMIZATION"
        if source not in ASSET_SOURCES:
            return invalid("asset_source", "must be SYSTEM, CUSTOMIZATION or ALL")
        try:
            offset = int(single("offset") or "0")
            limit = int(single("limit") or "10")
        except ValueError:
            return invalid("offset/limit", "must be integers")
        if not 0 <= offset <= 2147483647 or not 1 <= limit <= 100:
            return invalid("offset/limit", "offset 0-2147483647, limit 1-100")
        bounds: dict[str, float] = {}
        for name in ("start_time", "end_time"):
            value = single(name)
            if value:
                try:
                    bounds[name] = parse_rfc3339(value)
                except ValueError:
                    return invalid(name, "must be an RFC 3339 date-time")
        name_filter = (single("name") or "").lower()
        style = single("style_id")
        with self._shared.lock:
            now = self._shared.now()
            rows: list[tuple[float, int, dict[str, Any]]] = []
            for job in self._jobs.all():
                if job.project_id != project_id or source == "SYSTEM":  # every model is the tenant's
                    continue
                info = self.info(job, now)
                created = math.floor(job.create_time)
                if (
                    (states and info["asset_state"] not in states)
                    or (types and info["asset_type"] not in types)
                    or (style and job.style_id != style)
                    or (name_filter and name_filter not in job.name.lower())
                    or ("start_time" in bounds and created < bounds["start_time"])
                    or ("end_time" in bounds and created > bounds["end_time"])
                ):
                    continue
                _, update = self.timeline(job, now)
                key = {"create_time": job.create_time, "update_time": update, "asset_order": float(job.seq)}
                rows.append((key[sort_key], job.seq, info))
            rows.sort(key=lambda r: (r[0], r[1]), reverse=sort_dir == "desc")
            page = [info for _, _, info in rows[offset : offset + limit]]
            return json_reply(200, {"count": len(rows), "assets": page})

    def download(
        self, project_id: str, asset_id: str, file_id: str, raw_path: str, raw_query: str, request_id: str
    ) -> Reply:
        """Serve a file for a valid, unexpired pre-signed URL (OBS-style 403/404 XML otherwise)."""
        refused = self._shared.check_presigned(raw_path, raw_query, request_id)
        if refused is not None:
            return refused
        with self._shared.lock:
            try:
                job = self.job_of(asset_id)
            except KeyError:
                job = None
            found = None
            if job is not None and job.project_id == project_id:
                state, _ = self.timeline(job, self._shared.now())
                if state == _BLOCK:
                    return obs_error(403, "AccessDenied", "The object is frozen", request_id)
                if state in (_ACTIVED, _UNACTIVED):
                    found = next((f for f in self.files(job) if f.file_id == file_id), None)
            if found is None:
                return obs_error(404, "NoSuchKey", "The specified key does not exist.", request_id)
            data = found.data
            key = (asset_id, found.category)
            left = self._corrupt.get(key)
            if left is not None and left != 0:
                if left == 1:
                    del self._corrupt[key]
                elif left > 1:
                    self._corrupt[key] = left - 1
                # Same length, different bytes: only the MD5 check can tell.
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
        return Reply(200, data, found.content_type, {"Cache-Control": "private, max-age=0"})

    def settings(self) -> Mapping[str, Any]:
        """Activation delay, URL lifetime, outcome patterns, pinned states and corruptions."""
        with self._shared.lock:
            return {
                "active_delay": self.active_delay,
                "url_ttl": self.url_ttl,
                "outcomes": dict(self._outcomes),
                "forced": {k: v[0] for k, v in self._forced.items()},
                "corrupt": {f"{a}/{c}": n for (a, c), n in self._corrupt.items()},
            }
