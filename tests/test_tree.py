"""The call tree (profile.edges, callers, callees, ThreadStats.edges) against
cProfile, its own sums, and its text views (report_callers / report_callees)."""

import cProfile
import pstats

import pytest

import workloads
from ocular import FunctionStats, Profile
from conftest import functions_of, in_threads, traced

WORKLOADS = workloads.__file__


def short(function):
    """cProfile's key for a function of workloads.py: (first line, co_name)."""
    return function.firstlineno, function.qualname.rsplit(".", 1)[-1]


def cprofile_tree(function, *args):
    profiler = cProfile.Profile()
    profiler.enable()
    function(*args)
    profiler.disable()
    calls, callers = {}, {}
    for (filename, line, name), (_cc, nc, _tt, _ct, who) in pstats.Stats(profiler).stats.items():
        if filename == WORKLOADS:
            calls[(line, name)] = nc
            callers[(line, name)] = {(l, n): edge[0] for (f, l, n), edge in who.items() if f == WORKLOADS}
    return calls, callers


def test_calls_and_callers_equal_cprofiles():
    expected_calls, expected_callers = cprofile_tree(workloads.mixed_no_genexpr)
    profile, _ = traced(workloads.mixed_no_genexpr)
    functions = functions_of(profile, workloads)
    assert {short(f): f.calls for f in functions.values()} == expected_calls
    for function in functions.values():
        got = {short(caller): stats.calls for caller, stats in profile.callers(function).items()
               if caller is not None and caller.filename == WORKLOADS}
        assert got == expected_callers[short(function)], function.qualname
    # and the other direction is the same edges
    fib = functions["fib"]
    assert profile.callees(fib)[fib].calls == expected_callers[short(fib)][short(fib)] == 464


def test_an_edge_is_found_from_a_function_a_code_object_or_a_name():
    profile, _ = traced(workloads.mixed_no_genexpr)
    by_record = profile.callers(functions_of(profile, workloads)["Shape.__init__"])
    assert by_record == profile.callers(workloads.Shape.__init__) == profile.callers(workloads.Shape.__init__.__code__)
    assert by_record == profile.callers("Shape.__init__") == profile.callers("workloads.py:Shape.__init__")
    assert {c.qualname: s.calls for c, s in by_record.items()} == {"Shape.of": 20, "Shape.unit": 1}
    with pytest.raises(ValueError, match="not in this profile"):
        profile.callers("no_such_function")
    with pytest.raises(TypeError, match="FunctionStats"):
        profile.callers(42)


def test_a_name_two_functions_share_is_refused_as_ambiguous():
    twins = (FunctionStats("/a/x.py", "run", 1, 1, 10), FunctionStats("/b/x.py", "run", 5, 1, 10))
    profile = Profile("adaptive", 0, 1e9, 1, 1, 0, functions=twins)
    with pytest.raises(ValueError, match="ambiguous.*run.*run"):
        profile.callers("run")
    with pytest.raises(ValueError, match="ambiguous"):
        profile.callers("x.py:run")
    assert profile.callers("b/x.py:run") == {} and profile.callers("/a/x.py:1") == {}


def test_inclusive_time_is_self_plus_the_callees_inclusive_time():
    profile, _ = traced(workloads.mixed_no_genexpr, 3000)
    functions = functions_of(profile, workloads)
    checked = 0
    for name, function in functions.items():
        callees = profile.callees(function)
        if function in callees:  # recursive: its inclusive time counts the recursion once
            continue
        expected = function.cycles + sum(stats.inclusive_cycles for stats in callees.values())
        assert function.inclusive_cycles == pytest.approx(expected, rel=0.01), name
        checked += bool(callees)
    assert checked >= 2  # mixed_no_genexpr and Shape.of have callees


def test_edges_add_up_to_the_functions():
    profile, _ = traced(workloads.mixed_no_genexpr)
    for function in functions_of(profile, workloads).values():
        edges = profile.callers(function).values()
        assert sum(e.calls for e in edges) == function.calls
        # each edge's figure is rounded from the engine's subticks on its own
        assert abs(sum(e.cycles for e in edges) - function.cycles) <= len(edges)


def test_each_thread_keeps_its_own_edges():
    single, _ = traced(workloads.mixed_no_genexpr)
    one = {(short(c) if c else None, short(e)): s.calls for c, e, s in single.edges
           if e.filename == WORKLOADS and (c is None or c.filename == WORKLOADS)}

    profile, _ = traced(in_threads, workloads.mixed_no_genexpr, 2)
    merged = {(short(c) if c else None, short(e)): s.calls for c, e, s in profile.edges
              if e.filename == WORKLOADS and c is not None and c.filename == WORKLOADS}
    assert merged == {key: 2 * n for key, n in one.items() if key[0] is not None}
    workers = [t for t in profile.threads if any(f.qualname == "mixed_no_genexpr" for f in t.functions)]
    assert len(workers) == 2
    for thread in workers:
        own = {(short(c) if c else None, short(e)): s.calls for c, e, s in thread.edges
               if e.filename == WORKLOADS and c is not None and c.filename == WORKLOADS}
        assert own == {key: n for key, n in one.items() if key[0] is not None}
        assert all(e in thread.functions for _, e, _ in thread.edges)


def test_callers_and_callees_views():
    profile, _ = traced(workloads.mixed_no_genexpr)
    text = profile.report_callers(workloads.Shape.__init__)
    lines = text.splitlines()
    assert lines[0].startswith("Callers of Shape.__init__")
    rows = {line.split()[-2]: int(line.split()[0]) for line in lines[2:] if "workloads.py:" in line}
    assert rows == {"Shape.of": 20, "Shape.unit": 1}
    text = profile.report_callees("mixed_no_genexpr")
    callees = {c.qualname: s.calls for c, s in profile.callees(workloads.mixed_no_genexpr).items()}
    for name, calls in callees.items():
        assert any(line.split()[:1] == [f"{calls:,}"] and f" {name} " in line for line in text.splitlines()), name
    # None: a section for each of the hottest functions
    everything = profile.report_callers(None, limit=3)
    assert everything.count("Callers of ") == 3
    assert all(len(line) <= 100 for line in everything.splitlines())
    # one thread's view
    main = next(t for t in profile.threads if t.functions)
    assert "Callers of fib" in profile.report_callers(workloads.fib, thread=main.native_id)
    with pytest.raises(ValueError, match="thread"):
        profile.report_callers(workloads.fib, thread="no such thread")
