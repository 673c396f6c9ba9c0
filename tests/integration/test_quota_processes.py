"""Processes that do not share a rate limiter collide on one tenant's quota; 429 retries with jitter
must get every one of them through. Real processes (fresh interpreters running this checkout)
against one emulator with the documented quotas: 1 details and 1 list call per second per tenant."""

from __future__ import annotations

import os
import sys

import pytest
from testsupport import BENCHMARKS, import_file

# Minutes of real processes: once per matrix, on the newest Airflow (with the full-stack test).
pytestmark = pytest.mark.skipif(
    os.environ.get("METASTUDIO_FULLSTACK", "1") == "0", reason="runs once per matrix, on the newest Airflow"
)

bench_quota = import_file(BENCHMARKS / "bench_quota.py")


def test_ten_workers_one_details_call_each_in_the_same_second_all_succeed(metastudio_emulator, capsys):
    job = metastudio_emulator.jobs.create("quota_details", outcome="SUCCEED")
    conn = metastudio_emulator.connection_dict()
    conn["extra"]["host_quota"] = False  # processes that do not share (as on separate hosts)
    results = bench_quota.run_processes("details", conn, [[job["job_id"]]] * 10, python=sys.executable)
    outcomes, slowest = bench_quota.summary(results)
    throttled = metastudio_emulator.recorder.count("show", 429)
    with capsys.disabled():
        print(f"\n10 workers x 1 details call: {dict(outcomes)}, {throttled} 429s, slowest {slowest:.1f} s")
    # Every process read the job (an exception would be its outcome instead).
    assert set(outcomes) <= {"WAITING", "PROCESSING", "SUCCEED"} and sum(outcomes.values()) == 10
    assert throttled > 0  # they did collide: the test exercises the retries
    assert metastudio_emulator.recorder.count("show", 200) == 10


@pytest.mark.metastudio_emulator(seed=7)
def test_two_triggerers_with_100_waits_each_end_every_wait_right(metastudio_emulator, capsys):
    ids = bench_quota.create_jobs(metastudio_emulator, 200, ends_within=(10.0, 40.0))
    results = bench_quota.run_processes(
        "triggers",
        metastudio_emulator.connection_dict(),
        [ids[0::2], ids[1::2]],
        poll_interval=5.0,
        timeout=150.0,
        python=sys.executable,
    )
    outcomes, slowest = bench_quota.summary(results)
    counts = {c: metastudio_emulator.recorder.count(c, 429) for c in ("show", "list")}
    with capsys.disabled():
        print(f"\n2 triggerers x 100 waits: {dict(outcomes)}, 429s {counts}, slowest {slowest:.1f} s")
    assert outcomes == {"success": 200}
