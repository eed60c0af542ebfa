"""Merging profiles of several runs (ocular._merge, the pytest plugin's combined profile)."""

import pytest

import report_workload
from conftest import traced
from ocular._merge import IDENTITY, merge_profiles


def run(n, mode="adaptive"):
    profile, _ = traced(report_workload.run, n, mode=mode)
    return profile, dict(report_workload.CALLS)


def by_identity(records):
    return {tuple(getattr(r, name) for name in IDENTITY[type(r).__name__]): r for r in records}


def test_two_runs_add_up_to_the_calls_each_made():
    (first, calls_a), (second, calls_b) = run(3000), run(7000)
    merged = merge_profiles([first, second])
    functions = {f.qualname: f for f in merged.functions if f.filename == report_workload.__file__}
    for name in calls_a:
        assert functions[name].calls == calls_a[name] + calls_b[name], name
    assert merged.total_cycles == first.total_cycles + second.total_cycles
    assert merged.duration_ns == first.duration_ns + second.duration_ns
    assert merged.events == first.events + second.events
    # The merged clock rate turns the summed cycles into the summed times.
    assert merged.cycles_to_ns(merged.total_cycles) == pytest.approx(
        first.cycles_to_ns(first.total_cycles) + second.cycles_to_ns(second.total_cycles), rel=1e-3)
    assert [f.cycles for f in merged.functions] == sorted((f.cycles for f in merged.functions), reverse=True)


@pytest.mark.parametrize("field", ["functions", "blocks", "lines", "instructions", "sites"])
def test_every_record_of_either_run_is_there_with_its_figures_added(field):
    (first, _), (second, _) = run(2000, "precise"), run(5000, "precise")
    merged = by_identity(getattr(merge_profiles([first, second]), field))
    a, b = by_identity(getattr(first, field)), by_identity(getattr(second, field))
    assert set(merged) == set(a) | set(b)
    counted = "cycles" if field != "sites" else "hits"
    for key, record in merged.items():
        assert getattr(record, counted) == sum(getattr(r[key], counted) for r in (a, b) if key in r), key
        assert record.hits == sum(r[key].hits for r in (a, b) if key in r) if hasattr(record, "hits") else True


def test_call_tree_and_threads_merge_by_function():
    (first, _), (second, _) = run(2000), run(4000)
    merged = merge_profiles([first, second])

    def edges(profile):
        return {(c and (c.qualname, c.firstlineno), f.qualname, f.firstlineno): s for c, f, s in profile.edges}

    a, b, m = edges(first), edges(second), edges(merged)
    assert set(m) == set(a) | set(b)
    for key, stats in m.items():
        assert stats.calls == sum(e[key].calls for e in (a, b) if key in e)
        assert stats.inclusive_cycles == sum(e[key].inclusive_cycles for e in (a, b) if key in e)
    assert all(callee in merged.functions for _, callee, _ in merged.edges)  # the merged records themselves
    (thread,) = merged.threads  # one thread ran both
    assert thread.covered_cycles == first.threads[0].covered_cycles + second.threads[0].covered_cycles
    assert sum(f.calls for f in thread.functions) == sum(f.calls for f in merged.functions)


def test_merging_in_steps_gives_the_same_records():
    a, b, c = (run(n)[0] for n in (1000, 2000, 3000))
    whole, steps = merge_profiles([a, b, c]), merge_profiles([merge_profiles([a, b]), c])
    for field in ("functions", "blocks", "lines", "instructions", "sites", "threads"):
        assert getattr(whole, field) == getattr(steps, field), field
    assert whole.total_cycles == steps.total_cycles
    assert merge_profiles([a]).functions == a.functions


def test_profiles_of_different_modes_do_not_merge():
    with pytest.raises(ValueError, match="adaptive/0 and precise/0"):
        merge_profiles([run(100)[0], run(100, "precise")[0]])
    with pytest.raises(ValueError, match="at least one"):
        merge_profiles([])
