"""Creates by URL against the tenant's create quota (documented: 2/s), three ways, one run:

* ``triggerer``: 200 ``MetaStudioCreatePictureModelingJobTrigger`` (what ``deferrable=True`` with a
  ``picture_url`` defers to) in one triggerer-like process: the tenant's create queue paces them.
* ``workers``: 32 worker-like processes creating 6 jobs each with the sync hook (the path of
  ``photo=`` uploads and non-deferrable creates), sharing the host-wide quota file (``hostquota.py``).
* ``two hosts``: the same 32 processes as two hosts of 16 (two reservation directories, as Celery
  workers on two machines): each host paces itself at the full quota, the gateway's 429s (retried
  after ``Retry-After`` + a bounded jitter, older creates sooner) share it out between the hosts.
* ``two triggerers``: 2 triggerers on two hosts x 100 deferred creates, each connection with the
  recommended ``rate_limits`` (``create_by_url`` = quota / triggerers = 1.0).

Measured: wall time against the quota's floor (creates / 2 per second), 429s (the emulator's
count), jobs per name (each must be 1), the longest a create waited against its fair share (the
wait a first-come-first-served queue at the quota gives it), and the most creates the emulator
saw in any one-second window. Each process is a fresh interpreter (``bench_quota``'s harness).

Fair share, two ways: ``k/quota`` for the k-th ask (as if every create had asked at the start: it
gives the first of 32 asks made in the same millisecond 0.5 s, whichever of them the lock served
first), and the wait first come first served at the throughput achieved would give (asks less than
0.1 s apart form one batch whose members may go in any order).

    python benchmarks/bench_creates.py            # ~9 minutes on 2 cores
    python benchmarks/bench_creates.py --quick    # 40 / 8x3 / 8x3 / 2x20 creates
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import bench_quota
from _common import loadavg

REPO = Path(__file__).resolve().parent.parent
QUOTA = 2.0  # documented creates by URL per second per tenant
PICTURE_URL = "https://photos.example.com/face.png"


def _child_workers(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_metastudio.config import MetaStudioConnectionConfig
    from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook

    conn = spec["conn"]
    config = MetaStudioConnectionConfig.from_parts(
        login=conn["login"], password=conn["password"], extra=conn["extra"], host=conn.get("host"),
        port=conn.get("port"), schema=conn.get("schema"),
    )  # fmt: skip
    hook = MetaStudioHook(config=config)
    bench_quota._handshake()
    deadline = time.time() + spec["timeout"]
    rows = []
    for name in spec["names"]:
        asked = time.time()
        try:
            job_id = hook.create_picture_modeling_job_by_url(
                picture_url=PICTURE_URL, style_id="system_male_001", name=name, deadline=deadline
            ).job_id
        except Exception as e:  # counted by the parent
            job_id = f"ERROR {type(e).__name__}: {e}"
        rows.append({"name": name, "job_id": job_id, "asked": asked, "done": time.time()})
    return {"rows": rows}


def _child_triggers(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_metastudio.triggers.picture_modeling import (
        MetaStudioCreatePictureModelingJobTrigger,
    )

    async def one(name: str) -> dict[str, Any]:
        trigger = MetaStudioCreatePictureModelingJobTrigger(
            picture_url=PICTURE_URL,
            style_id="system_male_001",
            name=name,
            created_since=(datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat(),
            end_time=time.time() + spec["timeout"],
        )
        asked = time.time()
        async for event in trigger.run():
            p = event.payload
            job_id = p.get("job_id") if p["status"] == "created" else f"ERROR {p}"
            return {"name": name, "job_id": job_id, "asked": asked, "done": time.time()}
        return {"name": name, "job_id": "ERROR no event", "asked": asked, "done": time.time()}

    async def main() -> list[dict[str, Any]]:
        return await asyncio.gather(*(one(n) for n in spec["names"]))

    bench_quota._handshake()
    return {"rows": asyncio.run(main())}


def _place(spec: dict[str, Any]) -> None:
    """Point the child's connection at its host's reservation directory (``bench_hosts``: the
    directories and how many names each process has; processes are split evenly, in order)."""
    extra = spec["conn"]["extra"]
    hosts = extra.pop("bench_hosts", None)
    if hosts:
        process = int(spec["names"][0].rsplit(".", 1)[1]) // hosts["per_process"]
        extra["host_quota"] = hosts["dirs"][process * len(hosts["dirs"]) // hosts["processes"]]


def fair_shares(asked: list[float], rate: float, tie: float = 0.1) -> list[float]:
    """The wait first come first served at ``rate`` gives each of the (sorted) asks; asks less than
    ``tie`` apart are one batch (any order among them is fair): each gets the batch's last finish."""
    shares: list[float] = []
    free = float("-inf")
    i = 0
    while i < len(asked):
        j = i
        while j + 1 < len(asked) and asked[j + 1] - asked[j] < tie:
            j += 1
        for k in range(i, j + 1):
            free = max(asked[k], free) + 1.0 / rate
        shares += [max(free - asked[k], 1.0 / rate) for k in range(i, j + 1)]
        i = j + 1
    return shares


CHILDREN = {"create_workers": _child_workers, "create_triggers": _child_triggers}


