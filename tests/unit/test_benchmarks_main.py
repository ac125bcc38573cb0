"""``python -m benchmarks``: an unknown name is an error, never a run of nothing that passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.__main__ import known_benchmarks, main

ROOT = Path(__file__).resolve().parents[2]


def test_the_known_names_are_the_bench_modules() -> None:
    assert known_benchmarks() == sorted(
        p.stem.removeprefix("bench_") for p in (ROOT / "benchmarks").glob("bench_*.py")
    )
    assert "postgres" in known_benchmarks()


def test_an_unknown_name_exits_2_listing_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["postgres", "bogus"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran, not even the known one
    assert captured.err == (
        "python -m benchmarks: error: unknown benchmark(s) 'bogus'; "
        f"known: {', '.join(known_benchmarks())}\n"
    )


def test_the_command_line_exits_2_for_an_unknown_name() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "all targets met" not in done.stdout


def test_the_instruction_count_is_read_from_the_totals_not_the_header() -> None:
    # Instrumentation starts off, so callgrind's header summary says 0: the totals line
    # at the end holds what was counted.
    from benchmarks.bench_instructions import _total

    profile = "version: 1\nevents: Ir\nsummary: 0\n\nfn=(1) main\n5 10\n\ntotals: 188482576\n"
    assert _total(profile) == 188482576
    with pytest.raises(RuntimeError, match="no total"):
        _total("events: Ir\nsummary: 0\n")
