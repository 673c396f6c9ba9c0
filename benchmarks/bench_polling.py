"""Naive per-job polling vs this provider's shared, quota-aware poller, N concurrent waits in one loop.

For each N and each scheme a fresh emulator process is started (documented quotas, scaled time), N
jobs are created through its admin API with seeded random durations, and a fresh worker process
runs N waits in one asyncio event loop, as the triggerer does:

* ``naive``: what peers do (the dbt Cloud trigger, hand-written sensors): every wait has its own
  async HTTP client (httpx, same AK/SK signer as the provider), GETs its job's details every
  interval, and retries a 429 after ``Retry-After`` (a fixed backoff when absent), a few times.
* ``provider``: ``MetaStudioPictureModelingJobTrigger(...).run()``, N of them, through the Airflow
  connection ``AIRFLOW_CONN_METASTUDIO_DEFAULT`` (client-side quota scaled like the emulator's).

Measured: API calls (total and per interval, from the emulator's counters), 429s, detection
latency (emulated time the event arrived minus the job's emulated end), the worker's CPU time and
RSS added, and event-loop lag (how late a ticker's ``asyncio.sleep(0.01)`` wakes).

Scenarios (``--scenario``): ``sweep`` (the default: N = 10 ... 10,000, time scale 60), ``burst``
(1,000 jobs ending within 45 real seconds, 10 s interval, time scale 1) and ``outage`` (200 waits,
60 real seconds of 503s on every call in the middle of the run).

Run: ``.venv/bin/python benchmarks/bench_polling.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    Admin,
    EmulatedClock,
    EmulatorProcess,
    command_line,
    environment,
    fmt,
    loadavg,
    markdown_table,
    percentile,
    pyplot,
    save_chart,
    write_results,
)

SCHEMES = ("naive", "provider")
TERMINAL = ("SUCCEED", "PARTIAL_SUCCEED", "FAILED", "CANCELED")
DOCUMENTED_RATES = {"show": 1.0, "list": 1.0, "create": 1.0, "create_by_url": 2.0}

# Defaults each scenario sets (explicit flags still win). Burst and outage run at time scale 1: the
# poller's busy interval and its backoff are real seconds, and an outage lasts real seconds.
SCENARIOS: dict[str, dict[str, Any]] = {
    "sweep": {},
    "burst": {
        "n": "1000",
        "time_scale": 1.0,
        "interval": 10.0,
        "min_minutes": 0.5,  # jobs end 30-75 s after the first is created: a 45 s window
        "max_minutes": 1.25,
        "tail_intervals": 6.0,
        "max_seconds": 120.0,
    },
    "outage": {
        "n": "200",
        "schemes": "provider",
        "time_scale": 1.0,
        "interval": 10.0,
        "min_minutes": 20 / 60,  # jobs end 20-200 s after the first is created
        "max_minutes": 200 / 60,
        "tail_intervals": 6.0,
        "max_seconds": 280.0,
        "outage_at": 80.0,
        "outage_seconds": 60.0,
    },
}


# =====================================================================================================
# worker: one scheme, N waits, one event loop (runs in its own process)
# =====================================================================================================


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # Linux fallback
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Recorder:
    """What the worker measures: detections, loop lag, RSS samples, client-side counts."""

    def __init__(self, clock: EmulatedClock) -> None:
        self.clock = clock
        self.detected: dict[str, tuple[float, str]] = {}
        self.started: dict[str, float] = {}
        self.lags: list[float] = []
        self.rss_peak = 0
        self.counts: dict[str, int] = {"attempts": 0, "throttled": 0, "gave_up": 0, "errors": 0}
        self.pollers: list[dict[str, float]] = []  # the provider's poller counters when it stopped

    def start(self, job_id: str) -> None:
        self.started[job_id] = self.clock.now()

    def detect(self, job_id: str, status: str) -> None:
        if job_id not in self.detected:
            self.detected[job_id] = (self.clock.now(), status)

    async def ticker(self, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.01)
            self.lags.append(time.monotonic() - t - 0.01)
            i += 1
            if i % 25 == 0:
                self.rss_peak = max(self.rss_peak, _rss_bytes())


async def _naive_wait(
    job_id: str, delay: float, spec: dict[str, Any], client_kw: dict[str, Any], rec: Recorder, deadline: float
) -> None:
    """One job, polled the way peers do it: own client, one details call per interval."""
    import httpx

    await asyncio.sleep(delay)
    rec.start(job_id)
    url = spec["show_url"].format(job_id=job_id)
    interval = spec["interval_real"]
    retries = spec["naive_retries"]
    async with httpx.AsyncClient(**client_kw) as client:
        while time.monotonic() < deadline:
            data: dict[str, Any] | None = None
            for attempt in range(retries + 1):
                rec.counts["attempts"] += 1
                try:
                    resp = await client.get(url)
                except httpx.HTTPError:
                    rec.counts["errors"] += 1
                    break
                if resp.status_code == 429:
                    rec.counts["throttled"] += 1
                    if attempt == retries:
                        rec.counts["gave_up"] += 1
                        break
                    retry_after = resp.headers.get("Retry-After")
                    await asyncio.sleep(float(retry_after) if retry_after else spec["naive_backoff_real"])
                    continue
                if resp.status_code != 200:
                    rec.counts["errors"] += 1
                    break
                data = resp.json()
                break
            if data is not None and data.get("state") in TERMINAL:
                rec.detect(job_id, "success" if data["state"] != "FAILED" else "failed")
                return
            await asyncio.sleep(interval)


async def _provider_wait(
    job_id: str, delay: float, spec: dict[str, Any], rec: Recorder, wall_deadline: float
) -> None:
    """One job, waited for exactly as the triggerer runs the trigger."""
    from airflow_provider_metastudio.triggers.picture_modeling import MetaStudioPictureModelingJobTrigger

    await asyncio.sleep(delay)
    rec.start(job_id)
    trigger = MetaStudioPictureModelingJobTrigger(
        job_id=job_id, end_time=wall_deadline, poll_interval=spec["interval_real"]
    )
    async for event in trigger.run():
        rec.detect(job_id, str(event.payload.get("status")))


def _record_poller_stats(rec: Recorder) -> None:
    """Keep each shared poller's counters when it stops (the last wait of its tenant ended)."""
    from airflow_provider_metastudio.tenant import TenantPoller

    close = TenantPoller.close

    async def recording_close(self: TenantPoller) -> None:
        rec.pollers.append(
            {"rounds": self.rounds, "list_calls": self.list_calls, "details_calls": self.details_calls}
        )
        await close(self)

    TenantPoller.close = recording_close  # type: ignore[method-assign]


