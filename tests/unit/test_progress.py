"""One log line per state change (progress.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from testsupport import DATA

from airflow_provider_metastudio.models import PictureModelingJob
from airflow_provider_metastudio.progress import JobProgress

LOGGER_NAME = "tests.progress"
JOB_SUCCEED = json.loads((DATA / "job_succeed.json").read_text())
JOB_ID = JOB_SUCCEED["job_id"]
COVER_SIGNATURE = "DXJ9rIuf0Sf4aDlR95icBU%2Bu9Y8%3D"


def job(state: str, **fields) -> PictureModelingJob:
    base = {"job_id": JOB_ID, "state": state, "model_asset_id": "3fcb602bdbe4982ff59832b172949a21"}
    return PictureModelingJob.from_api({**base, **fields})


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def progress(clock):
    return JobProgress(JOB_ID, logging.getLogger(LOGGER_NAME), clock=clock)


@pytest.fixture
def records(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)

    def by_level(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME and r.levelno == level]

    return by_level


def test_one_info_per_change_and_debug_otherwise(progress, records):
    states = ["WAITING", "WAITING", "WAITING", "PROCESSING", "PROCESSING", "SUCCEED"]
    changed = [progress.observe(replace(job(s), request_id=f"req-{i}")) for i, s in enumerate(states)]
    assert changed == [True, False, False, True, False, True]
    info = records(logging.INFO)
    assert len(info) == 3
    assert "(first look) -> WAITING" in info[0] and "req-0" in info[0]
    assert "WAITING -> PROCESSING" in info[1] and "req-3" in info[1]
    assert "PROCESSING -> SUCCEED" in info[2] and "req-5" in info[2]
    debug = records(logging.DEBUG)
    assert len(debug) == 3
    assert all("still" in line for line in debug)
    assert "req-1" in debug[0] and "req-4" in debug[2]
    assert records(logging.WARNING) == []


def test_elapsed_time_is_measured_from_the_start(progress, clock, records):
    progress.observe(job("WAITING"))
    clock.now += 42.5
    progress.observe(job("PROCESSING"))
    assert progress.elapsed() == pytest.approx(42.5)
    assert "after 42.5s" in records(logging.INFO)[1]


def test_explicit_start(clock):
    assert JobProgress(JOB_ID, logging.getLogger(LOGGER_NAME), started=100.0, clock=clock).elapsed() == 400.0


def test_unknown_state_warns_once(progress, records):
    for state in ["PROCESSING", "ARCHIVED", "ARCHIVED", "ARCHIVED"]:
        progress.observe(job(state))
    warnings = records(logging.WARNING)
    assert len(warnings) == 1
    assert "'ARCHIVED'" in warnings[0] and "not finished" in warnings[0]
    assert len(records(logging.INFO)) == 1  # the first look at PROCESSING
    assert progress.last_state == "ARCHIVED"


def test_unknown_state_seen_again_after_a_known_one_does_not_warn_again(progress, records):
    for state in ["ARCHIVED", "PROCESSING", "ARCHIVED"]:
        progress.observe(job(state))
    assert len(records(logging.WARNING)) == 1
    assert [line for line in records(logging.INFO) if "PROCESSING -> ARCHIVED" in line]


def test_success_line_redacts_the_cover_signature(progress, records):
    progress.observe(job("SUCCEED", model_cover_url=JOB_SUCCEED["model_cover_url"]))
    (line,) = records(logging.INFO)
    assert COVER_SIGNATURE not in line
    assert "Signature=***" in line
    assert "model_asset_id=3fcb602bdbe4982ff59832b172949a21" in line


def test_failure_line_carries_the_error(progress, records):
    progress.observe(
        job("FAILED", error_info={"error_code": "MSS.00000050", "error_msg": "no face detected"})
    )
    (line,) = records(logging.INFO)
    assert "error MSS.00000050: no face detected" in line


def test_non_terminal_line_has_no_detail(progress, records):
    progress.observe(job("PROCESSING", model_cover_url=JOB_SUCCEED["model_cover_url"]))
    (line,) = records(logging.INFO)
    assert "cover=" not in line and "error" not in line


def test_works_with_a_logger_adapter(clock, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    adapter = logging.LoggerAdapter(logging.getLogger(LOGGER_NAME), {})
    JobProgress(JOB_ID, adapter, clock=clock).observe(job("WAITING"))
    assert any("-> WAITING" in r.getMessage() for r in caplog.records)