def run(
    label: str, mode: str, names_per_process: list[list[str]], rates: dict[str, float] | None, hosts: int = 1
) -> dict:
    """One scenario on a fresh emulator; ``hosts``: how many hosts' reservation directories the
    processes are split over."""
    from airflow_provider_metastudio.testing import EmulatorConfig, MetaStudioEmulator

    n = sum(len(x) for x in names_per_process)
    with (
        MetaStudioEmulator(EmulatorConfig(waiting_seconds=3600)) as emu,
        tempfile.TemporaryDirectory() as tmp,
    ):
        conn = emu.connection_dict()
        if rates:
            conn["extra"]["rate_limits"] = rates
        dirs = [str(Path(tmp) / f"host{h}") for h in range(hosts)]
        conn["extra"]["bench_hosts"] = {
            "dirs": dirs,
            "per_process": len(names_per_process[0]),
            "processes": len(names_per_process),
        }
        load = loadavg()
        results = bench_quota.run_processes(
            mode, conn, names_per_process, timeout=900.0, script=Path(__file__)
        )
        rows = [r for res in results for r in res["rows"]]
        log = [e for e in emu.recorder.request_log() if e["call"] == "create_by_url"]
        created = Counter(r["info"]["name"] for r in emu.jobs.records())
    failed = [r for r in rows if str(r["job_id"]).startswith("ERROR")]
    start = min(r["asked"] for r in rows)
    wall = max(r["done"] for r in rows) - start
    floor = n / QUOTA
    waits = sorted(r["done"] - r["asked"] for r in rows)
    # Fair share: what first come first served at the quota gives the k-th of n concurrent asks.
    order = sorted(rows, key=lambda r: r["asked"])
    fair = [max((k + 1) / QUOTA, 1.0 / QUOTA) for k in range(len(order))]
    ratio = max((r["done"] - r["asked"]) / f for r, f in zip(order, fair, strict=True))
    fcfs = fair_shares([r["asked"] for r in order], n / wall)
    fcfs_ratio = max((r["done"] - r["asked"]) / f for r, f in zip(order, fcfs, strict=True))
    ok_times = sorted(e["time"] for e in log if e["status"] == 200)
    window = max((sum(1 for t in ok_times if s <= t < s + 1.0) for s in ok_times), default=0)
    return {
        "scenario": label,
        "creates": n,
        "failed": len(failed),
        "failures": [r["job_id"] for r in failed][:3],
        "throttled": sum(1 for e in log if e["status"] == 429),
        "jobs_per_name": dict(Counter(created.values())),
        "wall_s": wall,
        "floor_s": floor,
        "wall_over_floor": wall / floor,
        "max_wait_s": waits[-1],
        "max_wait_over_fair_share": ratio,
        "max_wait_over_fcfs_share": fcfs_ratio,
        "max_creates_in_1s": window,
        "load": f"{load} -> {loadavg()}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        _place(spec)
        import os

        os.environ["AIRFLOW_CONN_METASTUDIO_DEFAULT"] = json.dumps(spec["conn"])
        Path(spec["result_path"]).write_text(json.dumps(CHILDREN[spec["mode"]](spec)))
        return 0
    total, workers, per_worker, half = (40, 8, 3, 20) if args.quick else (200, 32, 6, 100)
    names = [f"bench.create.{i}" for i in range(max(total, workers * per_worker))]
    rows = [
        run(f"1 triggerer x {total} deferred creates", "create_triggers", [names[:total]], None),
        run(
            f"{workers} workers x {per_worker} creates (sync hook), one host",
            "create_workers",
            [names[k * per_worker : (k + 1) * per_worker] for k in range(workers)],
            None,
        ),
        run(
            f"{workers} workers x {per_worker} creates (sync hook), two hosts of {workers // 2}",
            "create_workers",
            [names[k * per_worker : (k + 1) * per_worker] for k in range(workers)],
            None,
            hosts=2,
        ),
        run(
            f"2 triggerers on two hosts x {half} deferred creates, rate_limits create_by_url {QUOTA / 2:g}",
            "create_triggers",
            [names[:half], names[half : 2 * half]],
            {"create_by_url": QUOTA / 2},
            hosts=2,
        ),
    ]
    lines = [
        "| scenario | creates (failed) | 429s | 429s per created job | jobs per name | wall / floor | "
        "longest wait / fair share (k/quota) | longest wait / FCFS share | most creates in 1 s | "
        "load avg before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = r["throttled"] / max(r["creates"] - r["failed"], 1)
        lines.append(
            f"| {r['scenario']} | {r['creates']} ({r['failed']}) | {r['throttled']} | {per:.2f} | "
            f"{r['jobs_per_name']} | {r['wall_s']:.0f} s / {r['floor_s']:.0f} s = "
            f"{r['wall_over_floor']:.2f}x | "
            f"{r['max_wait_s']:.0f} s, {r['max_wait_over_fair_share']:.2f}x | "
            f"{r['max_wait_over_fcfs_share']:.2f}x | {r['max_creates_in_1s']} | "
            f"{r['load']} |"
        )
    table = "\n".join(lines)
    print(table)
    name = "creates-quick" if args.quick else "creates"
    out = REPO / "benchmarks" / "results"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = "python benchmarks/bench_creates.py" + (" --quick" if args.quick else "")
    head = (
        f"## Creates by URL at the tenant's quota ({QUOTA:g}/s)\n\nCommand: `{command}`, one run, {when}\n\n"
    )
    (out / f"{name}.md").write_text(head + table + "\n")
    (out / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
