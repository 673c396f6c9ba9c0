"""Import cost: the provider's hook on top of ``import airflow``, vs the official SDK.

Every sample is a fresh interpreter (``python -c``) started from an empty directory, so the installed
package is measured, with warm file and bytecode caches (one warm-up run of each variant is dropped).
Bytecode is cached under a private ``PYTHONPYCACHEPREFIX`` (``PYTHONDONTWRITEBYTECODE`` is cleared for
the children), as after a ``pip install``, which compiles it; the environment itself is not touched.
The child times its own imports with ``perf_counter``; interpreter start-up is not included. Variants
take turns in a shuffled order on every repetition, and medians are reported.

* ``airflow``: ``import airflow``.
* ``airflow + hook``: ``import airflow``, then ``import airflow_provider_metastudio.hooks.metastudio``
  (the second import's time is the provider's cost over Airflow's own).
* ``official SDK``: ``import huaweicloudsdkmetastudio.v1`` alone (when installed).
* ``airflow + official SDK``: ``import airflow``, then ``import huaweicloudsdkmetastudio.v1``.

Run: ``.venv/bin/python benchmarks/bench_import.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
from typing import Any

from _common import (
    RESULTS,
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

CHILD = """
import json, sys, time
t0 = time.perf_counter()
{first}
t1 = time.perf_counter()
{second}
t2 = time.perf_counter()
print(json.dumps({{"first": t1 - t0, "second": t2 - t1, "modules": len(sys.modules)}}))
"""

HOOK = "import airflow_provider_metastudio.hooks.metastudio"
SDK = "import huaweicloudsdkmetastudio.v1"
VARIANTS: dict[str, tuple[str, str]] = {
    "airflow": ("import airflow", "pass"),
    "airflow + hook": ("import airflow", HOOK),
    "official SDK": (SDK, "pass"),
    "airflow + official SDK": ("import airflow", SDK),
}


def run_child(first: str, second: str, cwd: str, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(first=first, second=second)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 repetitions")
    parser.add_argument("--repeat", type=int, default=15, help="fresh interpreters per variant")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="compile every module from source each time (no .pyc cache)",
    )
    parser.add_argument("--name", default=None, help="results file name (default import, or import-quick)")
    args = parser.parse_args(argv)
    args.command_line = command_line("bench_import.py", argv)
    if args.quick:
        args.repeat = 3
    name = args.name or ("import-quick" if args.quick else "import")
    variants = dict(VARIANTS)
    if importlib.util.find_spec("huaweicloudsdkmetastudio") is None:
        print("huaweicloudsdkmetastudio is not installed: no official SDK rows", file=sys.stderr)
        variants = {k: v for k, v in variants.items() if "SDK" not in k}
    env = environment()
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-import-") as cwd:
        child_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        if not args.no_bytecode:
            child_env["PYTHONPYCACHEPREFIX"] = os.path.join(cwd, "pycache")
        else:
            child_env["PYTHONDONTWRITEBYTECODE"] = "1"
        for rep in range(args.repeat + 1):  # repetition 0 warms the caches and is dropped
            order = list(variants)
            rng.shuffle(order)
            for v in order:
                result = run_child(*variants[v], cwd, child_env)
                if rep:
                    samples[v].append(result)
    stats = []
    for v, rs in samples.items():
        second = [r["second"] for r in rs]
        total = [r["first"] + r["second"] for r in rs]
        stats.append(
            {
                "variant": v,
                "total_ms": median(total) * 1e3,
                "total_p90_ms": percentile(total, 90) * 1e3,
                "added_ms": median(second) * 1e3 if variants[v][1] != "pass" else None,
                "added_p90_ms": percentile(second, 90) * 1e3 if variants[v][1] != "pass" else None,
                "modules": rs[-1]["modules"],
                "samples": len(rs),
            }
        )
    rows = [
        [
            s["variant"],
            fmt(s["total_ms"]),
            fmt(s["total_p90_ms"]),
            fmt(s["added_ms"]),
            fmt(s["added_p90_ms"]),
            fmt(s["modules"]),
        ]
        for s in stats
    ]
    by = {s["variant"]: s for s in stats}
    lines = [
        "## Import time",
        "",
        f"Command: `{args.command_line}`",
        "",
        f"Parameters: {args.repeat} fresh interpreters per variant (plus one warm-up, dropped), shuffled "
        "order, "
        "imports timed inside the child (interpreter start-up excluded), medians; "
        + (
            "no bytecode cache (every module compiled from source)."
            if args.no_bytecode
            else "bytecode cached (private PYTHONPYCACHEPREFIX), as after pip install."
        ),
        "",
        f"Environment: {env}",
        "",
        markdown_table(
            [
                "variant",
                "total ms (median)",
                "total ms (p90)",
                "second import over `import airflow`, ms (median)",
                "same, p90",
                "modules loaded",
            ],
            rows,
        ),
    ]
    if "airflow + hook" in by and "airflow" in by:
        hook = by["airflow + hook"]
        lines += [
            "",
            f"The hook adds {hook['added_ms']:.1f} ms (median) over `import airflow`; difference of the "
            f"total medians: {hook['total_ms'] - by['airflow']['total_ms']:.1f} ms (noisier: two samples of "
            "Airflow's own import).",
        ]
    if "official SDK" in by:
        lines.append(
            f"`import huaweicloudsdkmetastudio.v1` alone takes {by['official SDK']['total_ms']:.1f} ms, and "
            f"{by['airflow + official SDK']['added_ms']:.1f} ms on top of `import airflow`."
        )
    text = "\n".join(lines)
    print(text)
    write_results(name, text, {"args": vars(args), "environment": env, "stats": stats, "samples": samples})
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(8, 3.6))
        names = [s["variant"] for s in stats]
        ax.barh(names, [s["total_ms"] for s in stats], label="total")
        ax.barh(names, [s["added_ms"] or 0 for s in stats], label="second import (over airflow)")
        ax.set_xlabel("ms (median)")
        ax.set_title("Import time, fresh interpreters")
        ax.legend(fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
        save_chart(fig, RESULTS / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
