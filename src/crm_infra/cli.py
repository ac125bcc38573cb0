"""The ``crm-infra`` command: ``check``, ``migrate``, ``demo`` and ``dev``.

Expected failures (bad settings, a backend that is down) reach the user as one readable line on
stderr and a non-zero exit code, never as a traceback and never with a secret in it.

Exit codes: 0 success; 1 unhealthy or failed; 2 bad usage or invalid settings; 130 interrupted
(Ctrl-C); 143 stopped by SIGTERM (``dev``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import attrs

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

if TYPE_CHECKING:
    from crm_infra.devservers.valkey_stack import ValkeyTopology

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_T = TypeVar("_T")

# Read by the default backend only when CRM_BACKEND=real: set without it, they are ignored.
_VAULT_VARIABLES = ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID",
                    "VAULT_MOUNT_POINT")
# Past this, the table shows the start of an error; --json always carries all of it.
_TABLE_ERROR_CHARS = 300


def _version() -> str:
    try:
        return metadata.version("crm-infra")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm-infra",
        description="Check, migrate and try out the crm-infra backends. Settings come from "
        "the environment (CRM_BACKEND, VAULT_ADDR, VAULT_TOKEN, ...; see docs/operations.md).",
    )
    parser.add_argument("--version", action="version", version=f"crm-infra {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="report the health of every backend (exit 0 only when all are healthy)",
        description="Check secrets, database and key-value store concurrently, each under "
        "CRM_HEALTH_TIMEOUT; with CRM_BACKEND=real also list pending migrations and audit "
        "row-level security (either makes the database unhealthy).",
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
    demo.add_argument(
        "--async",
        dest="use_asyncio",
        action="store_true",
        help="the asyncio story instead: concurrent requests as different users, a request "
        "cancelled mid-transaction, concurrent rate-limit hits",
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
        help="where to write CRM_BACKEND, VAULT_ADDR and VAULT_TOKEN (default: .crm-dev.env); "
        "refused while another `crm-infra dev` uses it",
    )
    dev.add_argument(
        "--valkey",
        choices=("single", "cluster", "sentinel"),
        default="single",
        help="the Valkey topology to run: one server (default), a 3-primary cluster with "
        "replicas, or a primary with a replica and 3 Sentinels",
    )
    dev.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help="a PostgreSQL superuser URL (default: $CRM_DEV_DATABASE_URL, which keeps a "
        "password out of the process list, else postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    dev.add_argument(
        "--dynamic-credentials",
        action="store_true",
        help="log the application in with short-lived PostgreSQL credentials from OpenBao's "
        "database secrets engine instead of fixed passwords",
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
        "demo": lambda: _demo(args.backend, use_asyncio=args.use_asyncio),
        "dev": lambda: _dev(
            env_file=args.env_file,
            database_url=args.database_url,
            valkey=args.valkey,
            dynamic_credentials=args.dynamic_credentials,
        ),
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


def _note_ignored_vault_variables(env: Mapping[str, str]) -> None:
    """Say so when Vault variables are set but the default, in-memory backend ignores them."""
    if env.get("CRM_BACKEND", "").strip():
        return  # a backend chosen on purpose needs no comment
    ignored = [name for name in _VAULT_VARIABLES if env.get(name, "").strip()]
    if ignored:
        verb = "is" if len(ignored) == 1 else "are"
        print(
            f"crm-infra: note: {', '.join(ignored)} {verb} set but ignored: CRM_BACKEND is not "
            "set, so the in-memory backend is used; set CRM_BACKEND=real to use Vault",
            file=sys.stderr,
        )


# --- check -----------------------------------------------------------------------------------


def _check(*, as_json: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        if as_json:
            # Probes read stdout as JSON: give them an answer of the same kind (docs/cli.md).
            message = redact(" ".join(str(exc).split()))
            refused = {
                "ok": False,
                "error": message,
                "components": {},
                "migrations": {"pending": None},
            }
            print(json.dumps(refused, indent=2), file=out)
        raise
    _note_ignored_vault_variables(os.environ)
    pending: list[str] | None = None
    try:
        infra = build_infrastructure(settings)
    except StartupError as exc:
        report = unhealthy_report(exc)
    else:
        with infra:
            report = infra.health()
            if settings.backend == "memory":
                pending = []  # the in-memory database builds its schema from sql/ at start
            elif report.components["database"].ok:
                report, pending = _with_schema_checks(report, infra)
    if as_json:
        answer: dict[str, Any] = {**report.to_dict(), "migrations": {"pending": pending}}
        print(json.dumps(answer, indent=2), file=out)
    else:
        _print_report(report, settings.backend, out)
    return EXIT_OK if report.ok else EXIT_FAILED


def _with_schema_checks(
    report: HealthReport, infra: Infrastructure
) -> tuple[HealthReport, list[str] | None]:
    """Fold pending migrations and the RLS audit into the database component.

    Either makes it unhealthy: a schema behind the code fails the application's first query,
    and an unprotected table leaks. Returns the report and the pending files (None when they
    could not be listed).
    """
    from crm_infra.migrations import audit_rls, pending_migrations  # noqa: PLC0415  # real only

    problems: list[str] = []

    def attempt(failed: str, read: Callable[[], list[_T]]) -> list[_T] | None:
        try:
            return read()
        except InfraError as exc:
            problems.append(f"{failed}: {short_error(exc, limit=None)}")
            return None

    pending = attempt("could not list pending migrations",
                      lambda: pending_migrations(infra.admin_db))
    if pending:
        problems.append(
            f"{len(pending)} migration(s) pending: {', '.join(pending)}; run `crm-infra migrate`"
        )
    findings = attempt("RLS audit failed", lambda: audit_rls(infra.admin_db))
    if findings:
        problems.append(
            f"RLS audit: {len(findings)} finding(s): " + "; ".join(str(f) for f in findings)
        )
    if not problems:
        return report, pending
    database = report.components["database"]
    components = dict(report.components)
    components["database"] = attrs.evolve(database, ok=False, error="; ".join(problems))
    return HealthReport(components), pending


def _table_cell(error: str | None) -> str:
    if error is None or len(error) <= _TABLE_ERROR_CHARS:
        return error or ""
    return error[: _TABLE_ERROR_CHARS - 1] + "… (all of it: crm-infra check --json)"


def _print_report(report: HealthReport, backend: str, out: TextIO) -> None:
    print(f"{'component':<10}  {'status':<6}  {'latency':>10}  error", file=out)
    for name in COMPONENTS:
        c = report.components[name]
        status = "ok" if c.ok else "FAIL"
        print(f"{name:<10}  {status:<6}  {c.latency_ms:>7.1f} ms  {_table_cell(c.error)}".rstrip(),
              file=out)
    verdict = "all healthy" if report.ok else "UNHEALTHY"
    print(f"backend: {backend}; {verdict}", file=out)


# --- migrate ---------------------------------------------------------------------------------


def _migrate(out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = Settings.from_env()
    _note_ignored_vault_variables(os.environ)
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


def _demo(backend: str | None, *, use_asyncio: bool = False) -> int:
    env: Mapping[str, str] = os.environ
    if backend is not None:
        env = {**os.environ, "CRM_BACKEND": backend}
    settings = Settings.from_env(env)
    _note_ignored_vault_variables(env)
    if use_asyncio:
        import asyncio  # noqa: PLC0415

        from crm_infra.demo_async import run_demo_async  # noqa: PLC0415

        held = asyncio.run(run_demo_async(settings, sys.stdout))
    else:
        from crm_infra.demo import run_demo  # noqa: PLC0415  # keeps `check` start-up light

        held = run_demo(settings, sys.stdout)
    return EXIT_OK if held else EXIT_FAILED


def _dev(
    *,
    env_file: str,
    database_url: str | None,
    valkey: ValkeyTopology,
    dynamic_credentials: bool = False,
) -> int:
    from crm_infra.devstack import run_dev  # noqa: PLC0415  # needs the dev extra's servers

    return run_dev(
        env_file=env_file,
        database_url=database_url,
        out=sys.stdout,
        valkey=valkey,
        dynamic_credentials=dynamic_credentials,
    )
