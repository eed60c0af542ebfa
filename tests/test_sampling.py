"""Threshold > 0: whole-run estimates from sampling windows."""

import sys
import threading

import ocular
import workloads
from ocular import _engine



NS = {}
exec(compile(workloads.SAMPLED_SOURCE, "<sampled>", "exec"), NS)
run_for = workloads.run_for

# How close the estimates come to the truth (shares of phases, calls and hits
# of millions, the whole run's duration) depends on how many windows the
# clock thread gets a CPU for: those are benchmarks (benchmarks/realclock.py).
# The tests here check what no load can break: sums, signs, what is armed.
def sampled(function, *args, interval=5, **options):
    """One run under sampling."""
    options.setdefault("perfetto", False)
    ocular.start_tracing(deinstrument_threshold=500, sample_interval_ms=interval,
                         include_only="<sampled>", **options)
    try:
        result = function(*args)
    finally:
        profile = ocular.stop_tracing()
    return profile, result


def by_name(profile):
    return {f.qualname: f for f in profile.functions if f.filename == "<sampled>"}


def test_nothing_stays_armed_after_stop_in_either_mode():
    for mode in ("adaptive", "precise"):
        profile, _ = sampled(run_for, 0.2, NS["phase_a"], 2000, mode=mode)
        assert profile.sampling.windows > 0
        assert not _engine.clock_running()
        assert all(sys.monitoring.get_tool(t) != ocular.TOOL_NAME for t in range(6))
        if hasattr(sys.monitoring, "_all_events"):
            assert sys.monitoring._all_events() == {}
        # the program's code runs untraced again: a fresh listener sees its events
        seen = []
        sys.monitoring.use_tool_id(3, "check")
        sys.monitoring.register_callback(3, sys.monitoring.events.PY_START,
                                         lambda code, offset: seen.append(code.co_name))
        sys.monitoring.set_events(3, sys.monitoring.events.PY_START)
        try:
            NS["tiny"](1)
        finally:
            sys.monitoring.set_events(3, 0)
            sys.monitoring.register_callback(3, sys.monitoring.events.PY_START, None)
            sys.monitoring.free_tool_id(3)
        assert "tiny" in seen


def test_windows_switch_ocular_only_and_leave_other_tools_alone():
    # Another tool DISABLEs its site; Ocular's windows (set_events on its own
    # tool id) must not re-arm it: only Ocular's start and stop call the
    # interpreter-wide restart_events().
    hits = []

    def callback(code, offset):
        hits.append(code)
        return sys.monitoring.DISABLE

    sys.monitoring.use_tool_id(4, "other")
    sys.monitoring.register_callback(4, sys.monitoring.events.PY_START, callback)
    sys.monitoring.set_events(4, sys.monitoring.events.PY_START)
    try:
        ocular.start_tracing(perfetto=False, deinstrument_threshold=500, sample_interval_ms=5)
        hits.clear()
        run_for(0.3, NS["tiny"], 1)
        # The other tool also sees Ocular's own Python code (its refresh) the
        # first time that runs: only the program's two functions are counted.
        seen = [code.co_name for code in hits if code in (run_for.__code__, NS["tiny"].__code__)]
        profile = ocular.stop_tracing()  # restart_events() here re-arms it, as documented
        assert profile.sampling.windows >= 1
        assert sorted(seen) == ["run_for", "tiny"]  # each DISABLEd after its first hit, through every window
    finally:
        sys.monitoring.set_events(4, 0)
        sys.monitoring.register_callback(4, sys.monitoring.events.PY_START, None)
        sys.monitoring.free_tool_id(4)


def test_threads_are_sampled_and_accounts_balance():
    def program():
        workers = [threading.Thread(target=run_for, args=(0.4, NS["phase_a"], 3000)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    profile, _ = sampled(program)
    assert len(profile.threads) >= 2
    for thread in profile.threads:
        parts = (sum(f.cycles for f in thread.functions) + thread.untraced_cycles + thread.lost_cycles
                 + thread.overhead_cycles + thread.ocular_cycles)
        assert parts == thread.covered_cycles
    assert all(residual == 0 for _tid, residual in _engine.last_balance())


def test_sample_interval_is_validated_before_anything_is_hooked():
    import pytest

    for value, error in ((True, TypeError), ("5", TypeError), (1, ValueError), (10**6, ValueError)):
        with pytest.raises(error, match="sample_interval_ms"):
            ocular.start_tracing(perfetto=False, sample_interval_ms=value)
        assert not ocular.is_tracing()


def test_the_report_says_the_figures_are_estimates():
    profile, _ = sampled(run_for, 0.3, NS["phase_a"], 3000)
    text = profile.report()
    assert "ESTIMATES" in text and f"{profile.sampling.windows:,} sampling windows" in text


def test_a_run_with_no_window_after_its_warm_up_says_so_and_keeps_its_measured_figures():
    # The warm-up (10 ms) ends, the program goes on for ~100 ms, and the
    # first window would come only after a minute: what the figures hold is
    # the warm-up, measured, and the report says the rest is in none of them.
    profile, _ = sampled(run_for, 0.1, NS["phase_a"], 2000, interval=60_000)
    assert profile.sampling.windows == 0 and not profile.sampling.whole
    phase_a = by_name(profile)["phase_a"]
    assert phase_a.windows == 0 and phase_a.calls == phase_a.sampled_calls > 0
    # measured, not estimated: its uncertainty is the calibration's alone
    # (about a quarter of this event-dense loop's time), not the whole figure
    assert 0 < phase_a.uncertainty < phase_a.cycles
    text = profile.report()
    assert "no sampling window opened" in text and "ESTIMATES" not in text
    assert "?" not in text.split("Hottest functions")[1].splitlines()[2].split()[0]
