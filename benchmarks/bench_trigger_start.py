"""CPU per trigger start: N triggers registering with the shared poller in one event loop.

A triggerer that (re)starts with N deferred tasks runs N ``trigger.run()`` at once. Each needs the
connection (secrets backends, Fernet decryption: about a millisecond of CPU on the event loop) before
it can register its job with the tenant's poller. Compared side by side, in alternating order:

* ``shared lookup``: what the provider does (triggers of one connection in one loop share one
  lookup for ``CONFIG_TTL`` = 30 s);
* ``lookup per trigger``: ``CONFIG_TTL = 0``, every trigger looks its connection up, as peers' triggers
  do (one hook per trigger).

Measured: ``process_time`` from the first ``run()`` until all N watches are registered, per trigger.
The emulator runs in its own process; the jobs are running for an hour, so no trigger finishes.

Run: ``.venv/bin/python benchmarks/bench_trigger_start.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from _common import (
    RESULTS,
    Admin,
    EmulatorProcess,
    command_line,
    environment,
    markdown_table,
    median,
    pyplot,
    save_chart,
    write_results,
)

SCHEMES = {"shared lookup": 30.0, "lookup per trigger": 0.0}


async def start_all(job_ids: list[str]) -> tuple[float, float]:
    """Start one trigger per job; return (CPU s, wall s) until every watch is registered."""
    from airflow_provider_metastudio.tenant import registry
    from airflow_provider_metastudio.triggers.picture_modeling import MetaStudioPictureModelingJobTrigger

    triggers = [
        MetaStudioPictureModelingJobTrigger(job_id=j, end_time=time.time() + 3600, poll_interval=3600)
        for j in job_ids
    ]
    loop = asyncio.get_running_loop()
    c0, t0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.ensure_future(t.run().__anext__()) for t in triggers]
    while True:
        await asyncio.sleep(0)
        pollers = registry._POLLERS.get(loop, {}).values()
        if sum(len(ws) for p in pollers for ws in p.watches.values()) >= len(job_ids):
            break
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return cpu, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="triggers per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per scheme")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 triggers, 2 runs")
    parser.add_argument("--name", default=None, help="results file name")
    args = parser.parse_args(argv)
    cmd = command_line("bench_trigger_start.py", argv)
    if args.quick:
        args.n, args.repeat = 200, 2
    name = args.name or ("trigger_start-quick" if args.quick else "trigger_start")
    env = environment()

    from airflow_provider_metastudio.tenant import connections

    samples: dict[str, list[float]] = {s: [] for s in SCHEMES}
    with EmulatorProcess(time_scale=1.0, quotas=False) as emu:
        admin = Admin(emu.url)
        job_ids = [admin.create_job(name=f"start-{i}", waiting_seconds=3600)["job_id"] for i in range(args.n)]
        admin.close()
        os.environ["AIRFLOW_CONN_METASTUDIO_DEFAULT"] = emu.connection_json(rate_limits=False)
        for r in range(args.repeat + 1):  # run 0 warms up (imports, first connection) and is dropped
            for scheme in SCHEMES if r % 2 else reversed(list(SCHEMES)):
                connections.CONFIG_TTL = SCHEMES[scheme]
                cpu, _ = asyncio.run(start_all(job_ids))
                if r:
                    samples[scheme].append(cpu / args.n * 1e6)
    base = median(samples["lookup per trigger"])
    rows = [
        [s, f"{median(v):,.0f}", ", ".join(f"{x:,.0f}" for x in v), f"{median(v) / base:.2f}x"]
        for s, v in samples.items()
    ]
    text = "\n".join(
        [
            "## Trigger start: CPU per trigger until its job is registered with the poller",
            "",
            f"Command: `{cmd}`",
            "",
            f"Parameters: {args.n:,} triggers per run, {args.repeat} runs per scheme (alternating, one "
            "warm-up run dropped), emulator in its own process, jobs running for an hour.",
            "",
            f"Environment: {env}",
            "",
            markdown_table(["scheme", "CPU µs / trigger (median)", "runs", "vs lookup per trigger"], rows),
        ]
    )
    print(text)
    write_results(name, text, {"args": vars(args), "environment": env, "samples_us": samples})
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(list(samples), [median(v) for v in samples.values()])
        ax.set_ylabel("CPU µs per trigger start")
        ax.set_title(f"{args.n:,} triggers starting in one event loop")
        save_chart(fig, RESULTS / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
