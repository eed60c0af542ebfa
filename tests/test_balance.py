"""Shadow stacks stay balanced through generators, async, exceptions and
deep recursion, and time is attributed where it belongs."""

import ocular
import workloads
from conftest import functions_of, traced
from ocular import _engine


def test_stacks_balanced_after_generators_async_exceptions_recursion():
    def body():
        before = _engine.stack_depth()
        workloads.balanced_workload()
        return before, _engine.stack_depth()

    for threshold in (0, 3):
        profile, (before, after) = traced(body, threshold=threshold, sample_interval_ms=None)
        # what was on the stack before the workload is all that is left: at
        # least body's own frame (Ocular also knows its callers, read from the
        # real stack when tracing starts)
        assert after == before >= 1
        fns = functions_of(profile, workloads)
        if threshold == 0:
            assert profile.lost_frames == 0
            assert fns["deep"].calls == 801
            assert fns["overflow"].calls > 100


def test_disabled_start_with_live_return_keeps_the_stack_consistent():
    # A function with two return paths: its PY_START reaches the threshold
    # first, the rare return site keeps firing afterwards.
    def run():
        before = _engine.stack_depth()
        total = 0
        for i in range(200):
            total += workloads.raises(1 if i % 50 else 3)
        for i in range(3):
            try:
                workloads.raises(4)
            except KeyError:
                total += 1
        return before, _engine.stack_depth()

    profile, (before, depth) = traced(run, threshold=10, sample_interval_ms=None)
    assert depth == before >= 1
    assert functions_of(profile, workloads)["raises"].calls == 10


def test_four_times_the_work_gets_about_four_times_the_cycles():
    def run():
        for _ in range(5):
            workloads.work(20000)
            workloads.work(20000)
            workloads.work(20000)
            workloads.work(20000)
        for _ in range(5):
            workloads.four_units_inline()

    ratios = []
    for _ in range(3):
        profile, _ = traced(run)
        fns = functions_of(profile, workloads)
        ratios.append(fns["four_units_inline"].cycles / (fns["work"].cycles))
        if 3.2 <= ratios[-1] * 4 <= 4.8:
            break
    # four_units_inline does the work of four work(20000) calls, in five calls
    # against twenty: per call it must cost about four times as much.
    assert 3.2 <= ratios[-1] * 4 <= 4.8, ratios


def test_empty_function_shows_about_zero_self_cycles():
    def run():
        for _ in range(20000):
            workloads.empty()
        for _ in range(2000):
            workloads.work(20)

    # One interrupt inside one of the 20000 empty calls adds ~1 M cycles to
    # their total: take the best of three runs (noise only ever adds).
    runs = []
    for _ in range(3):
        profile, _ = traced(run)
        fns = functions_of(profile, workloads)
        assert fns["empty"].calls == 20000
        empty_per_call = fns["empty"].cycles / fns["empty"].calls
        work_per_call = fns["work"].cycles / fns["work"].calls
        runs.append((abs(empty_per_call), empty_per_call, work_per_call, profile.event_cost_cycles))
        if abs(empty_per_call) < 0.5 * profile.event_cost_cycles:
            break
    _, empty_per_call, work_per_call, event_cost = min(runs)
    assert abs(empty_per_call) < 0.5 * event_cost, runs
    assert work_per_call > 10 * max(empty_per_call, 1)
