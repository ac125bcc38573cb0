"""``crm-infra dev`` and the compose ``init`` service: provision a real stack for local use.

:func:`provision` does what an operator does once per deployment: a fresh database with the
schema's group roles and two login roles with generated passwords, the migrations applied
through the admin path, every credential written into Vault, and a least-privilege Vault
policy with a token for the application. :func:`run_dev` adds the servers: it checks the
superuser URL first, starts OpenBao and Valkey from their wheels on free loopback ports,
provisions, writes the client's environment to an env file and waits; on SIGINT or SIGTERM it
drops the database and the login roles, stops both servers, removes the env file and returns
128 + the signal's number (130 for Ctrl-C), as a shell reports a process a signal ended.

``python -m crm_infra.devstack provision`` is what compose.yaml's ``init`` service runs.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit, urlunsplit

import attrs

from crm_infra.errors import ConfigError, InfraError
from crm_infra.health import redact, redact_address, short_error
from crm_infra.secret_paths import (
    DATABASE_ADMIN_CREDS_ROLE_FIELD,
    DATABASE_ADMIN_URL_FIELD,
    DATABASE_CREDS_MOUNT_FIELD,
    DATABASE_CREDS_ROLE_FIELD,
    DATABASE_PATH,
    DATABASE_URL_FIELD,
    DEFAULT_CREDS_MOUNT,
    DEFAULT_MOUNT_POINT,
    EMAIL_API_KEY_FIELD,
    EMAIL_FROM_ADDRESS_FIELD,
    EMAIL_PATH,
    VALKEY_PATH,
    VALKEY_URL_FIELD,
    read_policy,
)

if TYPE_CHECKING:
    from crm_infra.bootstrap import BootstrappedDatabase
    from crm_infra.devservers.valkey_stack import ValkeyTopology

__all__ = [
    "APP_POLICY_NAME",
    "DEFAULT_SUPERUSER_URL",
    "SUPERUSER_URL_VARIABLE",
    "Provisioned",
    "ProvisioningError",
    "deprovision",
    "main",
    "provision",
    "resolve_superuser_url",
    "run_dev",
    "write_env_file",
]

DEFAULT_SUPERUSER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SUPERUSER_URL_VARIABLE = "CRM_DEV_DATABASE_URL"
"""Where ``crm-infra dev`` reads its superuser URL when ``--database-url`` is not given: a
password in the environment stays out of the process list, where every local user can read it."""
APP_POLICY_NAME = "crm-app"
_ENV_FILE_HEADER = "# written by `crm-infra dev` (pid {pid}); removed when it stops"
_ENV_FILE_OWNER = re.compile(r"# written by `crm-infra dev` \(pid (\d+)\)")


class ProvisioningError(InfraError):
    """A step of provisioning failed; the message names the step."""


@attrs.frozen
class Provisioned:
    """What :func:`provision` made: names for cleanup and the application's Vault token."""

    database: BootstrappedDatabase = attrs.field(repr=False)
    database_name: str
    app_role: str
    admin_role: str
    applied: tuple[str, ...]
    app_token: str = attrs.field(repr=False)


@contextmanager
def _step(what: str) -> Iterator[None]:
    try:
        yield
    except InfraError as exc:
        raise ProvisioningError(f"{what}: {exc}") from exc
    except Exception as exc:  # hvac and requests raise their own; report them in one line
        raise ProvisioningError(f"{what}: {short_error(exc)}") from exc


def _with_host(url: str, host_port: str | None) -> str:
    """Return ``url`` with its host (and port) replaced, keeping user, password and path."""
    if not host_port:
        return url
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host_port}" if userinfo else host_port
    return urlunsplit(parts._replace(netloc=netloc))


