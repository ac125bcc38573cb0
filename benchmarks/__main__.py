"""Run every benchmark module: ``python -m benchmarks [name ...]``.

Each ``benchmarks/bench_*.py`` defines ``main() -> bool`` (True when its targets are met),
starts the servers it needs on free loopback ports, and prints ratios against the raw client.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(
        m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_")
    )
    wanted = [n for n in names if not argv or any(a in n for a in argv)]
    ok = True
    for name in wanted:
        module = importlib.import_module(f"benchmarks.{name}")
        ok = bool(module.main()) and ok
    print("\nall targets met" if ok else "\nSOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
