"""The text report: its header, tables, orders, per-thread view, paths and width."""

import dataclasses
import os
import re

import pytest

import workloads
from conftest import functions_of, in_threads, traced

WIDTH = 100


def section(text, title):
    """The rows of the table whose title starts with `title` (header row first)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip() or not line.startswith("  "):
            break
        rows.append(line)
    return rows


def function_rows(text, title="Hottest functions"):
    """[(self, self ms, incl, incl ms, calls, qualname)] of a functions table."""
    return [tuple(row.split()[:6]) for row in section(text, title)[1:]]


def run_threads():
    in_threads(workloads.fib, 1, 18, names=["fib-worker"])
    workloads.loops(500)


@pytest.fixture(scope="module")
def threaded():
    return traced(run_threads)[0]


def test_the_header_says_what_was_measured(threaded):
    text = threaded.report()
    header = text.split("\n\n")[0]
    assert "adaptive mode" in header and "threshold off" in header
    assert f"{threaded.duration_ns / 1e6:.1f} ms wall" in header
    assert f"{threaded.events:,} events" in header and "0 sites de-instrumented" in header
    assert "2 threads traced" in header and "summed over them" in header
    assert "unattributed" in header and "Ocular's overhead removed" in header and "own time" in header
    cal = threaded.calibration
    assert f"{cal.costs[cal.principal].ticks:.1f} +- {cal.costs[cal.principal].spread:.1f} cycles" in header
    single = traced(workloads.loops, 50)[0].report()
    assert "1 thread traced" in single and "summed" not in single.split("\n\n")[0]
    throttled = traced(workloads.loops, 3000, threshold=10, sample_interval_ms=None)[0]
    assert f"{throttled.disabled_sites:,} sites de-instrumented" in throttled.report()
    assert throttled.disabled_sites > 0 and "threshold 10" in throttled.report()


def test_a_wall_time_row_per_thread(threaded):
    rows = section(threaded.report(), "Threads")[1:]
    assert len(rows) == len(threaded.threads) == 2
    for thread in threaded.threads:
        row = next(r for r in rows if r.split()[0] == str(thread.native_id))
        assert row.split()[1] == f"{threaded.cycles_to_ns(thread.covered_cycles) / 1e6:.1f}"
        assert row.split()[-1] == thread.name
    assert any(r.endswith("fib-worker") for r in rows)


def test_the_view_of_one_thread(threaded):
    worker = next(t for t in threaded.threads if t.name == "fib-worker")
    by_name = threaded.report(thread="fib-worker")
    assert by_name == threaded.report(thread=worker.native_id) == threaded.report(thread=str(worker.native_id))
    assert by_name.startswith(f"Ocular profile of thread fib-worker (native id {worker.native_id})")
    names = [row[5] for row in function_rows(by_name, "Hottest functions on this thread")]
    assert names[0] == "fib" and "loops" not in names
    main = threaded.report(thread="MainThread")
    names = [row[5] for row in function_rows(main, "Hottest functions on this thread")]
    assert "loops" in names and "fib" not in names
    with pytest.raises(ValueError, match="fib-worker"):  # lists the threads it has
        threaded.report(thread="nobody")
    with pytest.raises(TypeError, match="thread"):
        threaded.report(thread=1.5)


@pytest.mark.parametrize("sort, column", [("self", 1), ("inclusive", 3), ("calls", 4)])
def test_functions_are_ordered_by_sort(sort, column):
    profile, _ = traced(workloads.mixed_no_genexpr)
    rows = function_rows(profile.report(None, sort=sort))
    assert len(rows) == len(profile.functions)
    # '~' marks a figure no larger than its uncertainty; it is shown all the same
    values = [float(row[column].replace(",", "").lstrip("~")) for row in rows]
    assert values == sorted(values, reverse=True)
    assert f"(by {sort})" in profile.report(sort=sort)


def test_hits_orders_blocks_and_lines_by_hits():
    profile, _ = traced(workloads.mixed_no_genexpr)
    text = profile.report(None, sort="hits")
    for title in ("Hottest basic blocks", "Hottest lines"):
        hits = [int(row.split()[2].replace(",", "")) for row in section(text, title)[1:] if row.split()[0] != "="]
        assert hits == sorted(hits, reverse=True) and len(hits) > 5
    with pytest.raises(ValueError, match="'self', 'inclusive', 'calls', 'hits'"):
        profile.report(sort="fast")
    with pytest.raises(TypeError, match="limit"):
        profile.report("10")
    with pytest.raises(ValueError, match="limit"):
        profile.report(-1)
    assert len(function_rows(profile.report(3))) == 3


def test_figures_within_their_uncertainty_are_shown_and_marked():
    def run():
        for _ in range(200):
            workloads.empty()
        workloads.loops(300)

    profile, _ = traced(run)
    rows = {row[5]: row for row in function_rows(profile.report(None))}
    total = profile.total_cycles
    for function in functions_of(profile, workloads).values():
        noisy = abs(function.cycles) <= function.uncertainty
        share, ms = rows[function.qualname][0], rows[function.qualname][1]
        assert share.startswith("~") == ms.startswith("~") == noisy, function
        assert share.lstrip("~") == f"{100 * function.cycles / total:.1f}%"
        assert ms.lstrip("~") == f"{profile.cycles_to_ns(function.cycles) / 1e6:.3f}"
    assert not rows["loops"][0].startswith("~")
    # the same figure with an uncertainty above it: shown whole, marked
    loops = next(f for f in profile.functions if f.qualname == "loops")
    doubtful = dataclasses.replace(loops, uncertainty=loops.cycles + 1)
    changed = dataclasses.replace(profile, functions=tuple(doubtful if f is loops else f for f in profile.functions))
    row = {row[5]: row for row in function_rows(changed.report(None))}["loops"]
    assert row[0] == "~" + rows["loops"][0] and row[1] == "~" + rows["loops"][1]


def test_paths_are_relative_below_the_working_directory_and_lines_fit(monkeypatch, tmp_path):
    profile, _ = traced(workloads.precise_mix, mode="precise")
    monkeypatch.chdir(os.path.dirname(workloads.__file__))
    text = profile.report()
    assert "workloads.py:" in text and workloads.__file__ not in text
    assert "Hottest instructions" in text
    monkeypatch.chdir(tmp_path)
    elsewhere = profile.report() + profile.report(thread="MainThread") + profile.report_callers(limit=5)
    assert os.path.dirname(workloads.__file__)[-10:] in elsewhere
    for text in (text, elsewhere):
        long = [line for line in text.splitlines() if len(line) > WIDTH]
        assert not long


def test_precise_instructions_are_named_specialized_then_base():
    profile, _ = traced(workloads.loops, 3000, mode="precise", threshold=20, sample_interval_ms=None)  # past 20: specialised
    rows = section(profile.report(None), "Hottest instructions")[1:]
    assert len(rows) == len(profile.instructions)
    assert any(i.specialized == "BINARY_OP_ADD_INT" for i in profile.instructions if i.opname == "BINARY_OP")
    assert any("BINARY_OP_ADD_INT (BINARY_OP)" in row for row in rows)
    assert all(re.findall(r"BINARY_OP_ADD_INT(?! \(BINARY_OP\))", row) == [] for row in rows)  # with its base