async def _worker_main(
    spec: dict[str, Any], rec: Recorder, ids: list[str], delays: list[float]
) -> dict[str, float]:
    start = time.monotonic()
    # Deadline: the last job's emulated end plus a tail, capped by the real-time budget.
    until_last = (spec["deadline_emulated"] - rec.clock.now()) / rec.clock.scale
    deadline = start + max(1.0, min(until_last, spec["max_seconds"]))
    wall_deadline = time.time() + (deadline - time.monotonic())
    if spec["scheme"] == "naive":
        import httpx

        from airflow_provider_metastudio.auth import AkSkSigner, HttpxAkSkAuth

        conn = json.loads(spec["conn_json"])
        signer = AkSkSigner(conn["login"], conn["password"], project_id=conn["extra"]["project_id"])
        client_kw = {
            "auth": HttpxAkSkAuth(signer),
            # One SSL context for all clients: creating one per client (httpx's default) would cost
            # ~10 ms of CPU each, which peers using aiohttp do not pay. Kind to the naive scheme.
            "verify": ssl.create_default_context(),
            "timeout": httpx.Timeout(60.0, connect=10.0),
            "trust_env": False,
        }
        coros = [_naive_wait(j, d, spec, client_kw, rec, deadline) for j, d in zip(ids, delays, strict=True)]
    else:
        _record_poller_stats(rec)
        coros = [_provider_wait(j, d, spec, rec, wall_deadline) for j, d in zip(ids, delays, strict=True)]
    stop = asyncio.Event()
    ticker = asyncio.create_task(rec.ticker(stop))
    tasks = [asyncio.create_task(c) for c in coros]
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()) + 5.0)
    end = time.monotonic()
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=30)
    stop.set()
    await ticker
    return {"start": start, "end": end, "pending": float(len(pending))}


def run_worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    # The triggerer has Airflow, the provider and httpx loaded: so do both schemes, before the baseline.
    os.environ["AIRFLOW_CONN_METASTUDIO_DEFAULT"] = spec["conn_json"]
    import airflow  # noqa: F401
    import httpx  # noqa: F401

    import airflow_provider_metastudio.triggers.picture_modeling  # noqa: F401

    # Handshake: the jobs are created only now, so their clocks start when the waits can start.
    print("READY", flush=True)
    spec.update(json.loads(Path(sys.stdin.readline().strip()).read_text()))
    # From here on stdout (where Airflow's logging writes) goes to the log file, not the pipe.
    sys.stdout.flush()
    os.dup2(2, 1)
    ids: list[str] = spec["job_ids"]
    rng = random.Random(f"stagger:{spec['seed']}:{len(ids)}")
    ramp = spec["ramp_intervals"] * spec["interval_real"]
    delays = [rng.uniform(0.0, ramp) for _ in ids]  # waits start spread over the ramp
    admin = Admin(spec["url"])
    clock = EmulatedClock(admin)
    admin.close()
    rec = Recorder(clock)
    import gc

    gc.collect()
    rss0 = _rss_bytes()
    rec.rss_peak = rss0
    cpu0 = time.process_time()
    window = asyncio.run(_worker_main(spec, rec, ids, delays))
    cpu = time.process_time() - cpu0
    rec.rss_peak = max(rec.rss_peak, _rss_bytes())
    lags = rec.lags
    result = {
        "window": window,
        "cpu_s": cpu,
        "rss_base_mb": rss0 / 2**20,
        "rss_added_mb": (rec.rss_peak - rss0) / 2**20,
        "lag_ms": {
            "p50": percentile(lags, 50) * 1e3,
            "p99": percentile(lags, 99) * 1e3,
            "max": max(lags) * 1e3 if lags else float("nan"),
            "samples": len(lags),
        },
        "detected": rec.detected,
        "started": rec.started,
        "client_counts": rec.counts,
        "pollers": rec.pollers,
        "clock": clock.to_dict(),
    }
    Path(spec["result_path"]).write_text(json.dumps(result))


