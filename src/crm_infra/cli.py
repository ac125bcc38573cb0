"""The ``crm-infra`` command: ``check``, ``migrate``, ``demo`` and ``dev``.

Expected failures (bad settings, a backend that is down) reach the user as one readable line on
stderr and a non-zero exit code, never as a traceback and never with a secret in it.

Exit codes: 0 success; 1 unhealthy or failed; 2 bad usage or invalid settings; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from crm_infra.composition import (
    COMPONENTS,
    HealthReport,
    Infrastructure,
    StartupError,
    build_infrastructure,
    unhealthy_report,
)
from crm_infra.errors import ConfigError, InfraError
from crm_infra.health import redact, short_error
from crm_infra.settings import Settings

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm-infra",
        description="Check, migrate and try out the crm-infra backends. Settings come from "
        "the environment (CRM_BACKEND, VAULT_ADDR, VAULT_TOKEN, ...; see docs/operations.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="report the health of every backend (exit 0 only when all are healthy)",
        description="Check secrets, database and key-value store concurrently, each under "
        "CRM_HEALTH_TIMEOUT; with CRM_BACKEND=real also audit row-level security.",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")

    commands.add_parser(
        "migrate",
        help="apply the schema in sql/ through the admin path",
        description="Apply the numbered sql/ files not applied yet, through the admin "
        "database role, and list what was applied.",
    )

    demo = commands.add_parser(
        "demo",
        help="run an end-to-end story: two users, isolated rows, a session, a rate limit",
        description="Two users create contacts and tickets and each sees only their own; a "
        "session token is stored with a TTL; a rate limit trips.",
    )
    demo.add_argument(
        "--backend",
        choices=("memory", "real"),
        default=None,
        help="memory (default) or real (reads VAULT_ADDR and VAULT_TOKEN from the environment)",
    )

    dev = commands.add_parser(
        "dev",
        help="run a local real stack (OpenBao, Valkey, a fresh PostgreSQL database) until "
        "interrupted",
        description="Start OpenBao and Valkey on free loopback ports, create a fresh database "
        "and login roles on PostgreSQL, write the credentials into OpenBao and the client "
        "environment into an env file; on Ctrl-C (or SIGTERM) drop and stop all of it.",
    )
    dev.add_argument(
        "--env-file",
        default=".crm-dev.env",
        metavar="PATH",
        help="where to write CRM_BACKEND, VAULT_ADDR and VAULT_TOKEN (default: .crm-dev.env)",
    )
    dev.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help="a PostgreSQL superuser URL (default: postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``crm-infra`` command line.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already explained
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    commands: dict[str, Callable[[], int]] = {
        "check": lambda: _check(as_json=args.json),
        "migrate": _migrate,
        "demo": lambda: _demo(args.backend),
        "dev": lambda: _dev(env_file=args.env_file, database_url=args.database_url),
    }
    try:
        return commands[args.command]()
    except ConfigError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except InfraError as exc:
        _fail(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED


def _fail(message: str) -> None:
    print(f"crm-infra: error: {redact(' '.join(message.split()))}", file=sys.stderr)


# --- check -----------------------------------------------------------------------------------


def _check(*, as_json: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        if as_json:
            # Probes read stdout as JSON: give them an answer of the same kind (docs/cli.md).
            message = redact(" ".join(str(exc).split()))
            print(json.dumps({"ok": False, "error": message, "components": {}}, indent=2),
                  file=out)
        raise
    try:
        infra = build_infrastructure(settings)
    except StartupError as exc:
        report = unhealthy_report(exc)
    else:
        with infra:
            report = infra.health()
            if settings.backend == "real" and report.components["database"].ok:
                report = _with_rls_audit(report, infra)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        _print_report(report, settings.backend, out)
    return EXIT_OK if report.ok else EXIT_FAILED


def _with_rls_audit(report: HealthReport, infra: Infrastructure) -> HealthReport:
    """Fold the RLS audit into the database component: findings make it unhealthy."""
    from crm_infra.health import ComponentHealth  # noqa: PLC0415  # only real mode needs it
    from crm_infra.migrations import audit_rls  # noqa: PLC0415  # only real mode needs it

    database = report.components["database"]
    try:
        findings = audit_rls(infra.admin_db)
    except InfraError as exc:
        error: str | None = f"RLS audit failed: {short_error(exc)}"
    else:
        error = (
            None
            if not findings
            else f"RLS audit: {len(findings)} finding(s): " + "; ".join(str(f) for f in findings)
        )
    if error is None:
        return report
    components = dict(report.components)
    components["database"] = ComponentHealth(False, database.latency_ms, error)
    return HealthReport(components)


def _print_report(report: HealthReport, backend: str, out: TextIO) -> None:
    print(f"{'component':<10}  {'status':<6}  {'latency':>10}  error", file=out)
    for name in COMPONENTS:
        c = report.components[name]
        status = "ok" if c.ok else "FAIL"
        print(f"{name:<10}  {status:<6}  {c.latency_ms:>7.1f} ms  {c.error or ''}".rstrip(),
              file=out)
    verdict = "all healthy" if report.ok else "UNHEALTHY"
    print(f"backend: {backend}; {verdict}", file=out)


# --- migrate ---------------------------------------------------------------------------------


def _migrate(out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = Settings.from_env()
    if settings.backend == "memory":
        print(
            "backend: memory; the in-memory database builds its schema from sql/ when it "
            "starts, so there is nothing to migrate (set CRM_BACKEND=real to migrate PostgreSQL)",
            file=out,
        )
        return EXIT_OK
    from crm_infra.migrations import apply_migrations  # noqa: PLC0415  # real mode only

    with build_infrastructure(settings) as infra:
        applied = apply_migrations(infra.admin_db)
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}", file=out)
    else:
        print("schema is up to date: nothing to apply", file=out)
    return EXIT_OK


# --- demo and dev live in their own modules; imported lazily to keep start-up quick ----------


def _demo(backend: str | None) -> int:
    from crm_infra.demo import run_demo  # noqa: PLC0415  # keeps `check` start-up light

    env: Mapping[str, str] = os.environ
    if backend is not None:
        env = {**os.environ, "CRM_BACKEND": backend}
    settings = Settings.from_env(env)
    return EXIT_OK if run_demo(settings, sys.stdout) else EXIT_FAILED


def _dev(*, env_file: str, database_url: str | None) -> int:
    from crm_infra.devstack import run_dev  # noqa: PLC0415  # needs the dev extra's servers

    return run_dev(env_file=env_file, database_url=database_url, out=sys.stdout)
