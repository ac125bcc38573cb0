"""Run the benchmarks: ``python -m benchmarks [name ...]`` (every one when no name is given).

Each ``benchmarks/bench_<name>.py`` defines ``main() -> bool`` (True when its targets are met),
starts the servers it needs on free loopback ports, and prints ratios against the raw client.
A name is ``<name>`` or ``bench_<name>``; an unknown one is an error (exit 2), never a run of
nothing that reports success. PostgreSQL comes from ``CRM_TEST_DATABASE_URL``, as for the tests.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

EXIT_USAGE = 2


def known_benchmarks() -> list[str]:
    """Return the benchmark names, sorted: ``bench_<name>.py`` gives ``<name>``."""
    here = Path(__file__).parent
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )


def main(argv: list[str]) -> int:
    """Run the named benchmarks (all when ``argv`` is empty); return the exit code."""
    known = known_benchmarks()
    wanted = [name.removeprefix("bench_") for name in argv] or known
    unknown = [name for name in wanted if name not in known]
    if unknown:
        print(
            f"python -m benchmarks: error: unknown benchmark(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(known)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    ok = True
    for name in dict.fromkeys(wanted):  # each once, in the order given
        module = importlib.import_module(f"benchmarks.bench_{name}")
        ok = bool(module.main()) and ok
    print("\nall targets met" if ok else "\nSOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
