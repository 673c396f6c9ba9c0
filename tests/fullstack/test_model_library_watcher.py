"""Every new model becomes one asset event, on a running Airflow 3.3 (scheduler, triggerer,
dag-processor, api-server, SQLite), with the triggerer stopped and killed mid-stream.

Jobs are created in the emulator directly, outside Airflow (as the console or another system
would), ending over two minutes. The watcher (``MetaStudioModelLibraryTrigger`` on an
``AssetWatcher``) must turn each into an asset event, none lost, across a SIGTERM and a SIGKILL of
the triggerer; the DAG scheduled on the asset must consume each model's event. A stop repeats only
the events Airflow stored but had not yet confirmed to the watcher (read from the metadata DB at
each stop: the stored watermark does not cover them); a trigger cannot read stored events on
Airflow 3.3.2, so zero is out of reach. Airflow's scheduler batches events into runs (asset
schedules have no run per event), so runs <= models. The latency (job end -> event stored -> the
run that consumed it) is printed, split into the scheduler's loop and the events that waited for a
later one, and its p95 checked against a stall.

With two triggerers (Airflow's HA set-up), the one running the watcher is killed: the other takes
it over from the stored watermark; no model is lost, and the duplicates are bounded the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from testsupport.airflow_procs import BIN, airflow_cli, base_env, free_port, start, stop

from airflow_provider_metastudio._compat import AIRFLOW_V_3
from airflow_provider_metastudio.models import parse_time
from airflow_provider_metastudio.triggers.model_library import WATERMARK_KEY, Watermark

DAG_ID = "fullstack_model_watcher"
ASSET = "fullstack_models"
POLL_INTERVAL = 5.0

pytestmark = [
    pytest.mark.skipif(shutil.which("airflow", path=str(BIN)) is None, reason="airflow CLI not installed"),
    pytest.mark.skipif(os.environ.get("METASTUDIO_FULLSTACK", "1") == "0", reason="METASTUDIO_FULLSTACK=0"),
    pytest.mark.skipif(not AIRFLOW_V_3, reason="asset watchers need Airflow 3"),
]


def _shared_stream_airflow() -> bool:
    try:
        import airflow.triggers.shared_stream  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def airflow_env(tmp_path, metastudio_emulator):
    if not _shared_stream_airflow():
        pytest.skip("exactly-once needs Airflow 3.3's shared streams and asset state store")
    home = tmp_path / "airflow-home"
    home.mkdir()
    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "dags" / f"{DAG_ID}.py", folder)
    env = base_env(home, free_port())
    env.update(
        AIRFLOW__CORE__DAGS_FOLDER=str(folder),
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
        # A killed triggerer's watcher moves to a live one once its heartbeat is this old.
        AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="10",
        AIRFLOW_CONN_METASTUDIO_DEFAULT=metastudio_emulator.connection_json(),
        METASTUDIO_WATCHER_POLL_INTERVAL=str(POLL_INTERVAL),
    )
    airflow_cli(env, "db", "migrate")
    return env


def _db(home: Path, sql: str, *args: Any) -> list[tuple]:
    db = sqlite3.connect(home / "airflow.db", timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def _time(value: str) -> datetime:
    t = datetime.fromisoformat(value.replace(" ", "T"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _events(home: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = _db(
        home,
        "SELECT e.id, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.name = ? "
        "ORDER BY e.id",
        ASSET,
    )
    return [(i, json.loads(extra)["payload"]) for i, extra in rows]


def _runs(home: Path) -> dict[int, tuple[datetime, list[int]]]:
    """DAG run id -> (created, the asset events it consumed)."""
    runs: dict[int, tuple[datetime, list[int]]] = {}
    for run_id, created in _db(home, "SELECT id, created_at FROM dag_run WHERE dag_id = ?", DAG_ID):
        runs[run_id] = (_time(created), [])
    for run_id, event_id in _db(home, "SELECT dag_run_id, event_id FROM dagrun_asset_event"):
        if run_id in runs:
            runs[run_id][1].append(event_id)
    return runs


def _watching(procs: list) -> bool:
    """A triggerer of ``procs`` runs the watcher (its first line is in the triggerer's log)."""
    return any("Watcher fullstack_models lists models" in p[1].read_text() for p in procs)


def _wait(what, seconds: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError("\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in logs))
        time.sleep(1)


def _start_airflow(env: dict[str, str], log_dir: Path, triggerers: int) -> list:
    procs = [
        start(env, log_dir, "scheduler"),
        start(env, log_dir, "dag-processor"),
        start(env, log_dir, "api-server", "--port", env["AIRFLOW__API__PORT"]),
    ]
    for n in range(triggerers):
        procs.append(_triggerer(env, log_dir, n))
    return procs


def _triggerer(env: dict[str, str], log_dir: Path, n: int) -> tuple:
    sub = log_dir / f"triggerer-{n}-{time.monotonic_ns()}"
    sub.mkdir()
    return start(env, sub, "triggerer")


def _create_jobs(emulator, count: int, over: float, first_end: float = 10.0) -> list[str]:
    """``count`` jobs ending evenly from ``first_end`` to ``first_end + over`` seconds from now."""
    return [
        emulator.jobs.create(
            name=f"watched-{i}",
            waiting_seconds=1,
            processing_seconds=first_end - 1 + over * i / max(count - 1, 1),
        )["job_id"]
        for i in range(count)
    ]


def _all_consumed(home: Path, count: int) -> bool:
    events = _events(home)
    consumed = {e for _, evs in _runs(home).values() for e in evs}
    return len({p["job_id"] for _, p in events}) >= count and all(i in consumed for i, _ in events)


def _consume_all(home: Path, emulator, job_ids: list[str], logs: list[Path]) -> int:
    """Wait until each event is in a DAG run; return how many were not, before one more model.

    Airflow's scheduler (SQLite/MySQL path) can leave the events that arrive while it creates an
    asset-triggered run out of that run and of the queue: they wait for the asset's next event
    (apache/airflow#56050, #62501). One more model, as the next event, brings them in.
    """
    _wait(lambda: len({p["job_id"] for _, p in _events(home)}) >= len(job_ids), 240, logs)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _all_consumed(home, len(job_ids)):
        time.sleep(1)
    consumed = {e for _, evs in _runs(home).values() for e in evs}
    waiting = sum(i not in consumed for i, _ in _events(home))
    if waiting:
        job_ids.extend(_create_jobs(emulator, 1, over=0.0, first_end=3.0))
        _wait(lambda: _all_consumed(home, len(job_ids)), 120, logs)
    return waiting


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def _spread(values: list[float]) -> str:
    if not values:
        return "(none)"
    return f"median {statistics.median(values):.1f}s, p95 {_p95(values):.1f}s"


def _scheduler_split(
    runs: dict[int, tuple[datetime, list[int]]], stamps: dict[int, datetime]
) -> tuple[list[float], list[float]]:
    """Event stored -> its DAG run created, split in two: the newest event of each run (the
    scheduler's own delay), and the others. Airflow 3.3.2 cuts a run's events off at its queue
    row's time, which the first event of a burst set, so the burst's later events wait for the
    asset's next event (apache/airflow#70970)."""
    newest: list[float] = []
    waited: list[float] = []
    for created, event_ids in runs.values():
        ordered = sorted((stamps[e] for e in event_ids if e in stamps), reverse=True)
        newest.extend((created - t).total_seconds() for t in ordered[:1])
        waited.extend((created - t).total_seconds() for t in ordered[1:])
    return newest, waited


def _report(
    home: Path, emulator, job_ids: list[str], label: str, gaps: list[tuple[datetime, datetime]]
) -> tuple[int, float, float]:
    """Check every model has its event, in a DAG run; print, and return (duplicate events, p95 of
    job end -> event stored, p95 of job end -> its DAG run), both over the models that ended while
    a triggerer held the watcher (not in a restart ``gap``, nor a poll interval and 5 s before)."""
    events = _events(home)
    stamps = dict(
        _db(
            home,
            "SELECT e.id, e.timestamp FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.name = ?",
            ASSET,
        )
    )
    by_job: dict[str, list[int]] = {}
    for event_id, payload in events:
        by_job.setdefault(payload["job_id"], []).append(event_id)
    assert set(by_job) == set(job_ids), (
        sorted(set(job_ids) - set(by_job)),
        sorted(set(by_job) - set(job_ids)),
    )
    for job_id in job_ids:  # each event names its own model
        payload = next(p for _, p in events if p["job_id"] == job_id)
        assert payload["model_asset_id"] == emulator.jobs.get(job_id)["model_asset_id"]
    duplicates = len(events) - len(by_job)
    runs = _runs(home)
    run_of_event = {e: r for r, (_, evs) in runs.items() for e in evs}
    to_run, to_event, steady_run, steady_event = [], [], [], []
    margin = timedelta(seconds=POLL_INTERVAL + 5)
    for job_id, event_ids in by_job.items():
        consumed = {run_of_event[e] for e in event_ids if e in run_of_event}
        assert consumed, f"no DAG run consumed the event of {job_id}"
        end = parse_time(emulator.jobs.get(job_id)["end_time"], "end_time")
        assert end is not None
        run_latency = min((runs[r][0] - end).total_seconds() for r in consumed)
        event_latency = min((_time(stamps[e]) - end).total_seconds() for e in event_ids)
        to_run.append(run_latency)
        to_event.append(event_latency)
        if not any(down - margin <= end <= up for down, up in gaps):
            steady_run.append(run_latency)
            steady_event.append(event_latency)
    twice = sum(len({run_of_event.get(e) for e in evs}) > 1 for evs in by_job.values())
    newest, waited = _scheduler_split(runs, {e: _time(t) for e, t in stamps.items()})
    print(
        f"\n{label}: {len(job_ids)} models, {len(events)} asset events ({duplicates} duplicates, "
        f"{twice} models in two DAG runs), {len(runs)} DAG runs (the scheduler batches events). "
        f"Job end -> event stored: p95 {_p95(to_event):.1f}s all, {_p95(steady_event):.1f}s for the "
        f"{len(steady_event)} ended away from a restart; job end -> its DAG run: median "
        f"{statistics.median(to_run):.1f}s, p95 {_p95(to_run):.1f}s all, {_p95(steady_run):.1f}s away "
        f"from a restart, max {max(to_run):.1f}s (poll interval {POLL_INTERVAL:.0f}s). Event stored -> "
        f"its DAG run: the newest event of each run {_spread(newest)} (the scheduler's loop); the "
        f"{len(waited)} others, stored after their run's cut-off, {_spread(waited)} (they waited for "
        f"a later event, apache/airflow#70970)"
    )
    return duplicates, _p95(steady_event), _p95(steady_run)


def _uncovered(home: Path) -> int:
    """Events Airflow stored that the stored watermark does not cover: what a restart now repeats.

    Read once the stopped triggerer is gone (it writes nothing more) and before another starts. A
    trigger cannot read stored asset events on Airflow 3.3.2 (the unit test
    ``test_airflow_gives_a_trigger_no_read_of_stored_asset_events``), so these are the events whose
    storing Airflow had not yet confirmed to the watcher (a state sync) when it stopped."""
    rows = _db(
        home,
        "SELECT s.value FROM asset_state_store s JOIN asset a ON a.id = s.asset_id "
        "WHERE a.name = ? AND s.key = ?",
        ASSET,
        WATERMARK_KEY,
    )
    mark = Watermark.from_json(json.loads(rows[0][0])) if rows else None
    jobs = [
        SimpleNamespace(job_id=p["job_id"], end_time=parse_time(p["end_time"], "end_time"))
        for _, p in _events(home)
    ]
    return sum(mark is None or not mark.covers(job) for job in jobs)  # type: ignore[arg-type]


def _airflow_flapped(log_dir: Path) -> bool:
    """Whether a triggerer found its runner silent past ``runner_health_check_threshold`` (a loaded
    machine) and stopped heartbeating, so Airflow moved its triggers: the watcher restarted from
    the last watermark, with no triggerer restart of ours."""
    return any("appears deadlocked" in log.read_text() for log in log_dir.glob("triggerer-*/triggerer.log"))


def _last_event_line(log: Path) -> str:
    """The newest "-> asset event" line of a triggerer's log (they start with an ISO time)."""
    return max((line for line in log.read_text().splitlines() if "-> asset event" in line), default="")


def _up_again(log: Path) -> datetime:
    """When the triggerer writing ``log`` has the watcher running again (UTC)."""
    deadline = time.monotonic() + 180
    while "Watcher fullstack_models resumes" not in log.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the new triggerer did not take the watcher over:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.5)
    return datetime.now(timezone.utc)


def _restart(
    procs: list, env: dict[str, str], log_dir: Path, n: int, sig: int
) -> tuple[tuple[datetime, datetime], int]:
    """Stop the last triggerer with ``sig``, start another; the (down, up) window, UTC, and the
    stored events the watermark did not cover when it stopped."""
    proc, _ = procs.pop()
    down = datetime.now(timezone.utc)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    uncovered = _uncovered(Path(env["AIRFLOW_HOME"]))
    procs.append(_triggerer(env, log_dir, n))
    return (down, _up_again(procs[-1][1])), uncovered


@pytest.mark.metastudio_emulator(waiting_seconds=1, processing_seconds=5)
def test_fifty_models_one_event_each_across_a_sigterm_and_a_sigkill(
    airflow_env, metastudio_emulator, tmp_path
):
    home = Path(airflow_env["AIRFLOW_HOME"])
    procs = _start_airflow(airflow_env, tmp_path, triggerers=1)
    logs = lambda: [p[1] for p in procs]  # noqa: E731
    try:
        _wait(lambda: _watching(procs[-1:]), 300, logs())
        time.sleep(2 * POLL_INTERVAL)  # the first scan fixed "now": the watermark's floor
        job_ids = _create_jobs(metastudio_emulator, 50, over=110.0)
        # Restarts at set points of the stream, whatever the machine's load makes of the timing.
        _wait(lambda: len(_events(home)) >= 12, 300, logs())
        term_gap, after_term = _restart(procs, airflow_env, tmp_path, 1, signal.SIGTERM)
        _wait(lambda: len(_events(home)) >= 30, 300, logs())
        kill_gap, after_kill = _restart(procs, airflow_env, tmp_path, 2, signal.SIGKILL)
        gaps = [term_gap, kill_gap]
        waiting = _consume_all(home, metastudio_emulator, job_ids, logs())
        time.sleep(10)  # a late duplicate would show by now
        label = f"one triggerer, SIGTERM + SIGKILL ({waiting} events waited for a later one)"
        duplicates, to_event, to_run = _report(home, metastudio_emulator, job_ids, label, gaps)
        flapped = _airflow_flapped(tmp_path)
    finally:
        stop(procs)
    print(f"stored, not covered by the watermark: {after_term} at the SIGTERM, {after_kill} at the SIGKILL")
    if flapped:  # Airflow restarted the watcher on its own: what it had not confirmed comes again
        print(f"Airflow declared a triggerer deadlocked and moved the watcher: {duplicates} duplicates")
        return
    # Zero is out of reach on Airflow 3.3.2: a trigger cannot read the events Airflow stored, only
    # its confirmations, which reach it a state sync after the store. A stop repeats what was
    # stored but not yet confirmed, and nothing else (none lost: checked in _report).
    assert duplicates <= after_term + after_kill
    # Latency is measured and printed above, not asserted to the second: timing targets belong in
    # benchmarks (a shared 2-core CI machine is noisy). These only catch a stream that stalls:
    # quiet, the event is stored within POLL_INTERVAL + 2 s and the run about 6 s later.
    assert to_event <= 6 * POLL_INTERVAL, f"job end -> event p95 {to_event:.1f}s: the stream stalls"
    assert to_run <= 10 * POLL_INTERVAL, f"job end -> DAG run p95 {to_run:.1f}s: events wait too long"


@pytest.mark.metastudio_emulator(waiting_seconds=1, processing_seconds=5)
def test_two_triggerers_one_killed_no_model_lost(airflow_env, metastudio_emulator, tmp_path):
    home = Path(airflow_env["AIRFLOW_HOME"])
    procs = _start_airflow(airflow_env, tmp_path, triggerers=2)
    logs = lambda: [p[1] for p in procs]  # noqa: E731
    try:
        _wait(lambda: _watching(procs[-2:]), 300, logs())
        time.sleep(2 * POLL_INTERVAL)
        job_ids = _create_jobs(metastudio_emulator, 30, over=60.0)
        _wait(lambda: len(_events(home)) >= 12, 300, logs())
        # Kill the triggerer that runs the watcher; the other takes it over once the dead one's
        # heartbeat is older than the health-check threshold.
        holder = max(procs[-2:], key=lambda p: _last_event_line(p[1]))
        other = next(p for p in procs[-2:] if p is not holder)
        procs.remove(holder)
        down = datetime.now(timezone.utc)
        os.killpg(holder[0].pid, signal.SIGKILL)
        holder[0].wait(timeout=30)
        uncovered = _uncovered(home)  # the other triggerer takes over only after the threshold
        gaps = [(down, _up_again(other[1]))]
        waiting = _consume_all(home, metastudio_emulator, job_ids, logs())
        time.sleep(10)
        label = f"two triggerers, the watcher's killed ({waiting} events waited for a later one)"
        duplicates, _, _ = _report(home, metastudio_emulator, job_ids, label, gaps)
        flapped = _airflow_flapped(tmp_path)
    finally:
        stop(procs)
    print(f"stored, not covered by the watermark at the SIGKILL: {uncovered}")
    if not flapped:
        assert duplicates <= uncovered
