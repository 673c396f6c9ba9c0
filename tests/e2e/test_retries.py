"""One job per task run, across task retries: real Airflow (``dag.test()``) against the emulator.

Each scenario makes the create task's first try fail *after* the service accepted the create; with
``retries=2`` the next try must adopt that job (found through the list call by its default,
per-run name) rather than pay for a second one. ``dag.test()`` runs retries on every supported
Airflow line (2.11, 3.0, 3.3): a failed try goes UP_FOR_RETRY, and its loop schedules the task again
with ``try_number + 1`` once ``retry_delay`` has passed, through the same task runner as the first
try (the try number the operator sees is Airflow's own). ``tries`` below proves the retry happened.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.testing import MetaStudioEmulator

pytestmark = pytest.mark.metastudio_emulator(waiting_seconds=1, processing_seconds=5, seed=12)

MODES = ("blocking", "deferrable")
HOOK_RETRIES = 5  # MetaStudioHook's default retry_limit: a read fault injected 6 times outlasts it


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the hook's retries (so a fault really has to outlast them) but not their seconds of backoff."""
    defaults = dict(MetaStudioHook.__init__.__kwdefaults__)
    assert defaults["retry_limit"] == HOOK_RETRIES
    monkeypatch.setattr(MetaStudioHook.__init__, "__kwdefaults__", {**defaults, "retry_delay": 0.01})


def _dropped_create(emu: MetaStudioEmulator, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    emu.faults.inject("create_by_url", "drop_after")  # the service made the job; the answer is lost


def _empty_create(emu: MetaStudioEmulator, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    emu.faults.inject("create_by_url", "empty")  # 200 without a body: the job exists, its id is unknown


def _wait_errors(emu: MetaStudioEmulator, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if mode == "blocking":  # a read fault that outlasts the hook's retries
        emu.faults.inject("show", "500", HOOK_RETRIES + 1)
        return
    # A deferred wait outlives transient faults by design (the shared poller backs off and keeps
    # it), so its error here is the trigger's own: the first one fails with an error event.
    from airflow_provider_metastudio.exceptions import MetaStudioServerError
    from airflow_provider_metastudio.triggers import picture_modeling as trigger_module

    real = trigger_module.watch_job
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise MetaStudioServerError("MetaStudio list failed: HTTP 500 (injected)", status=500)
        return real(*args, **kwargs)

    monkeypatch.setattr(trigger_module, "watch_job", failing_once)


def _wait_times_out(emu: MetaStudioEmulator, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pass  # the job takes 6 s; the "_short" DAG waits 3 s per try


SCENARIOS: dict[str, tuple[Callable[[MetaStudioEmulator, str, pytest.MonkeyPatch], None], str]] = {
    "create-dropped-after-send": (_dropped_create, ""),
    "create-200-without-body": (_empty_create, ""),
    "wait-errors": (_wait_errors, ""),
    "wait-times-out": (_wait_times_out, "_short"),
}


# Airflow 3.0 leaves a deferred try's next_method/next_kwargs on the task instance when it goes
# UP_FOR_RETRY (3.3 clears them), so the next try "resumes" with the failed try's event instead of
# running execute(). The trigger echoes the deferring try's number in every event, and the tasks start
# a try over when the event belongs to an earlier one: the scenarios below cover it on 3.0.


def _logs(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    out, err = capfd.readouterr()
    return out + err + caplog.text


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_retry_adopts_the_job_the_failed_try_created(
    scenario, mode, run_dag, metastudio_emulator, capfd, caplog, monkeypatch
):
    emu = metastudio_emulator
    arrange, variant = SCENARIOS[scenario]
    arrange(emu, mode, monkeypatch)

    result = run_dag(f"e2e_retry_{mode}{variant}")

    assert result.tasks == {"create": "success"}, result.tasks
    # The first try failed and the second adopted its job; a timed-out second try (a slow machine) hands
    # it on to the third, which adopts it again.
    assert result.tries["create"] == 2 or (scenario == "wait-times-out" and result.tries["create"] == 3)
    # Exactly one create reached the service, and exactly one job exists.
    assert emu.recorder.count(call="create_by_url") == 1
    assert emu.recorder.counters()["jobs_created"] == 1
    (job,) = emu.jobs.records()
    assert emu.faults.settings()["one_shots"] == []  # every fault really hit
    final = emu.jobs.get(job["job_id"])
    assert final["name"] == f"e2e_retry_{mode}{variant}.create.{result.run_id}"
    assert final["state"] == "SUCCEED"
    x = result.xcoms
    assert x[("create", "job_id")] == job["job_id"]
    assert x[("create", "model_asset_id")] == final["model_asset_id"]
    assert x[("create", "state")] == "SUCCEED"
    assert x[("create", "return_value")]["model_asset_id"] == final["model_asset_id"]
    logs = _logs(capfd, caplog)
    assert f"Adopting picture modeling job {job['job_id']}" in logs
    assert "created by an earlier try" in logs


@pytest.mark.parametrize("mode", MODES)
def test_a_retry_after_a_create_the_service_never_took_creates_one_job(
    mode, run_dag, metastudio_emulator, capfd, caplog
):
    """The first create was cut before the service handled it: nothing to adopt, so the retry creates."""
    emu = metastudio_emulator
    emu.faults.inject("create_by_url", "drop")

    result = run_dag(f"e2e_retry_{mode}")

    assert result.tasks == {"create": "success"}, result.tasks
    assert result.tries["create"] == 2
    statuses = [e["status"] for e in emu.recorder.request_log() if e["call"] == "create_by_url"]
    assert statuses == [0, 200]
    assert emu.recorder.counters()["jobs_created"] == 1
    (job,) = emu.jobs.records()
    assert result.xcoms[("create", "job_id")] == job["job_id"]
    logs = _logs(capfd, caplog)
    assert "no running or successful job named" in logs and "Adopting" not in logs
