"""Worker processes on one host share the tenant's create quota through the host-wide file
(hostquota.py): real processes (fresh interpreters running ``bench_creates``'s worker child, the
public sync hook) against the emulator with its documented quota, create by URL 2/s."""

from __future__ import annotations

import os
import sys
from collections import Counter

import pytest
from testsupport import BENCHMARKS, import_file

pytestmark = pytest.mark.skipif(
    os.environ.get("METASTUDIO_FULLSTACK", "1") == "0", reason="runs once per matrix, on the newest Airflow"
)

bench_quota = import_file(BENCHMARKS / "bench_quota.py")

PROCESSES, CREATES = 6, 2
QUOTA = 2.0  # the emulator's documented create-by-URL quota


def _create_in_processes(emulator, host_quota) -> tuple[list[dict], list[dict]]:
    conn = emulator.connection_dict()
    conn["extra"]["host_quota"] = host_quota
    names = [[f"hq.{p}.{k}" for k in range(CREATES)] for p in range(PROCESSES)]
    results = bench_quota.run_processes(
        "create_workers",
        conn,
        names,
        timeout=120.0,
        python=sys.executable,
        script=BENCHMARKS / "bench_creates.py",
    )
    rows = [r for res in results for r in res["rows"]]
    log = [e for e in emulator.recorder.request_log() if e["call"] == "create_by_url"]
    return rows, log


def test_worker_processes_sharing_the_host_file_create_at_the_quota_without_a_429(
    metastudio_emulator, tmp_path
):
    rows, log = _create_in_processes(metastudio_emulator, str(tmp_path))
    assert [r["job_id"] for r in rows if str(r["job_id"]).startswith("ERROR")] == []
    assert Counter(r["info"]["name"] for r in metastudio_emulator.jobs.records()).most_common(1)[0][1] == 1
    statuses = Counter(e["status"] for e in log)
    assert statuses == {200: PROCESSES * CREATES}, statuses  # not a single 429
    # Paced at the quota (1/rate apart plus the limiter's 10 % headroom), not faster and not idle:
    # bounds a loaded machine keeps, not exact times.
    times = sorted(e["time"] for e in log)
    span = times[-1] - times[0]
    floor = (len(times) - 1) / QUOTA
    assert 0.9 * floor <= span <= 2.0 * floor + 2.0, span
    assert list(tmp_path.iterdir()) and all(p.name.startswith("quota-") for p in tmp_path.iterdir())


def test_without_the_host_file_the_same_processes_collide(metastudio_emulator):
    # The contrast that shows the file does the work: each process paces only itself.
    rows, log = _create_in_processes(metastudio_emulator, False)
    assert [r["job_id"] for r in rows if str(r["job_id"]).startswith("ERROR")] == []
    assert sum(1 for e in log if e["status"] == 429) > 0
