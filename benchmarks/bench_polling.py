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
        "clock": clock.to_dict(),
    }
    Path(spec["result_path"]).write_text(json.dumps(result))


# =====================================================================================================
# orchestrator
# =====================================================================================================


def create_jobs(
    admin: Admin, n: int, args: argparse.Namespace, seed: int
) -> tuple[list[str], dict[str, float]]:
    """N jobs with seeded random durations (the same for both schemes); returns ids and emulated ends."""
    rng = random.Random(f"jobs:{seed}:{n}")
    ids = []
    for i in range(n):
        total = rng.uniform(args.min_minutes, args.max_minutes) * 60.0
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
                t0 = time.monotonic()
                ids, ends = create_jobs(admin, n, args, seed)
                create_s = time.monotonic() - t0
                jobs_path = Path(tmp) / "jobs.json"
                deadline_emulated = max(ends.values()) + args.tail_intervals * args.interval
                jobs_path.write_text(json.dumps({"job_ids": ids, "deadline_emulated": deadline_emulated}))
                worker.stdin.write(f"{jobs_path}\n")
                worker.stdin.flush()
                next_sample = time.monotonic()
                watchdog = next_sample + max_seconds + 120.0
                while worker.poll() is None:
                    if time.monotonic() > watchdog:
                        raise RuntimeError(f"worker {scheme} N={n} hangs; see {log_path}")
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
    if row["late"]:
        row["request_log"] = request_log
    return row


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--repeat", type=int, default=1, help="run everything this many times (seed + run - 1)"
    )
    parser.add_argument("--name", default=None, help="results file name (default polling, or polling-quick)")
    parser.add_argument("--replot", metavar="NAME", help="redraw results/NAME.md and .png from NAME.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return 0
    if args.replot:  # redraw the table and chart of a saved run
        saved = json.loads((RESULTS / f"{args.replot}.json").read_text())
        old = argparse.Namespace(**saved["args"])
        text = render(saved["rows"], old, saved["environment"])
        print(text)
        write_results(args.replot, text, saved)
        chart(saved["rows"], RESULTS / f"{args.replot}.png")
        return 0
    args.command_line = command_line("bench_polling.py", argv)
    if args.quick:
        args.n = "10,100"
        args.min_minutes, args.max_minutes = 3.0, 8.0
        args.max_seconds = 30.0
    name = args.name or ("polling-quick" if args.quick else "polling")
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
                    f"{row['detected']}/{row['n']} detected, cpu {row['cpu_s']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
                rows.append(row)
    rows.sort(key=lambda r: (r["n"], r["run"], SCHEMES.index(r["scheme"])))
    text = render(rows, args, env)
    print(text)
    write_results(name, text, {"args": vars(args), "environment": env, "rows": rows})
    chart(rows, RESULTS / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