# =====================================================================================================
# orchestrator
# =====================================================================================================


def create_jobs(
    admin: Admin, n: int, args: argparse.Namespace, seed: int, clock: EmulatedClock | None = None
) -> tuple[list[str], dict[str, float]]:
    """N jobs with seeded random durations (the same for both schemes); returns ids and emulated ends.

    With ``clock``, each job ends ``min_minutes``-``max_minutes`` after the first one was created
    (not after its own creation), so creating many jobs does not widen the window their ends fall in.
    """
    rng = random.Random(f"jobs:{seed}:{n}")
    ids = []
    anchor = clock.now() if clock is not None else 0.0
    for i in range(n):
        total = rng.uniform(args.min_minutes, args.max_minutes) * 60.0
        if clock is not None:
            total = anchor + total - clock.now()
        waiting = min(rng.uniform(30.0, 90.0), total / 2)
        job = admin.create_job(name=f"bench_{i}", waiting_seconds=waiting, processing_seconds=total - waiting)
        ids.append(job["job_id"])
    ends = {
        r["job_id"]: r["create_timestamp"] + r["waiting_seconds"] + r["processing_seconds"]
        for r in admin.jobs()
    }
    return ids, ends


def run_one(scheme: str, n: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    scale = args.time_scale
    interval_real = args.interval / scale
    capped = scheme == "naive" and n >= args.naive_large_n
    max_seconds = min(args.max_seconds, args.naive_large_seconds) if capped else args.max_seconds
    with (
        EmulatorProcess(time_scale=scale, quotas=True, seed=seed) as emu,
        tempfile.TemporaryDirectory(prefix="bench-polling-") as tmp,
    ):
        admin = Admin(emu.url)
        rates = {k: v * scale for k, v in DOCUMENTED_RATES.items()}
        project_id = emu.connection["extra"]["project_id"]
        spec = {
            "scheme": scheme,
            "url": emu.url,
            "conn_json": emu.connection_json(rate_limits=rates),
            "show_url": f"{emu.url}/v1/{project_id}/digital-human/stylized/picture-modelings/{{job_id}}",
            "interval_real": interval_real,
            "max_seconds": max_seconds,
            "naive_retries": args.naive_retries,
            "ramp_intervals": args.ramp_intervals,
            "naive_backoff_real": args.naive_backoff / scale,
            "seed": seed,
            "result_path": str(Path(tmp) / "result.json"),
        }
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        log_path = Path(tempfile.gettempdir()) / f"bench-polling-{scheme}-{n}.log"
        samples: list[tuple[float, int, int]] = []
        outage: tuple[float, float] | None = None  # emulated start and end of the injected outage
        with open(log_path, "w") as log:
            worker = subprocess.Popen(
                [sys.executable, __file__, "--worker", str(spec_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            assert worker.stdin is not None and worker.stdout is not None
            try:
                if worker.stdout.readline().strip() != "READY":
                    raise RuntimeError(f"worker {scheme} N={n} did not start; see {log_path}")
                clock = EmulatedClock(admin) if args.scenario != "sweep" else None
                t0 = time.monotonic()
                created_emu = clock.now() if clock is not None else None
                ids, ends = create_jobs(admin, n, args, seed, clock)
                create_s = time.monotonic() - t0
                jobs_path = Path(tmp) / "jobs.json"
                deadline_emulated = max(ends.values()) + args.tail_intervals * args.interval
                jobs_path.write_text(json.dumps({"job_ids": ids, "deadline_emulated": deadline_emulated}))
                worker.stdin.write(f"{jobs_path}\n")
                worker.stdin.flush()
                next_sample = time.monotonic()
                watchdog = next_sample + max_seconds + 120.0
                outage_due = t0 + args.outage_at if args.outage_seconds else None
                while worker.poll() is None:
                    if time.monotonic() > watchdog:
                        raise RuntimeError(f"worker {scheme} N={n} hangs; see {log_path}")
                    if outage_due is not None and time.monotonic() >= outage_due:
                        assert clock is not None
                        outage_due = None
                        begin = clock.now()
                        admin.call(
                            "POST", "/outages", {"seconds": args.outage_seconds, "call": "*", "kind": "503"}
                        )
                        outage = (begin, clock.now() + args.outage_seconds * clock.scale)
                    if time.monotonic() >= next_sample:
                        c = admin.counters()
                        samples.append((time.monotonic(), int(c["total"]), int(c["throttled_total"])))
                        next_sample += interval_real
                    time.sleep(min(0.05, max(0.0, next_sample - time.monotonic())))
            finally:
                if worker.poll() is None:
                    worker.kill()
                worker.wait()
        if worker.returncode != 0:
            raise RuntimeError(f"worker {scheme} N={n} failed ({worker.returncode}); see {log_path}")
        result = json.loads(Path(spec["result_path"]).read_text())
        counters = admin.counters()
        emu_cpu = _proc_cpu(emu.pid)
        # The provider's few requests, kept for diagnosis (the naive runs make far too many).
        request_log = (
            [
                [e["emulated_time"], e["call"], e["status"], e["path"]]
                for e in admin.call("GET", "/requests")["requests"]
            ]
            if scheme == "provider"
            else []
        )
        admin.close()
    row = summarize(scheme, n, args, result, counters, samples, ends, create_s, emu_cpu)
    row["capped_seconds"] = max_seconds if capped else None
    row["seed"] = seed
    if args.scenario != "sweep":
        assert created_emu is not None
        row.update(scenario_summary(args, result, counters, ends, created_emu, outage, log_path))
    if row["late"] or (args.scenario != "sweep" and scheme == "provider"):
        row["request_log"] = request_log
    return row


def scenario_summary(
    args: argparse.Namespace,
    result: dict[str, Any],
    counters: dict[str, Any],
    ends: dict[str, float],
    created_emu: float,
    outage: tuple[float, float] | None,
    log_path: Path,
) -> dict[str, Any]:
    """What the burst and outage scenarios report beyond the sweep's columns."""
    detected = result["detected"]
    started = result["started"]
    seen_from = {j: max(e, started.get(j, e)) for j, e in ends.items()}
    statuses = counters.get("statuses", {})
    by_status: dict[str, int] = {}
    for per_call in statuses.values():
        for code, count in per_call.items():
            by_status[code] = by_status.get(code, 0) + count
    pollers = result.get("pollers", [])
    out: dict[str, Any] = {
        "scenario": args.scenario,
        "interval": args.interval,
        "statuses_by_call": statuses,
        "http_503": by_status.get("503", 0),
        "list_calls": int(counters.get("requests", {}).get("list", 0)),
        "details_calls": int(counters.get("requests", {}).get("show", 0)),
        "poller": {k: sum(int(p[k]) for p in pollers) for k in ("rounds", "list_calls", "details_calls")}
        if pollers
        else None,
        "pollers_stopped": len(pollers),
        "end_window_s": [min(ends.values()) - created_emu, max(ends.values()) - created_emu],
        # Per job: end (s after the first job was created), detection latency (None: not detected).
        "points": [
            [ends[j] - created_emu, (detected[j][0] - seen_from[j]) if j in detected else None]
            for j in sorted(ends, key=ends.__getitem__)
        ],
    }
    if outage is not None:
        begin, end = outage
        during = [j for j, e in ends.items() if begin <= e < end]
        lat = [detected[j][0] - ends[j] for j in during if j in detected]
        after = [detected[j][0] - end for j in during if j in detected]
        out.update(
            {
                "outage_s": [begin - created_emu, end - created_emu],
                "outage_jobs": len(during),
                "outage_jobs_detected": len(lat),
                "outage_latency_p50": percentile(lat, 50),
                "outage_latency_p95": percentile(lat, 95),
                "outage_latency_max": max(lat) if lat else float("nan"),
                # Detection minus the outage's end: what the backoff adds once the service is back.
                "after_outage_p50": percentile(after, 50),
                "after_outage_max": max(after) if after else float("nan"),
                "others_latency_p95": percentile(
                    [t - seen_from[j] for j, (t, _) in detected.items() if j not in set(during)], 95
                ),
            }
        )
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    # The poller's own log lines (the triggers repeat each notice in their task's log).
    own = [line for line in text.splitlines() if "metastudio.tenant]" in line]
    out["log_outage_started"] = sum(1 for line in own if "calls fail for project" in line)
    out["log_outage_ended"] = sum(1 for line in own if "calls work again for project" in line)
    return out


def _proc_cpu(pid: int) -> float:
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except Exception:
        return float("nan")


def summarize(
    scheme: str,
    n: int,
    args: argparse.Namespace,
    result: dict[str, Any],
    counters: dict[str, Any],
    samples: list[tuple[float, int, int]],
    ends: dict[str, float],
    create_s: float,
    emu_cpu: float,
) -> dict[str, Any]:
    interval_real = args.interval / args.time_scale
    w = result["window"]
    run_real = w["end"] - w["start"]
    clock = result["clock"]
    window_end_emu = clock["emu0"] + (w["end"] - clock["mono0"]) * clock["scale"]
    detected = result["detected"]
    # A wait cannot see a job end before it starts: latency counts from the later of the two. A job
    # can end before its wait starts when thousands of waits start at once (the loop is busy).
    started = result["started"]
    seen_from = {j: max(e, started.get(j, e)) for j, e in ends.items()}
    ended_before_wait = sum(1 for j, e in ends.items() if j in started and started[j] > e)
    latencies = [t - seen_from[j] for j, (t, _) in detected.items()]
    statuses: dict[str, int] = {}
    for _, status in detected.values():
        statuses[status] = statuses.get(status, 0) + 1
    # Jobs that ended at least one interval before the run stopped should have been seen. Their
    # latency is at least (run end - job end): counted as that lower bound in the percentiles.
    due = [j for j, e in ends.items() if e <= window_end_emu - args.interval]
    censored = [window_end_emu - seen_from[j] for j in due if j not in detected]
    missed = len(censored)
    in_window = [s for s in samples if w["start"] <= s[0] <= w["end"] + interval_real]
    per_interval = [b[1] - a[1] for a, b in zip(in_window, in_window[1:], strict=False)]
    total = int(counters["total"])
    intervals = run_real / interval_real
    return {
        "scheme": scheme,
        "n": n,
        "run_real_s": run_real,
        "run_emulated_min": run_real * args.time_scale / 60.0,
        "create_jobs_s": create_s,
        "calls": total,
        "calls_by_call": counters.get("requests", {}),
        "calls_per_interval": total / intervals if intervals else float("nan"),
        "calls_per_interval_peak": max(per_interval) if per_interval else float("nan"),
        "throttled": int(counters["throttled_total"]),
        "client_counts": result["client_counts"],
        "detected": len(detected),
        "due": len(due),
        "missed": missed,
        "ended_before_wait": ended_before_wait,
        "statuses": statuses,
        "latency_p50": percentile(latencies + censored, 50),
        "latency_p95": percentile(latencies + censored, 95),
        "latency_max": max(latencies + censored) if latencies or censored else float("nan"),
        # True when undetected jobs may lie above the percentile: it is then a lower bound.
        "latency_p50_lower_bound": _lower_bound(latencies, censored, 50),
        "latency_p95_lower_bound": _lower_bound(latencies, censored, 95),
        "latency_detected_p95": percentile(latencies, 95),
        # The slowest detections (beyond two intervals), for diagnosis: job, emulated end, detection, status.
        "late": sorted(
            (
                [j, ends[j], started.get(j), t, st]
                for j, (t, st) in detected.items()
                if t - seen_from[j] > 2 * args.interval
            ),
            key=lambda x: x[1] - x[3],
        )[:50],
        "cpu_s": result["cpu_s"],
        "rss_base_mb": result["rss_base_mb"],
        "rss_added_mb": result["rss_added_mb"],
        "lag_ms": result["lag_ms"],
        "pending_at_end": int(w["pending"]),
        "emulator_cpu_s": emu_cpu,
    }


def _lower_bound(latencies: list[float], censored: list[float], q: float) -> bool:
    if not censored:
        return False
    value = percentile(latencies + censored, q)
    return min(censored) <= value or len(censored) > (len(latencies) + len(censored)) * (1 - q / 100)


def _lat(r: dict[str, Any], q: int) -> str:
    return (">= " if r.get(f"latency_p{q}_lower_bound") else "") + fmt(r[f"latency_p{q}"])


def render(rows: list[dict[str, Any]], args: argparse.Namespace, env: str) -> str:
    headers = [
        "N",
        "scheme",
        "run (real s / emulated min)",
        "API calls",
        "calls / interval (mean / peak)",
        "429s",
        "detected / N (missed)",
        "latency p50 / p95 / max (emulated s)",
        "CPU s",
        "RSS added MB",
        "loop lag p99 / max (ms)",
        "emulator CPU s",
    ]
    body = []
    for r in rows:
        body.append(
            [
                fmt(r["n"]),
                r["scheme"]
                + (f" (capped at {r['capped_seconds']:g} s)" if r.get("capped_seconds") else "")
                + (f" #{r['run']} (seed {r['seed']})" if args.repeat > 1 else ""),
                f"{r['run_real_s']:.0f} / {r['run_emulated_min']:.0f}",
                fmt(r["calls"]),
                f"{fmt(r['calls_per_interval'])} / {fmt(r['calls_per_interval_peak'], 0)}",
                fmt(r["throttled"]),
                f"{fmt(r['detected'])} / {fmt(r['n'])} ({fmt(r['missed'])})",
                f"{_lat(r, 50)} / {_lat(r, 95)} / {'>= ' if r['missed'] else ''}{fmt(r['latency_max'])}",
                fmt(r["cpu_s"], 2),
                fmt(r["rss_added_mb"]),
                f"{fmt(r['lag_ms']['p99'])} / {fmt(r['lag_ms']['max'])}",
                fmt(r["emulator_cpu_s"], 1),
            ]
        )
    ratio_rows = []
    by = {(r["scheme"], r["n"], r["run"]): r for r in rows}
    for n, run in sorted({(r["n"], r["run"]) for r in rows}):
        a, b = by.get(("naive", n, run)), by.get(("provider", n, run))
        if a and b and b["calls"]:
            ratio_rows.append(
                [
                    fmt(n) + (f" #{run}" if args.repeat > 1 else ""),
                    f"{a['calls'] / b['calls']:,.0f}x",
                    f"{fmt(a['throttled'])} vs {fmt(b['throttled'])}",
                ]
            )
    seed_note = " + run - 1" if args.repeat > 1 else ""
    params = (
        f"time scale {args.time_scale:g} (1 real s = {args.time_scale:g} emulated s); poll interval "
        f"{args.interval:g} emulated s; jobs end {args.min_minutes:g}-{args.max_minutes:g} emulated min "
        f"after creation (uniform, seed {args.seed}{seed_note}); waits start spread over "
        f"{args.ramp_intervals:g} interval(s); emulator quotas: "
        "show 1/s, list 1/s per tenant (emulated time); provider client-side `rate_limits` = documented x "
        f"time scale; naive: one httpx client per wait, 429 retried after Retry-After up to "
        f"{args.naive_retries} times; each run stops {args.tail_intervals:g} intervals after the last job "
        f"ends or after {args.max_seconds:g} real s."
    )
    parts = [
        "## Polling: naive per-job vs shared quota-aware poller",
        "",
        f"Command: `{args.command_line}`",
        "",
        f"Parameters: {params}",
        "",
        f"Environment: {env}",
        "",
        markdown_table(headers, body),
        "",
        markdown_table(["N", "naive calls / provider calls", "429s naive vs provider"], ratio_rows),
        "",
        "Latency = emulated time the wait got its event minus the job's emulated end time (or the wait's "
        "start, if later). CPU s and RSS "
        "added are the worker process's (the emulator runs in its own process). Naive polling wants N "
        "calls per interval; what it reaches is bounded by the quota (429s), its own CPU and the "
        "emulator's capacity. 'missed' = jobs that ended at least one interval before the run stopped "
        "but were not detected; they count in the latency percentiles with their latency so far (run end "
        "- job end), and a percentile they can reach is shown as a lower bound (>=).",
    ]
    parts.append(
        "\nLoad average (1, 5, 15 min) before -> after each run: "
        + "; ".join(f"{r['scheme']} N={r['n']}: {r['load']}" for r in rows if "load" in r)
        + "."
    )
    for r in rows:
        if r.get("ended_before_wait"):
            parts.append(
                f"\nNote: {r['scheme']} N={r['n']}: {r['ended_before_wait']} jobs ended before their wait "
                "started (the loop was busy starting the other waits); their latency counts from the wait's "
                "start."
            )
    notes = [r for r in rows if r["missed"] or r["pending_at_end"]]
    for r in notes:
        parts.append(
            f"\nNote: {r['scheme']} N={r['n']}: {r['missed']} jobs that had ended were not detected, "
            f"{r['pending_at_end']} waits still pending when the run stopped."
        )
    return "\n".join(parts)


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for scheme, style in (("naive", "o-"), ("provider", "s-")):
        rs = sorted((r for r in rows if r["scheme"] == scheme and r["run"] == 1), key=lambda r: r["n"])
        more = [r for r in rows if r["scheme"] == scheme and r["run"] > 1]  # repeats: points only
        if not rs:
            continue
        ns = [r["n"] for r in rs]
        line = ax1.plot(ns, [max(r["calls_per_interval"], 0.1) for r in rs], style, label=scheme)[0]
        ax2.plot(ns, [max(r["latency_p95"], 0.1) for r in rs], style, label=scheme, color=line.get_color())
        if scheme == "naive":
            ax1.plot(ns, ns, ":", color=line.get_color(), lw=1, label="naive: calls wanted (N)")
        if more:
            kw = {"marker": style[0], "ls": "none", "color": line.get_color(), "alpha": 0.5}
            ax1.plot([r["n"] for r in more], [max(r["calls_per_interval"], 0.1) for r in more], **kw)
            ax2.plot([r["n"] for r in more], [max(r["latency_p95"], 0.1) for r in more], **kw)
    for ax, title, ylabel in (
        (ax1, "API calls per poll interval", "calls / interval"),
        (ax2, "p95 detection latency", "emulated seconds"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent waits (N)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    quota = 60  # 1 details call/s over a 60 s interval (the list call has its own 1/s)
    ax1.axhline(quota, color="grey", ls="--", lw=1)
    ax1.annotate(f"details quota: {quota} calls / 60 s", (ax1.get_xlim()[0], quota), fontsize=8, va="bottom")
    for r in rows:
        note = []
        if r.get("capped_seconds"):
            note.append(f"capped at {r['capped_seconds']:g} s")
        if r.get("latency_p95_lower_bound"):
            note.append("lower bound")
        if note:
            for ax, y in ((ax1, r["calls_per_interval"]), (ax2, r["latency_p95"])):
                ax.annotate(
                    ", ".join(note) if ax is ax2 else note[0],
                    (r["n"], max(y, 0.1)),
                    fontsize=7,
                    xytext=(-8, -12),
                    textcoords="offset points",
                    ha="right",
                )
    save_chart(fig, path)


def render_scenario(rows: list[dict[str, Any]], args: argparse.Namespace, env: str) -> str:
    """The burst and outage scenarios: detection, calls by kind, 429s and 503s, how the waits ended."""
    outage = args.scenario == "outage"
    headers = [
        "N",
        "scheme",
        "run (real s)",
        "job ends (s after creation)",
        "API calls (list / details)",
        "429s",
        "503s",
        "poller rounds / list / details",
        "waits ended (statuses)",
        "detected / N (missed)",
        "latency p50 / p95 / max (s)",
    ]
    if outage:
        headers += ["ended during outage: latency p50 / p95 / max (s)", "after outage end p50 / max (s)"]
    headers += ["CPU s", "loop lag p99 / max (ms)"]
    body = []
    for r in rows:
        p = r.get("poller")
        cells = [
            fmt(r["n"]),
            r["scheme"] + (f" #{r['run']} (seed {r['seed']})" if args.repeat > 1 else ""),
            f"{r['run_real_s']:.0f}",
            f"{r['end_window_s'][0]:.0f}-{r['end_window_s'][1]:.0f}",
            f"{fmt(r['calls'])} ({fmt(r['list_calls'])} / {fmt(r['details_calls'])})",
            fmt(r["throttled"]),
            fmt(r["http_503"]),
            f"{fmt(p['rounds'])} / {fmt(p['list_calls'])} / {fmt(p['details_calls'])}" if p else "-",
            ", ".join(f"{k} {v:,}" for k, v in sorted(r["statuses"].items())) or "-",
            f"{fmt(r['detected'])} / {fmt(r['n'])} ({fmt(r['missed'])})",
            f"{_lat(r, 50)} / {_lat(r, 95)} / {'>= ' if r['missed'] else ''}{fmt(r['latency_max'])}",
        ]
        if outage:
            cells += [
                f"{fmt(r['outage_latency_p50'])} / {fmt(r['outage_latency_p95'])} / "
                f"{fmt(r['outage_latency_max'])} ({r['outage_jobs_detected']} of {r['outage_jobs']} jobs)",
                f"{fmt(r['after_outage_p50'])} / {fmt(r['after_outage_max'])}",
            ]
        cells += [fmt(r["cpu_s"], 2), f"{fmt(r['lag_ms']['p99'])} / {fmt(r['lag_ms']['max'])}"]
        body.append(cells)
    window = f"{args.min_minutes * 60:g}-{args.max_minutes * 60:g}"
    if outage:
        title = "## Polling through an outage"
        what = (
            f"{args.outage_seconds:g} real s of `503` on every service call, beginning {args.outage_at:g} s "
            "after the jobs were created"
        )
    else:
        title = "## Polling a burst of finishing jobs"
        what = "no faults"
    params = (
        f"time scale {args.time_scale:g}; poll interval {args.interval:g} s; jobs end {window} s after the "
        f"first one is created (uniform, seed {args.seed}{' + run - 1' if args.repeat > 1 else ''}); waits "
        f"start spread over {args.ramp_intervals:g} interval(s); emulator quotas: show 1/s, list 1/s per "
        "tenant; the provider's connection has the same `rate_limits`, so a 429 is a bug, not a design "
        f"limit; naive: one httpx client per wait, 429 retried after Retry-After up to {args.naive_retries} "
        f"times; {what}; each run stops when every wait has ended, or after {args.max_seconds:g} real s."
    )
    parts = [
        title,
        "",
        f"Command: `{args.command_line}`",
        "",
        f"Parameters: {params}",
        "",
        f"Environment: {env}",
        "",
        markdown_table(headers, body),
        "",
        "Latency = time the wait got its event minus the job's end (or the wait's start, if later). API "
        "calls, 429s and 503s are counted by the emulator (the hook's own retries included); poller "
        "rounds / list / details are the provider's shared poller's counters (one poller: one tenant). "
        "'waits ended' counts the trigger events by status (every wait must end with `success`).",
    ]
    if outage:
        parts.append(
            "\n'ended during outage': jobs whose end fell inside the outage; their latency is measured "
            "from the job's end, so it includes the rest of the outage. 'after outage end' = detection "
            "minus the outage's end: what the backoff (full jitter, up to 30 s) adds once the service is "
            "back."
        )
    for r in rows:
        if r.get("log_outage_started") is not None and (r["log_outage_started"] or r["log_outage_ended"]):
            parts.append(
                f"\n{r['scheme']}: the poller logged {r['log_outage_started']} outage start(s) and "
                f"{r['log_outage_ended']} end(s) (one per kind of call: list, details)."
            )
    parts.append(
        "\nLoad average (1, 5, 15 min) before -> after each run: "
        + "; ".join(f"{r['scheme']} #{r['run']}: {r['load']}" for r in rows if "load" in r)
        + "."
    )
    for r in rows:
        if r["missed"] or r["pending_at_end"]:
            parts.append(
                f"\nNote: {r['scheme']}: {r['missed']} jobs that had ended were not detected, "
                f"{r['pending_at_end']} waits still pending when the run stopped."
            )
    return "\n".join(parts)


def chart_scenario(rows: list[dict[str, Any]], path: Path) -> None:
    """Detection latency of every job against the time it ended; the outage shaded."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for r in rows:
        pts = [(x, y) for x, y in r["points"] if y is not None]
        label = f"{r['scheme']} #{r['run']}" if len(rows) > len({x["scheme"] for x in rows}) else r["scheme"]
        ax.plot([x for x, _ in pts], [max(y, 0.05) for _, y in pts], ".", ms=3, alpha=0.6, label=label)
        if r.get("outage_s"):
            ax.axvspan(*r["outage_s"], color="red", alpha=0.08, label="outage (503)")
    if rows[0].get("scenario") == "burst":
        target = rows[0]["interval"] + 2.0
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target p95: interval + 2 s = {target:g} s")
    ax.set_yscale("log")
    ax.set_xlabel("job end (s after the jobs were created)")
    ax.set_ylabel("detection latency (s)")
    ax.set_title(f"{rows[0].get('scenario', '')}: detection latency per job")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_chart(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="sweep",
        help="sweep: N = 10 ... 10,000 (default); burst: 1,000 jobs ending within 45 s, 10 s interval, "
        "time scale 1; outage: 200 waits, 60 s of 503s on every call in the middle",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: N=10,100, short jobs")
    parser.add_argument(
        "--n", default="10,100,1000,10000", help="comma-separated N (default 10,100,1000,10000)"
    )
    parser.add_argument("--schemes", default=",".join(SCHEMES), help="naive,provider")
    parser.add_argument("--time-scale", type=float, default=60.0, help="emulated seconds per real second")
    parser.add_argument("--interval", type=float, default=60.0, help="poll interval, emulated seconds")
    parser.add_argument("--min-minutes", type=float, default=20.0, help="shortest job, emulated minutes")
    parser.add_argument("--max-minutes", type=float, default=60.0, help="longest job, emulated minutes")
    parser.add_argument(
        "--tail-intervals", type=float, default=30.0, help="waits give up this long after the last job ends"
    )
    parser.add_argument("--max-seconds", type=float, default=110.0, help="real-time cap of one run")
    parser.add_argument("--naive-retries", type=int, default=3, help="429 retries per naive poll")
    parser.add_argument(
        "--naive-large-n",
        type=int,
        default=10000,
        help="from this N on, the naive run is capped at --naive-large-seconds (it saturates the machine)",
    )
    parser.add_argument("--naive-large-seconds", type=float, default=40.0, help="cap of large naive runs")
    parser.add_argument(
        "--ramp-intervals",
        type=float,
        default=1.0,
        help="waits start at random times over this many intervals",
    )
    parser.add_argument(
        "--naive-backoff", type=float, default=1.0, help="naive 429 backoff without Retry-After, emulated s"
    )
    parser.add_argument(
        "--outage-at", type=float, default=0.0, help="real s after the jobs are created: the outage begins"
    )
    parser.add_argument(
        "--outage-seconds", type=float, default=0.0, help="real s of 503s on every call (0: no outage)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--repeat", type=int, default=1, help="run everything this many times (seed + run - 1)"
    )
    parser.add_argument("--name", default=None, help="results file name (default polling, or polling-quick)")
    parser.add_argument("--replot", metavar="NAME", help="redraw results/NAME.md and .png from NAME.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scenario != "sweep":  # the scenario's defaults, under whatever was given explicitly
        parser.set_defaults(**SCENARIOS[args.scenario])
        args = parser.parse_args(argv)
    elif args.outage_seconds:
        parser.error("--outage-seconds needs --scenario burst or outage (the sweep reports no outage)")
    if args.worker:
        run_worker(args.worker)
        return 0
    if args.replot:  # redraw the table and chart of a saved run
        saved = json.loads((RESULTS / f"{args.replot}.json").read_text())
        old = argparse.Namespace(**{"scenario": "sweep", **saved["args"]})
        scenario = old.scenario != "sweep"
        text = (render_scenario if scenario else render)(saved["rows"], old, saved["environment"])
        print(text)
        write_results(args.replot, text, saved)
        (chart_scenario if scenario else chart)(saved["rows"], RESULTS / f"{args.replot}.png")
        return 0
    args.command_line = command_line("bench_polling.py", argv)
    if args.quick and args.scenario == "burst":
        args.n, args.min_minutes, args.max_minutes, args.max_seconds = "100", 0.25, 0.5, 60.0
    elif args.quick and args.scenario == "outage":
        args.n, args.min_minutes, args.max_minutes, args.max_seconds = "50", 10 / 60, 70 / 60, 100.0
        args.outage_at, args.outage_seconds = 25.0, 20.0
    elif args.quick:
        args.n = "10,100"
        args.min_minutes, args.max_minutes = 3.0, 8.0
        args.max_seconds = 30.0
    base = "polling" if args.scenario == "sweep" else f"polling-{args.scenario}"
    name = args.name or (f"{base}-quick" if args.quick else base)
    ns = [int(x) for x in args.n.split(",") if x]
    schemes = [s for s in args.schemes.split(",") if s]
    env = environment()
    rows = []
    for rep in range(args.repeat):
        for i, n in enumerate(ns):
            # Alternate which scheme goes first, so slow drifts of the shared machine hit both alike.
            order = schemes if (i + rep) % 2 == 0 else list(reversed(schemes))
            for scheme in order:
                print(f"running {scheme} N={n} (run {rep + 1}) ...", file=sys.stderr, flush=True)
                load_before = loadavg()
                row = run_one(scheme, n, args, args.seed + rep)
                row["load"] = f"{load_before} -> {loadavg()}"
                row["run"] = rep + 1
                print(
                    f"  {row['calls']} calls, {row['throttled']} 429s, p95 {row['latency_p95']:.1f} s, "
                    f"{row['detected']}/{row['n']} detected, cpu {row['cpu_s']:.1f} s"
                    + (f", poller {row['poller']}" if row.get("poller") else ""),
                    file=sys.stderr,
                    flush=True,
                )
                rows.append(row)
    rows.sort(key=lambda r: (r["n"], r["run"], SCHEMES.index(r["scheme"])))
    scenario = args.scenario != "sweep"
    text = (render_scenario if scenario else render)(rows, args, env)
    print(text)
    write_results(name, text, {"args": vars(args), "environment": env, "rows": rows})
    (chart_scenario if scenario else chart)(rows, RESULTS / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
