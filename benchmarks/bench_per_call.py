"""Cost of one job-details call: the hook vs requests / http.client with the same signer vs the official SDK.

The emulator runs in its own process with quotas off. Every client keeps one keep-alive connection
and calls ``GET .../picture-modelings/{job_id}`` on the same job. Clients take turns in small
blocks, in a shuffled order each round, so drifts of a shared machine hit all of them alike. Each
call is timed on its own (wall clock, ``perf_counter``); the client's CPU per call is measured per
block (``process_time``, the emulator's CPU is not in it).

Clients:

* ``hook``: ``MetaStudioHook(config=...).get_picture_modeling_job(job_id)`` (requests transport,
  retries, response parsing into ``PictureModelingJob``); the client-side quota is off.
* ``requests + signer``: a ``requests.Session`` with the provider's ``RequestsAkSkAuth``, ``.json()``.
* ``http.client + signer``: a bare keep-alive ``http.client.HTTPConnection``, headers from the same
  ``AkSkSigner``, ``json.loads``.
* ``hook async``: ``await hook.aget_picture_modeling_job(job_id)`` (httpx, what triggers use).
* ``httpx + signer``: an ``httpx.AsyncClient`` with the provider's ``HttpxAkSkAuth``, ``.json()``.
* ``official SDK``: ``huaweicloudsdkmetastudio`` ``MetaStudioClient.show_picture_modeling_job``, when
  installed (``pip install huaweicloudsdkmetastudio``; optional).

The async ones are driven by ``loop.run_until_complete`` per call, which adds the same small cost
to both.

Run: ``.venv/bin/python benchmarks/bench_per_call.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from _common import (
    RESULTS,
    Admin,
    EmulatorProcess,
    command_line,
    environment,
    fmt,
    markdown_table,
    median,
    percentile,
    pyplot,
    save_chart,
    write_results,
)

Call = Callable[[], Any]


def build_clients(
    url: str, conn: dict[str, Any], job_id: str
) -> tuple[dict[str, Call], list[Callable[[], None]]]:
    """name -> zero-argument callable doing one details call; plus cleanup functions."""
    import httpx
    import requests

    from airflow_provider_metastudio.auth import AkSkSigner, HttpxAkSkAuth, RequestsAkSkAuth
    from airflow_provider_metastudio.config import MetaStudioConnectionConfig
    from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook

    ak, sk = conn["login"], conn["password"]
    project_id = conn["extra"]["project_id"]
    show_path = f"/v1/{project_id}/digital-human/stylized/picture-modelings/{job_id}"
    show_url = url + show_path
    loop = asyncio.new_event_loop()
    clients: dict[str, Call] = {}
    cleanup: list[Callable[[], None]] = [loop.close]

    config = MetaStudioConnectionConfig.from_parts(
        login=ak,
        password=sk,
        extra={**conn["extra"], "rate_limits": False},
        # The destination is the connection's host/port/schema (an endpoint extra is not honoured).
        host=conn.get("host"),
        port=conn.get("port"),
        schema=conn.get("schema"),
    )
    hook = MetaStudioHook(config=config)
    clients["hook"] = lambda: hook.get_picture_modeling_job(job_id)
    cleanup.append(hook.close)

    signer = AkSkSigner(ak, sk, project_id=project_id)
    session = requests.Session()
    session.auth = RequestsAkSkAuth(signer)

    def via_requests() -> Any:
        resp = session.get(show_url, timeout=(10, 60))
        resp.raise_for_status()
        return resp.json()

    clients["requests + signer"] = via_requests
    cleanup.append(session.close)

    parts = urlsplit(url)
    conn_hc = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)

    def via_http_client() -> Any:
        headers = signer.sign_request("GET", show_url, {}, None)
        headers.pop("Host", None)  # http.client sends the same Host itself
        conn_hc.request("GET", show_path, headers=headers)
        resp = conn_hc.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"http.client: {resp.status} {body[:200]!r}")
        return json.loads(body)

    clients["http.client + signer"] = via_http_client
    cleanup.append(conn_hc.close)

    ahook = MetaStudioHook(config=config)
    clients["hook async"] = lambda: loop.run_until_complete(ahook.aget_picture_modeling_job(job_id))
    cleanup.insert(0, lambda: loop.run_until_complete(ahook.aclose()))

    async def make_httpx() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            auth=HttpxAkSkAuth(signer), timeout=httpx.Timeout(60, connect=10), trust_env=False
        )

    hx = loop.run_until_complete(make_httpx())

    async def via_httpx() -> Any:
        resp = await hx.get(show_url)
        resp.raise_for_status()
        return resp.json()

    clients["httpx + signer"] = lambda: loop.run_until_complete(via_httpx())
    cleanup.insert(0, lambda: loop.run_until_complete(hx.aclose()))

    sdk = official_sdk_client(url, ak, sk, project_id, job_id)
    if sdk is not None:
        client, request = sdk
        clients["official SDK"] = lambda: client.show_picture_modeling_job(request)
    return clients, cleanup


def official_sdk_client(url: str, ak: str, sk: str, project_id: str, job_id: str) -> tuple[Any, Any] | None:
    try:
        from huaweicloudsdkcore.auth.credentials import BasicCredentials
        from huaweicloudsdkcore.http.http_config import HttpConfig
        from huaweicloudsdkmetastudio.v1 import MetaStudioClient, ShowPictureModelingJobRequest
    except ImportError:
        print("huaweicloudsdkmetastudio is not installed: no official SDK row", file=sys.stderr)
        return None
    http_config = HttpConfig.get_default_config()
    http_config.ignore_ssl_verification = True
    client = (
        MetaStudioClient.new_builder()
        .with_credentials(BasicCredentials(ak, sk, project_id))
        .with_endpoint(url)
        .with_http_config(http_config)
        .build()
    )
    return client, ShowPictureModelingJobRequest(job_id=job_id)


def check(name: str, result: Any, job_id: str) -> None:
    """Every client must really have fetched the job (no silent error pages)."""
    job = getattr(result, "job_id", None) or (result.get("job_id") if isinstance(result, dict) else None)
    if job != job_id:
        raise RuntimeError(f"{name} returned {result!r:.200}")


def measure(
    clients: dict[str, Call], rounds: int, block: int, seed: int
) -> dict[str, dict[str, list[float]]]:
    rng = random.Random(seed)
    names = list(clients)
    samples: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    for r in range(rounds + 1):  # round 0 warms up (connections, imports, caches) and is dropped
        order = names[:]
        rng.shuffle(order)
        for name in order:
            fn = clients[name]
            walls = []
            c0 = time.process_time()
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                walls.append(time.perf_counter() - t0)
            cpu = (time.process_time() - c0) / block
            if r:
                samples[name]["wall"].extend(walls)
                samples[name]["cpu"].append(cpu)
    return samples


def render(stats: list[dict[str, Any]], args: argparse.Namespace, env: str, calls: int) -> str:
    base = next((s for s in stats if s["name"] == "requests + signer"), None)
    sdk = next((s for s in stats if s["name"] == "official SDK"), None)
    rows = []
    for s in stats:
        rows.append(
            [
                s["name"],
                fmt(s["median_ms"] * 1e3, 0),
                fmt(s["p95_ms"] * 1e3, 0),
                fmt(s["cpu_ms"] * 1e3, 0),
                f"{s['median_ms'] / base['median_ms']:.2f}x" if base else "-",
                f"{s['median_ms'] / sdk['median_ms']:.2f}x" if sdk else "-",
            ]
        )
    headers = [
        "client",
        "median µs",
        "p95 µs",
        "client CPU µs / call",
        "vs requests + signer",
        "vs official SDK",
    ]
    return "\n".join(
        [
            "## Per call: one job-details call (GET picture-modelings/{job_id})",
            "",
            f"Command: `{args.command_line}`",
            "",
            f"Parameters: emulator in its own process, quotas off, time scale 1; {calls:,} calls per client "
            f"({args.rounds} rounds x {args.block}, shuffled order each round, one warm-up round dropped); "
            "keep-alive connection per client; wall time per call, client CPU per call (process_time).",
            "",
            f"Environment: {env}",
            "",
            markdown_table(headers, rows),
            "",
            "Ratios compare medians. 'hook' is the sync hook (requests transport, retries, parsing into "
            "`PictureModelingJob`); 'hook async' is what triggers use (httpx), compare it with "
            "'httpx + signer'.",
        ]
    )


def chart(stats: list[dict[str, Any]], path: Any) -> None:
    plt = pyplot()
    if plt is None:
        return
    names = [s["name"] for s in stats]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar([i - 0.2 for i in x], [s["median_ms"] * 1e3 for s in stats], width=0.4, label="median")
    ax.bar([i + 0.2 for i in x], [s["p95_ms"] * 1e3 for s in stats], width=0.4, label="p95")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=15, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("µs per call (log)")
    ax.set_title("One job-details call against the local emulator")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    save_chart(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few calls")
    parser.add_argument("--rounds", type=int, default=60, help="rounds (each client once per round)")
    parser.add_argument("--block", type=int, default=20, help="calls per client per turn")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--name", default=None, help="results file name (default per_call, or per_call-quick)"
    )
    args = parser.parse_args(argv)
    args.command_line = command_line("bench_per_call.py", argv)
    if args.quick:
        args.rounds, args.block = 5, 5
    name = args.name or ("per_call-quick" if args.quick else "per_call")
    env = environment()
    with EmulatorProcess(time_scale=1.0, quotas=False, seed=args.seed) as emu:
        admin = Admin(emu.url)
        job_id = admin.create_job(name="bench_per_call")["job_id"]
        admin.close()
        clients, cleanup = build_clients(emu.url, emu.connection, job_id)
        for cname, fn in clients.items():
            check(cname, fn(), job_id)
        samples = measure(clients, args.rounds, args.block, args.seed)
        for fn in cleanup:
            fn()
    stats: list[dict[str, Any]] = []
    for cname, s in samples.items():
        stats.append(
            {
                "name": cname,
                "calls": len(s["wall"]),
                "median_ms": median(s["wall"]) * 1e3,
                "p95_ms": percentile(s["wall"], 95) * 1e3,
                "mean_ms": sum(s["wall"]) / len(s["wall"]) * 1e3,
                "cpu_ms": median(s["cpu"]) * 1e3,
            }
        )
    calls = int(stats[0]["calls"]) if stats else 0
    text = render(stats, args, env, calls)
    print(text)
    write_results(name, text, {"args": vars(args), "environment": env, "stats": stats})
    chart(stats, RESULTS / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