def _without_login(url: str) -> str:
    """Return ``url`` without its user and password (what ``crm/database`` holds when the
    credentials come from Vault's database secrets engine)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def provision(
    *,
    superuser_url: str,
    vault_addr: str,
    vault_token: str,
    valkey_url: str,
    mount_point: str = DEFAULT_MOUNT_POINT,
    advertised_db_host: str | None = None,
    out: TextIO | None = None,
    dynamic_credentials: bool = False,
) -> Provisioned:
    """Create a database with login roles, migrate it, and write every credential into Vault.

    Args:
        superuser_url: a PostgreSQL superuser URL (used for the bootstrap only, never stored).
        vault_addr: the Vault/OpenBao address.
        vault_token: a token that may write ``{mount}/data/crm/*``, policies and tokens.
        valkey_url: the Valkey URL clients should use (stored in Vault as ``crm/valkey``).
        mount_point: the KV v2 mount.
        advertised_db_host: ``host:port`` clients use to reach PostgreSQL, when it differs from
            the superuser URL's (inside compose, for example).
        out: where to report progress (default: nowhere).
        dynamic_credentials: set up OpenBao's database secrets engine against the new
            database (as the superuser) and have ``crm/database`` name its roles instead of
            the login roles' passwords: the application then runs on short-lived logins.

    Returns:
        The names made (for :func:`deprovision`) and a read-only token for the application.

    Raises:
        ProvisioningError: a step failed; the message names it, and what was created is
            dropped again.
    """
    import hvac  # noqa: PLC0415  # only provisioning writes to Vault

    from crm_infra.adapters import PostgresClient  # noqa: PLC0415
    from crm_infra.bootstrap import create_database, drop_database  # noqa: PLC0415
    from crm_infra.migrations import apply_migrations  # noqa: PLC0415

    def say(text: str) -> None:
        if out is not None:
            print(text, file=out, flush=True)

    with _step("creating the database and its login roles"):
        made = create_database(superuser_url, prefix="crm_dev")
    try:
        say(f"database {made.database}: login roles {made.app_role} (app), "
            f"{made.admin_role} (admin)")
        with _step("applying the migrations through the admin path"), PostgresClient(
            made.app_url, 2, admin_connection_url=made.admin_url
        ) as db:
            applied = tuple(apply_migrations(db))
        say(f"applied {len(applied)} migration(s): {', '.join(applied) or '(none)'}")

        app_url = _with_host(made.app_url, advertised_db_host)
        admin_url = _with_host(made.admin_url, advertised_db_host)
        database_fields = {DATABASE_URL_FIELD: app_url, DATABASE_ADMIN_URL_FIELD: admin_url}
        policy = read_policy(mount_point)
        client = hvac.Client(url=vault_addr, token=vault_token, timeout=5)
        if dynamic_credentials:
            from crm_infra import database_engine  # noqa: PLC0415

            with _step("setting up OpenBao's database secrets engine"):
                database_engine.provision_engine(
                    client, superuser_url=superuser_url, database=made.database
                )
            app_role, admin_role = database_engine.DEV_ROLES
            database_fields = {
                DATABASE_URL_FIELD: _without_login(app_url),
                DATABASE_ADMIN_URL_FIELD: _without_login(admin_url),
                DATABASE_CREDS_ROLE_FIELD: app_role,
                DATABASE_ADMIN_CREDS_ROLE_FIELD: admin_role,
                DATABASE_CREDS_MOUNT_FIELD: DEFAULT_CREDS_MOUNT,
            }
            policy += database_engine.dynamic_credentials_policy(database_engine.DEV_ROLES)
            say(
                f"short-lived database credentials: {DEFAULT_CREDS_MOUNT}/creds/{app_role} and "
                f"{DEFAULT_CREDS_MOUNT}/creds/{admin_role} (leases of 1 h, renewable up to 24 h)"
            )
        with _step(f"writing the secrets into Vault at {redact_address(vault_addr)}"):
            kv = client.secrets.kv.v2
            kv.create_or_update_secret(
                path=DATABASE_PATH, secret=database_fields, mount_point=mount_point
            )
            kv.create_or_update_secret(
                path=VALKEY_PATH, secret={VALKEY_URL_FIELD: valkey_url}, mount_point=mount_point
            )
            kv.create_or_update_secret(
                path=EMAIL_PATH,
                secret={
                    EMAIL_API_KEY_FIELD: "dev-" + secrets.token_hex(12),
                    EMAIL_FROM_ADDRESS_FIELD: "crm@example.com",
                },
                mount_point=mount_point,
            )
        say(f"secrets written to {mount_point}/{DATABASE_PATH}, {VALKEY_PATH}, {EMAIL_PATH}")
        with _step("creating the read-only application policy and token"):
            client.sys.create_or_update_policy(name=APP_POLICY_NAME, policy=policy)
            created = client.auth.token.create(
                policies=[APP_POLICY_NAME], ttl="768h", renewable=True,
                display_name="crm-infra-app",
            )
            app_token = str(created["auth"]["client_token"])
        say(
            f"application token created with policy {APP_POLICY_NAME!r} (read crm/* only"
            + (", and its database credentials)" if dynamic_credentials else ")")
        )
    except BaseException:
        drop_database(made)
        raise
    return Provisioned(
        database=made,
        database_name=made.database,
        app_role=made.app_role,
        admin_role=made.admin_role,
        applied=applied,
        app_token=app_token,
    )


def deprovision(provisioned: Provisioned) -> None:
    """Drop the database and the login roles :func:`provision` created.

    Raises:
        ProvisioningError: the server refused (no password in the message).
    """
    from crm_infra.bootstrap import drop_database  # noqa: PLC0415

    with _step(f"dropping database {provisioned.database_name}"):
        drop_database(provisioned.database)


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Create ``path`` with ``KEY=value`` lines, readable by the owner only (it holds a token).

    The file appears whole or not at all (written aside, then linked into place), and never
    replaces another: its first line names this process, which is how a second run in the same
    folder knows the file is taken.

    Raises:
        FileExistsError: ``path`` exists.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(_ENV_FILE_HEADER.format(pid=os.getpid()) + "\n")
            for key, value in values.items():
                handle.write(f"{key}={value}\n")
        os.link(aside, path)  # fails if the path exists, unlike a rename
    finally:
        aside.unlink(missing_ok=True)


def _claim_env_file(path: Path, out: TextIO) -> None:
    """Refuse ``path`` when another live ``crm-infra dev`` wrote it; clear one a dead run left.

    Raises:
        ConfigError: the file belongs to a run that is still going, or was not written by
            ``crm-infra dev`` at all (it is never overwritten).
    """
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except FileNotFoundError:
        return
    owner = _ENV_FILE_OWNER.match(first)
    if owner is None:
        raise ConfigError(
            f"{path} exists and was not written by `crm-infra dev`; it is left alone: pass "
            "another --env-file PATH"
        )
    pid = int(owner.group(1))
    if _running(pid):
        raise ConfigError(
            f"{path} belongs to another `crm-infra dev` (pid {pid}), which is still running: "
            "stop it first, or give this run its own file with --env-file PATH"
        )
    path.unlink(missing_ok=True)
    print(f"removed {path}: the `crm-infra dev` that wrote it (pid {pid}) is gone", file=out,
          flush=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and someone else's
        return True
    return True


def resolve_superuser_url(
    database_url: str | None, environ: Mapping[str, str] | None = None
) -> str:
    """Return the superuser URL ``crm-infra dev`` uses, checked to be a PostgreSQL URL.

    ``--database-url`` wins, then :data:`SUPERUSER_URL_VARIABLE`, then
    :data:`DEFAULT_SUPERUSER_URL`.

    Raises:
        ConfigError: the chosen URL is not a postgresql:// or postgres:// URL (the message
            names where it came from, never the URL).
    """
    env = os.environ if environ is None else environ
    from_env = env.get(SUPERUSER_URL_VARIABLE, "").strip()
    if database_url:
        url, source = database_url, "--database-url"
    elif from_env:
        url, source = from_env, SUPERUSER_URL_VARIABLE
    else:
        return DEFAULT_SUPERUSER_URL
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{source} must be a postgresql:// URL")
    return url


def _check_superuser(url: str) -> None:
    """Fail before any server starts when ``url`` cannot connect or is not a superuser's.

    Raises:
        ProvisioningError: the server cannot be reached or refused the login.
        ConfigError: the role is not a superuser (the bootstrap needs one).
    """
    import psycopg  # noqa: PLC0415  # only provisioning connects as a superuser

    from crm_infra.adapters.postgres.errors import (  # noqa: PLC0415
        password_of,
        translate_errors,
    )

    with (
        _step("checking the PostgreSQL superuser URL"),
        translate_errors("connect as the superuser", (password_of(url),)),
        psycopg.connect(url, autocommit=True, connect_timeout=5) as conn,
    ):
        row = conn.execute(
            "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    if row is None or not row[1]:
        role = row[0] if row else "?"
        raise ConfigError(
            f"the PostgreSQL URL logs in as {role!r}, which is not a superuser; `crm-infra dev` "
            "needs one to create roles and a database and to run sql/bootstrap/roles.sql"
        )


class _Stop(BaseException):  # a control-flow signal, not an error
    """Raised in the main thread by SIGINT or SIGTERM to unwind and clean up.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it. Its
    text is the signal's name; ``signum`` its number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """What :func:`_stop_on_signals` hands out: the stop event, and a way to defer a stop."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._deferring = False
        self._pending: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopped.is_set():
            return  # already cleaning up: let the cleanup finish
        self.stopped.set()
        if self._deferring:
            self._pending = signum
            return
        raise _Stop(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a stop back until the block ends, then raise it.

        For a resource created and registered for cleanup in the block: a stop raised between
        the two would leak it.
        """
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending is not None:
            raise _Stop(self._pending)


@contextmanager
def _stop_on_signals() -> Iterator[_Signals]:
    """Turn SIGINT and SIGTERM into :class:`_Stop`; restore the old handlers afterwards."""
    signals = _Signals()
    previous = {
        sig: signal.signal(sig, signals.handle) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield signals
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_dev(
    *,
    env_file: str,
    database_url: str | None,
    out: TextIO,
    valkey: ValkeyTopology = "single",
    dynamic_credentials: bool = False,
) -> int:
    """Run a local real stack until SIGINT or SIGTERM, then remove all of it.

    Args:
        env_file: where to write ``CRM_BACKEND``, ``VAULT_ADDR`` and ``VAULT_TOKEN``.
        database_url: a PostgreSQL superuser URL (default: see :func:`resolve_superuser_url`).
        out: where to report progress.
        valkey: the Valkey topology: ``single``, ``cluster`` (3 primaries with a replica
            each) or ``sentinel`` (a primary, a replica and 3 Sentinels); its URL goes into
            Vault, so the application picks it up as in production.
        dynamic_credentials: the application logs in to PostgreSQL with short-lived
            credentials from OpenBao's database secrets engine (see :func:`provision`); every
            lease is revoked before the database is dropped.

    Returns:
        128 + the number of the signal that stopped it, after a clean stop: 130 for SIGINT
        (Ctrl-C), 143 for SIGTERM.

    Raises:
        ConfigError: the URL is not a superuser's, or the env file belongs to another run
            (before anything starts).
        ProvisioningError: the superuser URL does not connect, a server did not start or a
            provisioning step failed (everything started so far is stopped again).
    """
    url = resolve_superuser_url(database_url)
    env_path = Path(env_file).resolve()
    _claim_env_file(env_path, out)
    _check_superuser(url)
    try:
        from crm_infra.devservers.openbao import openbao_dev_server  # noqa: PLC0415
        from crm_infra.devservers.valkey_stack import start_valkey  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ProvisioningError(f"the dev servers are not installed: {exc}") from exc

    stopped_by = 0
    with _stop_on_signals() as signals, ExitStack() as stack:
        try:
            with _step("starting OpenBao"):
                bao = stack.enter_context(openbao_dev_server())
            print(f"OpenBao  {bao.addr} (dev mode, in memory)", file=out, flush=True)
            with _step(f"starting Valkey ({valkey})"):
                valkey_url = start_valkey(stack, valkey, password=secrets.token_hex(16))
            # The password is in Vault, not on the screen: the URL is shown without it.
            shown = re.sub(r"//[^/@]*@", "//", valkey_url, count=1)
            print(f"Valkey   {shown} ({valkey}; password in Vault)", file=out, flush=True)
            # A stop during provisioning waits for it to end (its steps have timeouts), so
            # that the new database is always registered for cleanup before the stop unwinds.
            with signals.deferred():
                made = provision(
                    superuser_url=url,
                    vault_addr=bao.addr,
                    vault_token=bao.token,
                    valkey_url=valkey_url,
                    out=out,
                    dynamic_credentials=dynamic_credentials,
                )
                stack.callback(_cleanup_database, made, out)
                if dynamic_credentials:
                    # Before the database goes: the revocation statements run in it.
                    stack.callback(_revoke_leases, bao.addr, bao.token, out)
            # Likewise the env file: written and registered for removal, or neither.
            with signals.deferred():
                try:
                    write_env_file(
                        env_path,
                        {"CRM_BACKEND": "real", "VAULT_ADDR": bao.addr,
                         "VAULT_TOKEN": made.app_token},
                    )
                except FileExistsError:
                    raise ConfigError(
                        f"{env_path} was created by someone else while this run started; "
                        "give this run its own file with --env-file PATH"
                    ) from None
                stack.callback(env_path.unlink, missing_ok=True)
            print(
                f"environment written to {env_path}\n"
                f"ready: in another shell run `set -a; . {env_path}; set +a` and then "
                "`crm-infra check` or `crm-infra demo --backend real`; Ctrl-C stops everything",
                file=out,
                flush=True,
            )
            while not signals.stopped.wait(3600):
                pass
        except _Stop as stop:
            print(f"\n{stop}: stopping; dropping the database and roles, stopping servers",
                  file=out, flush=True)
            stopped_by = stop.signum
    print("stopped; nothing left behind", file=out, flush=True)
    return 128 + stopped_by if stopped_by else 0


def _revoke_leases(addr: str, token: str, out: TextIO) -> None:
    import hvac  # noqa: PLC0415  # only provisioning talks to Vault directly

    from crm_infra.database_engine import revoke_engine_leases  # noqa: PLC0415

    with _step("revoking the short-lived database credentials"):
        revoke_engine_leases(hvac.Client(url=addr, token=token, timeout=30))
    print("revoked every short-lived database login", file=out, flush=True)


def _cleanup_database(made: Provisioned, out: TextIO) -> None:
    deprovision(made)
    print(f"dropped database {made.database_name} and roles {made.app_role}, "
          f"{made.admin_role}", file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m crm_infra.devstack provision`` from environment variables (compose init).

    Reads ``CRM_SUPERUSER_URL``, ``VAULT_ADDR``, ``VAULT_TOKEN``, ``CRM_VALKEY_URL``, and
    optionally ``VAULT_MOUNT_POINT`` and ``CRM_ADVERTISED_DB_HOST``.
    """
    args = sys.argv[1:] if argv is None else argv
    if args != ["provision"]:
        print("usage: python -m crm_infra.devstack provision", file=sys.stderr)
        return 2
    env = os.environ
    missing = [
        name
        for name in ("CRM_SUPERUSER_URL", "VAULT_ADDR", "VAULT_TOKEN", "CRM_VALKEY_URL")
        if not env.get(name)
    ]
    if missing:
        print(f"crm-infra provision: error: set {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        provision(
            superuser_url=env["CRM_SUPERUSER_URL"],
            vault_addr=env["VAULT_ADDR"],
            vault_token=env["VAULT_TOKEN"],
            valkey_url=env["CRM_VALKEY_URL"],
            mount_point=env.get("VAULT_MOUNT_POINT") or DEFAULT_MOUNT_POINT,
            advertised_db_host=env.get("CRM_ADVERTISED_DB_HOST"),
            out=sys.stdout,
        )
    except InfraError as exc:
        print(f"crm-infra provision: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
