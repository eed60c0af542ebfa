"""Shadow stacks stay balanced through generators, async, exceptions and
deep recursion, and time is attributed where it belongs."""

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
