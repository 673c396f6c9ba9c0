"""Several processes, one tenant quota: do 429 retries get everyone through?

Two scenarios against one emulator with the documented quotas (1 details and 1 list call per
second per tenant, real time):

* ``details``: P worker-like processes each make ONE ``get_picture_modeling_job`` in the same
  second (they start together after a handshake). All must succeed.
* ``triggers``: T triggerer-like processes each run W ``MetaStudioPictureModelingJobTrigger(...).run()``
  in one asyncio loop, over jobs that end 20-100 s after creation. Every wait must end ``success``.

Each process is a fresh interpreter (``PYTHONPATH`` = this checkout, so the source is measured, not
an installed wheel), with its own process-wide rate limiter, as workers and triggerers have.

    python benchmarks/bench_quota.py                 # 10 x 1 details, 2 x 500 waits (~3 min)
    python benchmarks/bench_quota.py --quick         # 10 x 1 details, 2 x 50 waits

``tests/integration/test_quota_processes.py`` runs the same functions, smaller, as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


# -- children ----------------------------------------------------------------------------------------


def _child_details(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_metastudio.config import MetaStudioConnectionConfig
    from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook

    conn = spec["conn"]
    config = MetaStudioConnectionConfig.from_parts(
        login=conn["login"],
        password=conn["password"],
        extra=conn["extra"],
        host=conn.get("host"),
        port=conn.get("port"),
        schema=conn.get("schema"),
    )
    hook = MetaStudioHook(config=config)
    _handshake()
    began = time.monotonic()
    try:
        state = str(hook.get_picture_modeling_job(spec["job_ids"][0]).state)
    except Exception as e:  # reported, not raised: the parent counts outcomes
        state = f"{type(e).__name__}: {e}"
    return {"outcomes": [state], "seconds": time.monotonic() - began}


def _child_triggers(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_metastudio.triggers.picture_modeling import MetaStudioPictureModelingJobTrigger

    async def wait(job_id: str, end_time: float) -> str:
        trigger = MetaStudioPictureModelingJobTrigger(
            job_id=job_id, end_time=end_time, poll_interval=spec["poll_interval"]
        )
        async for event in trigger.run():
            return str(event.payload.get("status"))
        return "no event"

    async def main() -> list[str]:
        end_time = time.time() + spec["timeout"]
        return await asyncio.gather(*(wait(j, end_time) for j in spec["job_ids"]))

    _handshake()
    began = time.monotonic()
    outcomes = asyncio.run(main())
    return {"outcomes": outcomes, "seconds": time.monotonic() - began}


def _handshake() -> None:
    """Tell the parent this process is ready (imports done), then sleep until the common start."""
    print("READY", flush=True)
    start = float(sys.stdin.readline())
    # From here on stdout (where Airflow's logging writes) goes to the child's log: nobody reads the
    # pipe after the handshake, and a full pipe would block the process.
    sys.stdout.flush()
    os.dup2(2, 1)
    time.sleep(max(0.0, start - time.time()))


def child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    os.environ["AIRFLOW_CONN_METASTUDIO_DEFAULT"] = json.dumps(spec["conn"])
    result = (_child_details if spec["mode"] == "details" else _child_triggers)(spec)
    Path(spec["result_path"]).write_text(json.dumps(result))


# -- parent ------------------------------------------------------------------------------------------


def run_processes(
    mode: str,
    conn: dict[str, Any],
    job_ids_per_process: list[list[str]],
    *,
    poll_interval: float = 10.0,
    timeout: float = 300.0,
    python: str = sys.executable,
    script: Path | None = None,
) -> list[dict[str, Any]]:
    """Start one child per job-id list, release them all in the same second, collect their results.

    :param mode: ``details`` (one details call) or ``triggers`` (a trigger per job in one loop).
    :param conn: the connection as a dict (``login``, ``password``, ``extra``).
    :param script: the script whose ``--child`` runs the children (default this one); its child
        spec has the list as ``job_ids`` and as ``names``.
    """
    tmp = Path(tempfile.mkdtemp(prefix="bench_quota_"))
    env = dict(os.environ, PYTHONPATH=str(REPO), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    env.setdefault("AIRFLOW_HOME", str(tmp / "airflow_home"))
    env.pop("HTTP_PROXY", None)  # the emulator is on 127.0.0.1: no proxy in between
    env.pop("http_proxy", None)
    children = []
    for i, ids in enumerate(job_ids_per_process):
        spec = {
            "mode": mode,
            "conn": conn,
            "job_ids": ids,
            "names": ids,
            "poll_interval": poll_interval,
            "timeout": timeout,
            "result_path": str(tmp / f"result-{i}.json"),
        }
        (tmp / f"spec-{i}.json").write_text(json.dumps(spec))
        log = open(tmp / f"child-{i}.log", "w")
        proc = subprocess.Popen(
            [python, str((script or Path(__file__)).resolve()), "--child", str(tmp / f"spec-{i}.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            text=True,
        )
        children.append((proc, log))
    for proc, _ in children:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"a child did not start (see {tmp})")
    start = time.time() + 0.5  # everyone's first call in the same second
    for proc, _ in children:
        assert proc.stdin is not None
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
    results = []
    for i, (proc, log) in enumerate(children):
        proc.wait(timeout=timeout + 120)
        log.close()
        path = tmp / f"result-{i}.json"
        if proc.returncode != 0 or not path.exists():
            raise RuntimeError(
                f"child {i} failed with {proc.returncode}: {(tmp / f'child-{i}.log').read_text()[-2000:]}"
            )
        results.append(json.loads(path.read_text()))
    return results


def create_jobs(emulator: Any, n: int, *, ends_within: tuple[float, float], seed: int = 0) -> list[str]:
    """N jobs ending SUCCEED spread evenly over ``ends_within`` seconds from now."""
    import random

    rng = random.Random(seed)
    low, high = ends_within
    ids = []
    for i in range(n):
        job = emulator.jobs.create(
            f"quota_{i}",
            outcome="SUCCEED",
            waiting_seconds=1.0,
            processing_seconds=rng.uniform(low, high) - 1.0,
        )
        ids.append(job["job_id"])
    return ids


def summary(results: list[dict[str, Any]]) -> tuple[Counter[str], float]:
    outcomes = Counter(o for r in results for o in r["outcomes"])
    return outcomes, max(r["seconds"] for r in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--triggerers", type=int, default=2)
    parser.add_argument("--waits", type=int, default=500, help="waits per triggerer")
    parser.add_argument("--quick", action="store_true", help="50 waits per triggerer")
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0
    from airflow_provider_metastudio.testing import EmulatorConfig, MetaStudioEmulator

    waits = 50 if args.quick else args.waits
    rows = []
    # Shares of the tenant quota per triggerer: the default (each takes the whole quota) and what
    # README recommends (each takes 1/T of it).
    share = 1.0 / args.triggerers
    scenarios: list[tuple[str, Any]] = [
        (f"{args.workers} workers x 1 details call", None),
        (f"{args.triggerers} triggerers x {waits} waits, default rate_limits", None),
        (
            f"{args.triggerers} triggerers x {waits} waits, rate_limits show/list {share:g}",
            {"show": share, "list": share},
        ),
    ]
    for i, (label, rates) in enumerate(scenarios):
        with MetaStudioEmulator(EmulatorConfig()) as emu:
            conn = emu.connection_dict()
            if rates:
                conn["extra"]["rate_limits"] = rates
            began = time.monotonic()
            if i == 0:
                job = emu.jobs.create("quota_details", outcome="SUCCEED")
                results = run_processes("details", conn, [[job["job_id"]]] * args.workers)
            else:
                ids = create_jobs(emu, args.triggerers * waits, ends_within=(20.0, 100.0), seed=i)
                per = [ids[k :: args.triggerers] for k in range(args.triggerers)]
                results = run_processes("triggers", conn, per, poll_interval=10.0, timeout=200.0)
            outcomes, slowest = summary(results)
            rows.append(
                {
                    "scenario": label,
                    "outcomes": dict(outcomes),
                    "details_429": emu.recorder.count("show", 429),
                    "list_429": emu.recorder.count("list", 429),
                    "calls": emu.recorder.count("show") + emu.recorder.count("list"),
                    "slowest_s": slowest,
                    "wall_s": time.monotonic() - began,
                }
            )
    lines = [
        "| scenario | outcomes | API calls | 429s (details / list) | slowest process | wall |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(r["outcomes"].items()))
        lines.append(
            f"| {r['scenario']} | {outcomes} | {r['calls']} | {r['details_429']} / {r['list_429']} | "
            f"{r['slowest_s']:.1f} s | {r['wall_s']:.0f} s |"
        )
    table = "\n".join(lines)
    print(table)
    name = "quota-quick" if args.quick else "quota"
    (REPO / "benchmarks" / "results" / f"{name}.md").write_text(table + "\n")
    (REPO / "benchmarks" / "results" / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
