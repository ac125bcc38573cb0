"""``crm-infra dev`` and the compose ``init`` service: provision a real stack for local use.

:func:`provision` does what an operator does once per deployment: a fresh database with the
schema's group roles and two login roles with generated passwords, the migrations applied
through the admin path, every credential written into Vault, and a least-privilege Vault
policy with a token for the application. :func:`run_dev` adds the servers: it starts OpenBao
and Valkey from their wheels on free loopback ports, provisions, writes the client's
environment to an env file and waits; on SIGINT or SIGTERM it drops the database and the login
roles, stops both servers and removes the env file.

``python -m crm_infra.devstack provision`` is what compose.yaml's ``init`` service runs.
"""

from __future__ import annotations

import os
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

if TYPE_CHECKING:
    from crm_infra.bootstrap import BootstrappedDatabase

__all__ = [
    "APP_POLICY",
    "APP_POLICY_NAME",
    "DEFAULT_SUPERUSER_URL",
    "Provisioned",
    "ProvisioningError",
    "deprovision",
    "main",
    "provision",
    "run_dev",
    "write_env_file",
]

DEFAULT_SUPERUSER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
APP_POLICY_NAME = "crm-app"
APP_POLICY = """\
# crm-infra application: read its own secrets, nothing else (KV v2 reads go to data/).
path "{mount}/data/crm/*" {{
  capabilities = ["read"]
}}
"""


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


def provision(
    *,
    superuser_url: str,
    vault_addr: str,
    vault_token: str,
    valkey_url: str,
    mount_point: str = "secret",
    advertised_db_host: str | None = None,
    out: TextIO | None = None,
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
        with _step(f"writing the secrets into Vault at {redact_address(vault_addr)}"):
            client = hvac.Client(url=vault_addr, token=vault_token, timeout=5)
            kv = client.secrets.kv.v2
            kv.create_or_update_secret(
                path="crm/database",
                secret={"url": app_url, "admin_url": admin_url},
                mount_point=mount_point,
            )
            kv.create_or_update_secret(
                path="crm/valkey", secret={"url": valkey_url}, mount_point=mount_point
            )
            kv.create_or_update_secret(
                path="crm/email",
                secret={
                    "api_key": "dev-" + secrets.token_hex(12),
                    "from_address": "crm@example.com",
                },
                mount_point=mount_point,
            )
        say(f"secrets written to {mount_point}/crm/database, crm/valkey, crm/email")
        with _step("creating the read-only application policy and token"):
            client.sys.create_or_update_policy(
                name=APP_POLICY_NAME, policy=APP_POLICY.format(mount=mount_point)
            )
            created = client.auth.token.create(
                policies=[APP_POLICY_NAME], ttl="768h", renewable=True,
                display_name="crm-infra-app",
            )
            app_token = str(created["auth"]["client_token"])
        say(f"application token created with policy {APP_POLICY_NAME!r} (read crm/* only)")
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
    """Write ``KEY=value`` lines, readable by the owner only (the file holds a token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("# written by `crm-infra dev`; removed when it stops\n")
        for key, value in values.items():
            handle.write(f"{key}={value}\n")


class _Stop(BaseException):  # a control-flow signal, not an error
    """Raised in the main thread by SIGINT or SIGTERM to unwind and clean up.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """


class _Signals:
    """What :func:`_stop_on_signals` hands out: the stop event, and a way to defer a stop."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._deferring = False
        self._pending: str | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopped.is_set():
            return  # already cleaning up: let the cleanup finish
        self.stopped.set()
        name = signal.Signals(signum).name
        if self._deferring:
            self._pending = name
            return
        raise _Stop(name)

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


def run_dev(*, env_file: str, database_url: str | None, out: TextIO) -> int:
    """Run a local real stack until SIGINT or SIGTERM, then remove all of it.

    Args:
        env_file: where to write ``CRM_BACKEND``, ``VAULT_ADDR`` and ``VAULT_TOKEN``.
        database_url: a PostgreSQL superuser URL (default: :data:`DEFAULT_SUPERUSER_URL`).
        out: where to report progress.

    Returns:
        0 after a clean stop.

    Raises:
        ProvisioningError: a server did not start or a provisioning step failed (everything
            started so far is stopped again).
    """
    superuser_url = database_url or DEFAULT_SUPERUSER_URL
    if not superuser_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("--database-url must be a postgresql:// URL")
    env_path = Path(env_file).resolve()
    try:
        from crm_infra.devservers.openbao import openbao_dev_server  # noqa: PLC0415
        from crm_infra.devservers.valkey import ValkeyDevServer  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ProvisioningError(f"the dev servers are not installed: {exc}") from exc

    with _stop_on_signals() as signals, ExitStack() as stack:
        try:
            with _step("starting OpenBao"):
                bao = stack.enter_context(openbao_dev_server())
            print(f"OpenBao  {bao.addr} (dev mode, in memory)", file=out, flush=True)
            with _step("starting Valkey"):
                valkey = stack.enter_context(ValkeyDevServer(password=secrets.token_hex(16)))
            print(f"Valkey   redis://127.0.0.1:{valkey.port}/0 (password in Vault)", file=out,
                  flush=True)
            # A stop during provisioning waits for it to end (its steps have timeouts), so
            # that the new database is always registered for cleanup before the stop unwinds.
            with signals.deferred():
                made = provision(
                    superuser_url=superuser_url,
                    vault_addr=bao.addr,
                    vault_token=bao.token,
                    valkey_url=valkey.url,
                    out=out,
                )
                stack.callback(_cleanup_database, made, out)
            write_env_file(
                env_path,
                {"CRM_BACKEND": "real", "VAULT_ADDR": bao.addr, "VAULT_TOKEN": made.app_token},
            )
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
    print("stopped; nothing left behind", file=out, flush=True)
    return 0


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
            mount_point=env.get("VAULT_MOUNT_POINT") or "secret",
            advertised_db_host=env.get("CRM_ADVERTISED_DB_HOST"),
            out=sys.stdout,
        )
    except InfraError as exc:
        print(f"crm-infra provision: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
