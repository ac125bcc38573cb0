"""Pool counters in health reports: added for the ports that hold pools, once per object, and
shown by ``to_dict`` only where there are some."""

from __future__ import annotations

from crm_infra.health import ComponentHealth, HealthReport, with_pools
from crm_infra.pool_stats import PoolStats

APP = PoolStats("crm-app db:5432/crm #1", "postgresql", 3, 2, 1, 10, 0, 0.5, 7)


class _Pooled:
    def __init__(self, stats: PoolStats) -> None:
        self.stats = stats
        self.reads = 0

    def pool_stats(self) -> dict[str, PoolStats]:
        self.reads += 1
        return {self.stats.name: self.stats}


def _report() -> HealthReport:
    return HealthReport(
        {"database": ComponentHealth(True, 1.0), "keyvalue": ComponentHealth(True, 2.0)}
    )


def test_a_component_gains_the_counters_of_its_pools() -> None:
    db = _Pooled(APP)
    report = with_pools(_report(), {"database": (db, db), "keyvalue": (object(),)})
    assert db.reads == 1  # one object playing both database ports is read once
    assert report.components["database"].pools == {APP.name: APP}
    assert report.components["keyvalue"].pools is None
    shown = report.to_dict()["components"]
    assert shown["database"]["pools"] == {
        APP.name: {
            "system": "postgresql",
            "size": 3,
            "idle": 2,
            "in_use": 1,
            "max": 10,
            "waiting": 0,
            "wait_seconds": 0.5,
            "requests": 7,
        }
    }
    assert "pools" not in shown["keyvalue"]


def test_the_in_memory_fakes_hold_no_pools() -> None:
    from crm_infra.fakes import InMemoryKeyValueStore, InMemoryUserScopedDB

    report = with_pools(
        _report(), {"database": (InMemoryUserScopedDB(),), "keyvalue": (InMemoryKeyValueStore(),)}
    )
    assert report == _report()
