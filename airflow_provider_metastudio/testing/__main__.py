"""Command line: run a MetaStudio emulator until SIGINT or SIGTERM.

Prints the base URL on its first line and ``AIRFLOW_CONN_METASTUDIO_DEFAULT=<json>`` on the
second (both flushed at once), so a script can read them; logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_metastudio.testing._config import (
    ASSET_OUTCOMES,
    DEFAULT_AK,
    DEFAULT_IAM_DOMAIN,
    DEFAULT_IAM_PASSWORD,
    DEFAULT_IAM_USER,
    DEFAULT_PROJECT_ID,
    DEFAULT_PROJECT_NAME,
    DEFAULT_SK,
    MIB,
    ONE_DAY,
    TEN_DAYS,
    TERMINAL_STATES,
    EmulatorConfig,
)
from airflow_provider_metastudio.testing.emulator import MetaStudioEmulator


def _pair(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{what} must look like KEY=VALUE, got {text!r}")
    return key, value


def _outcome(text: str) -> tuple[str, str]:
    pattern, state = _pair(text, "--outcome")
    if state not in TERMINAL_STATES:
        raise argparse.ArgumentTypeError(f"--outcome state must be one of {', '.join(TERMINAL_STATES)}")
    return pattern, state


def _asset_outcome(text: str) -> tuple[str, str]:
    pattern, state = _pair(text, "--asset-outcome")
    if state not in ASSET_OUTCOMES:
        raise argparse.ArgumentTypeError(f"--asset-outcome state must be one of {', '.join(ASSET_OUTCOMES)}")
    return pattern, state


def _weight(text: str) -> tuple[str, float]:
    state, value = _pair(text, "--weight")
    if state not in TERMINAL_STATES:
        raise argparse.ArgumentTypeError(f"--weight state must be one of {', '.join(TERMINAL_STATES)}")
    try:
        return state, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weight {text!r}: the weight must be a number") from None


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a fault share must be between 0 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metastudio-emulator",
        description="Run a local MetaStudio picture-modeling emulator (service + API gateway + IAM).",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    add("--advertised-url", help="base URL to hand out when clients reach the emulator by another address")
    add("--ak", default=DEFAULT_AK, help="access key id accepted (default: a made-up example)")
    add("--sk", default=DEFAULT_SK, help="secret access key (default: a made-up example)")
    add("--project-id", default=DEFAULT_PROJECT_ID, help="the tenant's project id")
    add("--project-name", default=DEFAULT_PROJECT_NAME, help="IAM project name (token scope by name)")
    add("--security-token", help="make the AK/SK temporary: requests must carry and sign this token")
    add("--user", default=DEFAULT_IAM_USER, help="IAM user name for POST /v3/auth/tokens")
    add("--password", default=DEFAULT_IAM_PASSWORD, help="IAM user password")
    add("--domain", default=DEFAULT_IAM_DOMAIN, help="IAM account (domain) name")
    add(
        "--token-ttl",
        type=float,
        default=ONE_DAY,
        help="IAM token lifetime, emulated seconds (default 86400)",
    )
    add(
        "--cover-ttl",
        type=float,
        default=TEN_DAYS,
        help="cover URL lifetime, emulated seconds (default 10 days)",
    )
    add("--time-scale", type=float, default=1.0, help="emulated seconds per real second (default 1)")
    add("--no-quotas", action="store_true", help="do not enforce the request rate quotas")
    add("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    add("--waiting-seconds", type=float, default=5.0, help="emulated seconds a job stays WAITING")
    add("--processing-seconds", type=float, default=25.0, help="emulated seconds a job stays PROCESSING")
    add("--waiting-jitter", type=float, default=0.0, help="up to this much extra WAITING per job (seeded)")
    add(
        "--processing-jitter",
        type=float,
        default=0.0,
        help="up to this much extra PROCESSING per job (seeded)",
    )
    add(
        "--outcome",
        type=_outcome,
        action="append",
        default=[],
        metavar="PATTERN=STATE",
        help="jobs whose name matches PATTERN (fnmatch) end in STATE; repeatable, first match wins",
    )
    add(
        "--weight",
        type=_weight,
        action="append",
        default=[],
        metavar="STATE=WEIGHT",
        help="relative weight of an outcome for other jobs (default SUCCEED=1); repeatable",
    )
    add(
        "--asset-active-delay",
        type=float,
        default=5.0,
        help="emulated seconds a model asset stays CREATING after its job succeeded (default 5)",
    )
    add(
        "--asset-url-ttl",
        type=float,
        default=ONE_DAY,
        help="lifetime of the asset files' download URLs, emulated seconds (default 86400)",
    )
    add(
        "--asset-outcome",
        type=_asset_outcome,
        action="append",
        default=[],
        metavar="PATTERN=STATE",
        help=f"the asset of a job whose name matches PATTERN (fnmatch) ends {'/'.join(ASSET_OUTCOMES)} "
        "instead of ACTIVED; repeatable, first match wins",
    )
    add("--fault-500", type=_share, default=0.0, help="share of service requests answered 500")
    add("--fault-html", type=_share, default=0.0, help="share answered 502/503/504 with an HTML page")
    add("--fault-drop", type=_share, default=0.0, help="share whose connection is dropped without a response")
    add("--fault-delay", type=_share, default=0.0, help="share delayed by --delay-seconds")
    add("--fault-malformed", type=_share, default=0.0, help="share answered with truncated JSON")
    add("--delay-seconds", type=float, default=1.0, help="real seconds a delay fault sleeps (default 1)")
    add("--max-body-bytes", type=int, default=10 * MIB, help="largest request body accepted (default 10 MiB)")
    add(
        "--auth-type",
        choices=("aksk", "token", "password"),
        default="aksk",
        help="authentication of the printed Airflow connection (default aksk)",
    )
    add(
        "--log-level",
        default="WARNING",
        help="log level on stderr (default WARNING; DEBUG logs every request)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Turn parsed command-line options into an :class:`EmulatorConfig`."""
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        advertised_url=args.advertised_url,
        ak=args.ak,
        sk=args.sk,
        project_id=args.project_id,
        project_name=args.project_name,
        security_token=args.security_token,
        iam_user=args.user,
        iam_password=args.password,
        iam_domain=args.domain,
        token_ttl=args.token_ttl,
        cover_ttl=args.cover_ttl,
        time_scale=args.time_scale,
        quotas_enabled=not args.no_quotas,
        seed=args.seed,
        waiting_seconds=args.waiting_seconds,
        processing_seconds=args.processing_seconds,
        waiting_jitter=args.waiting_jitter,
        processing_jitter=args.processing_jitter,
        outcomes_by_name=dict(args.outcome),
        outcome_weights=dict(args.weight) if args.weight else {"SUCCEED": 1.0},
        asset_active_delay=args.asset_active_delay,
        asset_url_ttl=args.asset_url_ttl,
        asset_outcomes_by_name=dict(args.asset_outcome),
        fault_500=args.fault_500,
        fault_html=args.fault_html,
        fault_drop=args.fault_drop,
        fault_delay=args.fault_delay,
        fault_malformed=args.fault_malformed,
        delay_seconds=args.delay_seconds,
        max_body_bytes=args.max_body_bytes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT/SIGTERM; return the exit status (0 on a clean stop)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emulator = MetaStudioEmulator(config)
    try:
        emulator.start()
    except OSError as e:
        print(f"metastudio-emulator: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(f"{emulator.base_url}\n")
        sys.stdout.write(f"AIRFLOW_CONN_METASTUDIO_DEFAULT={emulator.connection_json(args.auth_type)}\n")
        sys.stdout.flush()
        logging.getLogger(__name__).info(
            "emulator ready on %s (project %s)", emulator.base_url, config.project_id
        )
        # A timed wait lets the signal handlers run promptly on every platform.
        while not stop.wait(0.2):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
