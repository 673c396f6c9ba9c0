"""Picture-modeling jobs and their covers: the job store, outcomes, and the service's job calls.

Job states are never advanced by a background thread: each is computed from the emulated clock when
it is read, so ``clock.advance()`` moves every job at once and a test never waits for a scheduler.
"""

from __future__ import annotations

import fnmatch
import math
import random
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_metastudio.testing import _job_requests
from airflow_provider_metastudio.testing._clock import rfc3339
from airflow_provider_metastudio.testing._config import (
    CALL_CREATE,
    CALL_CREATE_BY_URL,
    JOB_STATES,
    TERMINAL_STATES,
)
from airflow_provider_metastudio.testing._media import ImageInfo, cover_png
from airflow_provider_metastudio.testing._replies import Reply, error_reply, json_reply, obs_error

if TYPE_CHECKING:
    from airflow_provider_metastudio.testing._faults import Faults
    from airflow_provider_metastudio.testing._recorder import Recorder
    from airflow_provider_metastudio.testing._shared import Shared

# No published MetaStudio error code for "this picture-modeling job does not exist" could be found:
# the service's error table lists MSS.10001001 "Asset not found" for assets only. Following the
# project's contract notes, an unknown job is 404 with the generic invalid-parameter code.
NOT_FOUND_CODE = "MSS.00000003"
NOT_FOUND_MSG = "Job not found"
DEFAULT_FAILURE = ("MSS.00000009", "Picture modeling failed")

_STATE_WORD = re.compile(r"[A-Z][A-Z0-9_]{0,63}")

# (state, start_time, end_time, update_time) of a job, in emulated unix seconds.
Timeline = tuple[str, float | None, float | None, float]


@dataclass
class Job:
    """One picture-modeling job; its state is derived from the clock (see :meth:`timeline`)."""

    job_id: str
    seq: int
    project_id: str
    name: str
    style_id: str
    model_asset_id: str
    create_time: float
    waiting_seconds: float
    processing_seconds: float
    outcome: str
    error_info: dict[str, str] | None
    cover_key: str
    source: str
    picture_url: str | None = None
    notify_url: str | None = None
    image: ImageInfo | None = None
    image_sha256: str | None = None
    forced_state: str | None = None
    forced_at: float | None = None

    def timeline(self, now: float, *, lag: float = 0.0) -> Timeline:
        """``(state, start_time, end_time, update_time)`` at emulated time ``now``.

        :param lag: a read replica's delay: a job that ended less than ``lag`` seconds ago still
            shows what it was just before it ended.
        """
        view = self._timeline(now)
        state, _, end, _ = view
        if lag > 0 and end is not None and state in TERMINAL_STATES and now < end + lag:
            # The natural lifecycle just before the end: for a forced end, what it interrupted.
            return self._timeline(end - 1e-6, natural=True)
        return view

    def _timeline(self, now: float, *, natural: bool = False) -> Timeline:
        start_at = self.create_time + self.waiting_seconds
        end_at = start_at + self.processing_seconds
        if not natural and self.forced_state is not None and self.forced_at is not None:
            at = self.forced_at
            state = self.forced_state
            started = start_at if at >= start_at else None
            if state == "WAITING":
                return state, None, None, at
            if state == "CANCELED":
                return state, started, at, at
            if state in TERMINAL_STATES:
                return state, started if started is not None else at, at, at
            # PROCESSING, or a state the contract does not list (to test clients' handling of
            # unknown values): started, not ended.
            return state, started if started is not None else at, None, at
        if now < start_at:
            return "WAITING", None, None, self.create_time
        if now < end_at:
            return "PROCESSING", start_at, None, start_at
        return self.outcome, start_at, end_at, end_at


class Jobs:
    """Every job of every tenant, its outcome rules, and the calls that show, list and create jobs.

    :param faults: consulted for per-job error answers and list quirks.
    :param recorder: told about jobs created through the API.
    """

    def __init__(self, shared: Shared, faults: Faults, recorder: Recorder) -> None:
        self._shared = shared
        self._faults = faults
        self._recorder = recorder
        self._jobs: dict[str, Job] = {}
        self._seq = 0
        self._outcomes_by_name: dict[str, str] = dict(shared.config.outcomes_by_name)
        self._outcome_weights: dict[str, float] = dict(shared.config.outcome_weights)

    # ---------------------------------------------------------------- for tests

    def create(
        self,
        name: str = "emulated_model",
        style_id: str = "system_male_001",
        *,
        project_id: str | None = None,
        outcome: str | None = None,
        waiting_seconds: float | None = None,
        processing_seconds: float | None = None,
        error_code: str | None = None,
        error_msg: str | None = None,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a job directly (no HTTP, no quota, not counted as an API create).

        :param name: model name (also matched against the outcome patterns).
        :param style_id: style id (not validated here, so tests can seed odd data).
        :param project_id: owning project; the primary one by default.
        :param outcome: terminal state to end in; else patterns, then weights decide.
        :param waiting_seconds: emulated seconds in WAITING (config default otherwise).
        :param processing_seconds: emulated seconds in PROCESSING.
        :param error_code: error code shown when the job FAILED.
        :param error_msg: error message shown when the job FAILED.
        :param job_id: an explicit job id (e.g. to replay a recorded request).
        :return: the job as the service shows it.
        """
        job = self.add(
            project_id=project_id or self._shared.config.project_id,
            name=name,
            style_id=style_id,
            source="admin",
            outcome=outcome,
            waiting_seconds=waiting_seconds,
            processing_seconds=processing_seconds,
            error_code=error_code,
            error_msg=error_msg,
            job_id=job_id,
        )
        return self.info(job)

    def get(self, job_id: str) -> dict[str, Any]:
        """The job as ``GET picture-modelings/{job_id}`` would show it now.

        :raises KeyError: no such job.
        """
        return self.info(self.find(job_id))

    def record(self, job_id: str) -> dict[str, Any]:
        """Everything known about a job: service view, outcome, durations, uploaded image digest.

        :raises KeyError: no such job.
        """
        return self.record_of(self.find(job_id))

    def records(self) -> list[dict[str, Any]]:
        """Every job's record, in creation order."""
        return [self.record_of(j) for j in sorted(self.all(), key=lambda j: j.seq)]

    def _pick_outcome(self, name: str, rng: random.Random) -> str:
        for pattern, state in self._outcomes_by_name.items():
            if fnmatch.fnmatchcase(name, pattern):
                return state
        weights = self._outcome_weights or {"SUCCEED": 1.0}
        states = sorted(weights)  # sorted: the draw must not depend on dict insertion order
        return rng.choices(states, weights=[weights[s] for s in states])[0]

    def add(
        self,
        *,
        project_id: str,
        name: str,
        style_id: str,
        source: str,
        outcome: str | None = None,
        waiting_seconds: float | None = None,
        processing_seconds: float | None = None,
        error_code: str | None = None,
        error_msg: str | None = None,
        job_id: str | None = None,
        picture_url: str | None = None,
        notify_url: str | None = None,
        image: ImageInfo | None = None,
        image_sha256: str | None = None,
    ) -> Job:
        """Create a job. Outcome: ``outcome`` if given, else the first matching name pattern,
        else a draw from the outcome weights; durations get their seeded jitter."""
        if outcome is not None and outcome not in TERMINAL_STATES:
            raise ValueError(f"outcome {outcome!r} is not one of {', '.join(TERMINAL_STATES)}")
        with self._shared.lock:
            if job_id is not None and job_id in self._jobs:
                raise ValueError(f"job {job_id!r} already exists")
            self._seq += 1
            seq = self._seq
            # One RNG per job, seeded by (seed, sequence): the n-th job of a run always gets the
            # same outcome and durations, whatever other requests were interleaved.
            config = self._shared.config
            rng = random.Random(f"metastudio-emulator-job:{config.seed}:{seq}")
            drawn_outcome = self._pick_outcome(name, rng)
            wait_jitter = rng.uniform(0.0, config.waiting_jitter) if config.waiting_jitter else 0.0
            proc_jitter = rng.uniform(0.0, config.processing_jitter) if config.processing_jitter else 0.0
            failure = rng.choice(list(config.failure_errors)) if config.failure_errors else DEFAULT_FAILURE
            final = outcome or drawn_outcome
            error_info = None
            if final == "FAILED" or error_code or error_msg:
                error_info = {"error_code": error_code or failure[0], "error_msg": error_msg or failure[1]}
            job = Job(
                job_id=job_id or f"{uuid.uuid4()}_SMS",
                seq=seq,
                project_id=project_id,
                name=name,
                style_id=style_id,
                model_asset_id=uuid.uuid4().hex,
                create_time=self._shared.now(),
                waiting_seconds=(config.waiting_seconds + wait_jitter)
                if waiting_seconds is None
                else float(waiting_seconds),
                processing_seconds=(config.processing_seconds + proc_jitter)
                if processing_seconds is None
                else float(processing_seconds),
                outcome=final,
                error_info=error_info,
                cover_key=secrets.token_hex(16),
                source=source,
                picture_url=picture_url,
                notify_url=notify_url,
                image=image,
                image_sha256=image_sha256,
            )
            if job.waiting_seconds < 0 or job.processing_seconds < 0:
                raise ValueError("durations must not be negative")
            self._jobs[job.job_id] = job
            if source in (CALL_CREATE, CALL_CREATE_BY_URL):
                self._recorder.job_created(source)
            return job

    def find(self, job_id: str) -> Job:
        """The job itself (not a view of it).

        :raises KeyError: no such job.
        """
        with self._shared.lock:
            try:
                return self._jobs[job_id]
            except KeyError:
                raise KeyError(f"no job {job_id!r}") from None

    def all(self) -> list[Job]:
        """Every job, in creation order."""
        with self._shared.lock:
            return list(self._jobs.values())

    def delete(self, job_id: str) -> None:
        """Make a job vanish: the details call answers 404 as for an unknown job, lists omit it.

        :raises KeyError: no such job.
        """
        with self._shared.lock:
            self.find(job_id)
            del self._jobs[job_id]

    def set_state(
        self, job_id: str, state: str, *, error_code: str | None = None, error_msg: str | None = None
    ) -> dict[str, Any]:
        """Pin a job to ``state`` from now on (e.g. ``CANCELED``); the lifecycle no longer moves it.

        :param job_id: the job.
        :param state: any job state, or an upper-case word the contract does not list (e.g.
            ``ARCHIVING``: the job then shows it as a started, unfinished job), to test handling of
            unknown states.
        :param error_code: error code to show if the state is FAILED.
        :param error_msg: error message to show if the state is FAILED.
        :return: the job as the service now shows it.
        """
        if not isinstance(state, str) or not _STATE_WORD.fullmatch(state):
            raise ValueError(f"state {state!r} must be an upper-case word such as {', '.join(JOB_STATES)}")
        with self._shared.lock:
            job = self.find(job_id)
            job.forced_state = state
            job.forced_at = self._shared.now()
            if error_code or error_msg:
                job.error_info = {
                    "error_code": error_code or DEFAULT_FAILURE[0],
                    "error_msg": error_msg or DEFAULT_FAILURE[1],
                }
            elif state == "FAILED" and job.error_info is None:
                code, msg = (list(self._shared.config.failure_errors) or [DEFAULT_FAILURE])[0]
                job.error_info = {"error_code": code, "error_msg": msg}
            return self.info(job)

    def set_outcome(self, pattern: str, state: str | None) -> None:
        """Jobs created from now on whose name matches ``pattern`` (fnmatch) end in ``state``.

        :param pattern: e.g. ``"*fail*"``; the first matching pattern (insertion order) wins.
        :param state: a terminal state, or ``None`` to remove the pattern.
        """
        with self._shared.lock:
            if state is None:
                self._outcomes_by_name.pop(pattern, None)
                return
            if state not in TERMINAL_STATES:
                raise ValueError(f"outcome {state!r} is not one of {', '.join(TERMINAL_STATES)}")
            self._outcomes_by_name[pattern] = state

    def set_outcome_weights(self, weights: Mapping[str, float]) -> None:
        """Relative weights of the terminal states for jobs no pattern matches (seeded draw).

        :param weights: e.g. ``{"SUCCEED": 0.8, "FAILED": 0.2}``.
        """
        for state, weight in weights.items():
            if state not in TERMINAL_STATES or float(weight) < 0:
                raise ValueError(f"bad outcome weight {state!r}: {weight!r}")
        if sum(float(w) for w in weights.values()) <= 0:
            raise ValueError("outcome weights must have a positive total")
        with self._shared.lock:
            self._outcome_weights = {k: float(v) for k, v in weights.items()}

    def outcomes(self) -> dict[str, Any]:
        """The name patterns and weights in force."""
        with self._shared.lock:
            return {"patterns": dict(self._outcomes_by_name), "weights": dict(self._outcome_weights)}

    def clear_outcomes(self) -> None:
        """Remove every name pattern (the weights are kept)."""
        with self._shared.lock:
            self._outcomes_by_name.clear()

    # ---------------------------------------------------------------- views

    def cover_url(self, job: Job, now: float) -> str:
        path = f"/obs/{job.project_id}/{job.model_asset_id}/{job.cover_key}.png"
        return self._shared.presigned_url(path, self._shared.config.cover_ttl, now)

    def info(self, job: Job, now: float | None = None, *, lag: float = 0.0) -> dict[str, Any]:
        """The job as the service shows it (PictureModelingInfo); ``lag``: see :meth:`Job.timeline`."""
        now = self._shared.now() if now is None else now
        state, start, end, _ = job.timeline(now, lag=lag)
        info: dict[str, Any] = {
            "job_id": job.job_id,
            "state": state,
            "start_time": rfc3339(start),
            "end_time": rfc3339(end),
            "error_info": dict(job.error_info) if state == "FAILED" and job.error_info else None,
            "model_asset_id": job.model_asset_id,
            "name": job.name,
            "style_id": job.style_id,
        }
        if state == "SUCCEED":
            info["model_cover_url"] = self.cover_url(job, now)
        return info

    def record_of(self, job: Job) -> dict[str, Any]:
        """Everything the emulator knows about a job (admin view)."""
        now = self._shared.now()
        state, _, _, update = job.timeline(now)
        return {
            "info": self.info(job, now),
            "job_id": job.job_id,
            "seq": job.seq,
            "project_id": job.project_id,
            "state": state,
            "outcome": job.outcome,
            "forced_state": job.forced_state,
            "create_time": rfc3339(job.create_time),
            "update_time": rfc3339(update),
            "create_timestamp": job.create_time,
            "update_timestamp": update,
            "waiting_seconds": job.waiting_seconds,
            "processing_seconds": job.processing_seconds,
            "source": job.source,
            "picture_url": job.picture_url,
            "notify_url": job.notify_url,
            "image": None
            if job.image is None
            else {
                "kind": job.image.kind,
                "width": job.image.width,
                "height": job.image.height,
                "size": job.image.size,
                "sha256": job.image_sha256,
            },
        }

    # ---------------------------------------------------------------- service calls

    def show(self, project_id: str, job_id: str) -> Reply:
        """``GET picture-modelings/{job_id}``."""
        with self._shared.lock:
            error = self._faults.job_error(job_id)
            if error is not None:
                return error
            job = self._jobs.get(job_id)
            if job is None or job.project_id != project_id:
                return error_reply(404, NOT_FOUND_CODE, NOT_FOUND_MSG)
            return json_reply(200, self.info(job))

    def list_jobs(self, project_id: str, raw_query: str) -> Reply:
        """``GET picture-modelings`` (state filter, sort, paging, creation-time bounds)."""
        query = _job_requests.parse_list_query(raw_query)
        if isinstance(query, Reply):
            return query
        sort_key, sort_dir = query.sort_key, query.sort_dir
        with self._shared.lock:
            now = self._shared.now()
            quirks = self._faults.quirks()
            if quirks.ignore_sort:
                sort_key, sort_dir = "asset_order", "asc"  # creation order, oldest first
            rows: list[tuple[float, int, Job]] = []
            for job in self._jobs.values():
                if job.project_id != project_id:
                    continue
                state, start, _, update = job.timeline(now, lag=quirks.visibility_delay)
                if quirks.stale_update_time:
                    update = job.create_time if start is None else start
                if query.states and state not in query.states:
                    continue
                # Job times are shown in whole seconds, so filters compare whole seconds too.
                created = math.floor(job.create_time)
                if query.create_since is not None and created < query.create_since:
                    continue
                if query.create_until is not None and created > query.create_until:
                    continue
                sort_values = {
                    "create_time": job.create_time,
                    "update_time": update,
                    "asset_order": float(job.seq),
                }
                rows.append((sort_values[sort_key], job.seq, job))
            # Ties are broken by creation sequence, in the same direction as the sort.
            rows.sort(key=lambda r: (r[0], r[1]), reverse=sort_dir == "desc")
            lag = quirks.visibility_delay
            page = [
                self.info(job, now, lag=lag) for _, _, job in rows[query.offset : query.offset + query.limit]
            ]
            return json_reply(200, {"count": len(rows), "picture_modeling_jobs": page})

    def create_from_upload(self, project_id: str, content_type: str | None, body: bytes) -> Reply:
        """``POST picture-modelings`` (multipart photo upload)."""
        request = _job_requests.parse_upload(self._shared.config, content_type, body)
        return self._create(project_id, request, CALL_CREATE)

    def create_from_url(self, project_id: str, content_type: str | None, body: bytes) -> Reply:
        """``POST picture-modelings-by-url``; the photo is never fetched (the emulator only talks to
        its own clients)."""
        request = _job_requests.parse_by_url(content_type, body)
        return self._create(project_id, request, CALL_CREATE_BY_URL)

    def _create(self, project_id: str, request: _job_requests.CreateRequest | Reply, call: str) -> Reply:
        if isinstance(request, Reply):
            return request
        job = self.add(
            project_id=project_id,
            name=request.name,
            style_id=request.style_id,
            source=call,
            picture_url=request.picture_url,
            notify_url=request.notify_url,
            image=request.image,
            image_sha256=request.image_sha256,
        )
        return json_reply(200, {"job_id": job.job_id, "model_asset_id": job.model_asset_id})

    def cover(
        self, project_id: str, asset_id: str, object_name: str, raw_path: str, raw_query: str, request_id: str
    ) -> Reply:
        """Serve a cover PNG for a valid, unexpired pre-signed URL; 403/404 XML otherwise."""
        refused = self._shared.check_presigned(raw_path, raw_query, request_id)
        if refused is not None:
            return refused
        with self._shared.lock:
            job = next((j for j in self._jobs.values() if j.model_asset_id == asset_id), None)
            found = (
                job is not None
                and job.project_id == project_id
                and object_name == f"{job.cover_key}.png"
                and job.timeline(self._shared.now())[0] == "SUCCEED"
            )
        if not found:
            return obs_error(404, "NoSuchKey", "The specified key does not exist.", request_id)
        return Reply(200, cover_png(), "image/png", {"Cache-Control": "private, max-age=0"})

    # ---------------------------------------------------------------- reset

    def reset(self) -> None:
        """Forget every job (outcome rules are kept)."""
        with self._shared.lock:
            self._jobs.clear()
