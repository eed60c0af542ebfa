"""Processes and interruptions: fork, multiprocessing, KeyboardInterrupt,
sys.exit, os._exit, signal handlers, RecursionError, suspended generators
closed or collected, asyncio with thousands of tasks. Each run must leave the
shadow stacks balanced, lose no frame at threshold 0, produce its profile,
and every thread's account must add up."""

import asyncio
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import pytest

import ocular
import tracecheck
from ocular import _engine

HERE = os.path.dirname(os.path.abspath(__file__))
MULTITHREADED_FORK = "ignore:This process .* is multi-threaded:DeprecationWarning"


def assert_sound(profile, threshold=0):
    """What every run here must satisfy."""
    assert profile is not None and profile.failure is None
    if threshold == 0:
        assert profile.lost_frames == 0
    for t in profile.threads:
        parts = sum(f.cycles for f in t.functions) + t.untraced_cycles + t.lost_cycles + \
            t.overhead_cycles + t.ocular_cycles
        assert t.covered_cycles == parts, t


def run_traced(body, threshold=0, **options):
    """(profile, body's result, shadow-stack frames left over by body: 0 when balanced).

    Threshold > 0 runs with DISABLE alone (no sampling windows) unless asked:
    a window's close empties the shadow stacks and its open reads them back
    from the real frames, so their depth balances only within one window."""
    options.setdefault("sample_interval_ms", None)

    def wrapper():
        before = _engine.stack_depth()  # wrapper's own frame, and any caller adopted
        result = body()
        return result, _engine.stack_depth() - before

    options.setdefault("perfetto", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ocular.start_tracing(deinstrument_threshold=threshold, **options)
        try:
            result, left = wrapper()
        finally:
            profile = ocular.stop_tracing()
    assert not [w for w in caught if "ocular" in str(w.filename) or "Ocular" in str(w.message)]
    assert_sound(profile, threshold)
    return profile, result, left


def calls_of(profile, qualname):
    return sum(f.calls for f in profile.functions if f.qualname == qualname and f.filename == __file__)


def run_script(tmp_path, body, timeout=60):
    script = tmp_path / "script.py"
    script.write_text(f"import sys\nsys.path.insert(0, {HERE!r})\n" + textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout,
                          cwd=tmp_path)


# ---- fork and multiprocessing ---------------------------------------------

def test_fork_while_tracing_to_pftrace_child_exits_normally_and_never_touches_the_file(tmp_path):
    # The child returns through the interpreter's normal exit (atexit runs
    # there, Ocular's included), ten times over, while the parent traces
    # every event into a protobuf trace.
    result = run_script(tmp_path, f"""
        import os, warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        import ocular, workloads
        from ocular import _engine

        def child_only_work():
            return sum(workloads.fib(8) for _ in range(20))

        ocular.start_tracing(deinstrument_threshold=0, output="fork.pftrace")
        for i in range(10):
            workloads.fib(10)
            pid = os.fork()
            if pid == 0:
                ok = not ocular.is_tracing() and sys.monitoring.get_tool(2) is None
                ok = ok and not _engine.is_recording() and child_only_work() == 20 * 21
                sys.exit(0 if ok else 7)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
        profile = ocular.stop_tracing()
        print("FIB", [f.calls for f in profile.functions if f.qualname == "fib"][0],
              "CHILD", sum(f.calls for f in profile.functions if f.qualname == "child_only_work"),
              "LOST", profile.lost_frames, "FAIL", profile.failure, flush=True)
    """)
    assert result.returncode == 0, result.stderr
    assert "FIB 1770 CHILD 0 LOST 0 FAIL None" in result.stdout, result.stdout + result.stderr
    trace = tracecheck.load_pftrace(tmp_path / "fork.pftrace")  # strict
    slices = tracecheck.check_nesting(trace)  # nothing left open, nothing interleaved
    names = {s.name for s in slices}
    assert "fib" in names and "child_only_work" not in names
    assert sum(s.name == "fib" for s in slices) == 1770
    assert trace.pid == int(next(iter({key[1] for key in trace.events if key[0] == "process"}), trace.pid))


def child_task(n):
    """Runs in a multiprocessing child: Ocular must not trace it."""
    return n * n, ocular.is_tracing(), sys.monitoring.get_tool(2)


def parent_work(n):
    return sum(i * i for i in range(n))


@pytest.mark.filterwarnings(MULTITHREADED_FORK)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_children_run_untraced_and_the_parent_profile_is_sound(method):
    context = multiprocessing.get_context(method)

    def body():
        before = parent_work(1000)
        with context.Pool(2) as pool:
            results = pool.map(child_task, range(8))
        return before + parent_work(1000), results

    profile, (total, results), left = run_traced(body)
    assert total == 2 * parent_work(1000)
    assert results == [(n * n, False, None) for n in range(8)]
    assert left == 0
    assert calls_of(profile, "parent_work") == 2
    assert calls_of(profile, "child_task") == 0  # ran in the children only


# ---- interruptions ---------------------------------------------------------

def nested_then_interrupt(depth, exception):
    if depth == 0:
        raise exception
    return nested_then_interrupt(depth - 1, exception)


@pytest.mark.parametrize("threshold", [0, 3])
def test_keyboard_interrupt_raised_in_traced_code(threshold):
    def body():
        caught = 0
        for _ in range(20):
            try:
                nested_then_interrupt(30, KeyboardInterrupt)
            except KeyboardInterrupt:
                caught += 1
        return caught

    profile, caught, left = run_traced(body, threshold)
    assert caught == 20 and left == 0
    assert calls_of(profile, "nested_then_interrupt") == (20 * 31 if threshold == 0 else 3)


def spin_until_interrupted():
    spins = 0
    while True:
        spins = spin_step(spins)


def spin_step(spins):
    return spins + 1


def test_a_real_sigint_interrupts_traced_code():
    def body():
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        previous = signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
        try:
            spin_until_interrupted()
        except KeyboardInterrupt:
            return True
        finally:
            signal.signal(signal.SIGALRM, previous)
        return False

    profile, interrupted, left = run_traced(body)
    assert interrupted and left == 0
    assert calls_of(profile, "spin_until_interrupted") == 1 and calls_of(profile, "spin_step") > 1000


def test_sys_exit_inside_traced_code_with_stop_in_finally():
    def leave(code):
        before = _engine.stack_depth()
        try:
            nested_then_interrupt(10, SystemExit(code))
        finally:
            left.append(_engine.stack_depth() - before)

    left = []
    ocular.start_tracing(perfetto=False, deinstrument_threshold=0)
    try:
        leave(3)
    except SystemExit as exit:
        code = exit.code
    finally:
        profile = ocular.stop_tracing()
    assert code == 3 and left == [0]
    assert_sound(profile)
    assert calls_of(profile, "nested_then_interrupt") == 11


def test_sys_exit_in_a_script_leaves_a_complete_trace(tmp_path):
    result = run_script(tmp_path, """
        import ocular, workloads
        ocular.start_tracing(deinstrument_threshold=0, output="exit.pftrace")
        try:
            workloads.fib(12)
            sys.exit(5)
        finally:
            profile = ocular.stop_tracing()
            print("FIB", profile.functions[0].calls if profile.functions else None,
                  [f.calls for f in profile.functions if f.qualname == "fib"], flush=True)
    """)
    assert result.returncode == 5, result.stderr
    assert "[465]" in result.stdout
    slices = tracecheck.check_nesting(tracecheck.load_pftrace(tmp_path / "exit.pftrace"))
    assert sum(s.name == "fib" for s in slices) == 465


def test_os_exit_while_tracing_leaves_a_loadable_prefix(tmp_path):
    """os._exit skips atexit and kills the writer thread: the file holds what
    the writer had handed to write(), in whole packets except perhaps the last
    (the kill can cut a write(2) of a regular file short, between pages), so a
    raw .pftrace loads up to its last whole packet; what was still in the
    threads' buffers is lost and the slices open at that moment stay open
    (documented as truncated)."""
    result = run_script(tmp_path, """
        import os, ocular, workloads
        ocular.start_tracing(deinstrument_threshold=0, output="killed.pftrace")
        while os.path.getsize("killed.pftrace") < 300_000:  # the writer has written some
            workloads.mixed_no_genexpr()
        os._exit(0)
    """)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "killed.pftrace"
    trace = tracecheck.load_pftrace(path, tolerant=True)  # the schema's, every packet but a cut last one
    slices = tracecheck.check_nesting(trace, allow_open=True)
    fib = sum(s.name == "fib" and s.end_kind == "E" for s in slices)
    assert fib > 0
    with pytest.raises(tracecheck.TraceError):
        tracecheck.check_nesting(trace)  # the slices open at the exit are not closed


def handler_work(n):
    return sum(range(n))


def test_signal_handler_running_python_while_traced_code_runs():
    seen = []

    def handler(signum, frame):
        seen.append(handler_work(50))

    def body():
        previous = signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
        try:
            total = 0
            while len(seen) < 30:
                total = spin_step(total)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return total

    profile, total, left = run_traced(body)
    assert left == 0 and len(seen) >= 30
    assert calls_of(profile, "handler_work") == len(seen)
    assert calls_of(profile, "spin_step") == total


def spin_until(done, limit_s=20.0):
    """Run traced code until done() (a refresh happened), at most limit_s."""
    import time

    deadline = time.monotonic() + limit_s
    total = 0
    while not done():
        total = spin_step(total)
        if time.monotonic() > deadline:
            raise AssertionError("no recalibration came")
    return total


def test_the_programs_code_run_inside_a_recalibration_is_the_programs(monkeypatch):
    # A signal handler, a finalizer or a weakref callback can run at any safe
    # point, one of the recalibration's too (Ocular's own time): it is the
    # program's, called by the program's frame that was running.
    seen = []

    def refresh(run):  # the program's code, at the refresh's safe point
        seen.append(handler_work(50))

    monkeypatch.setattr(ocular._Run, "refresh", refresh)

    def body():
        return spin_until(lambda: len(seen) >= 3)

    profile, total, left = run_traced(body)
    assert left == 0
    assert calls_of(profile, "handler_work") == len(seen) >= 3
    assert calls_of(profile, "spin_step") == total
    def callers(name):
        return {caller.qualname.rsplit(".", 1)[-1] if caller else None: stats.calls
                for caller, stats in profile.callers(name).items()}

    assert callers("handler_work") == {"refresh": len(seen)}
    # called by the frame that was running when the refresh came (spin_until,
    # or one it calls); never Ocular's own, never unknown
    by = profile.callers("refresh")
    assert sum(stats.calls for stats in by.values()) == len(seen)
    assert all(caller and caller.filename == __file__ for caller in by), callers("refresh")
    assert {"spin_until", "spin_step", "<lambda>"} >= set(callers("refresh"))


class Timeout(Exception):
    pass


def raise_timeout():
    raise Timeout("from the program's handler")


def test_an_exception_the_program_raises_inside_a_recalibration_reaches_the_program(monkeypatch):
    # e.g. a SIGALRM handler raising TimeoutError, or Ctrl-C, while Ocular
    # recalibrates: the program sees it as it would without Ocular
    monkeypatch.setattr(ocular._Run, "refresh", lambda run: raise_timeout())

    def body():
        try:
            spin_until(lambda: False)
        except Timeout as error:
            return str(error)

    profile, message, left = run_traced(body)
    assert message == "from the program's handler"
    assert calls_of(profile, "raise_timeout") == 1


def test_oculars_own_error_in_a_recalibration_stays_oculars(monkeypatch):
    # The refresher's own failure (here _median of a run object: a TypeError
    # raised in Ocular's code alone) is dropped; the program never sees it.
    from ocular import _calibration

    monkeypatch.setattr(ocular._Run, "refresh", _calibration._median)

    def body():
        import time

        spins, end = 0, time.monotonic() + 0.3  # some 15 refresh periods
        while time.monotonic() < end:
            spins = spin_step(spins)
        return spins

    profile, total, left = run_traced(body)
    assert left == 0 and calls_of(profile, "spin_step") == total
    # the refreshes ran (their time is Ocular's own), and failed quietly
    assert sum(t.ocular_cycles for t in profile.threads) > 0


def recurse(n):
    return recurse(n + 1)


def recurse_generator(n):
    yield from recurse_generator(n + 1)
    yield n


class Recursive:
    def method(self, n):
        return self.method(n + 1)


@pytest.mark.parametrize("mode", ["adaptive", "precise"])
def test_recursion_error_near_the_limit(mode):
    def body():
        errors = 0
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(len(_stack()) + 300)
        try:
            for target in (lambda: recurse(0), lambda: list(recurse_generator(0)),
                           lambda: Recursive().method(0)):
                for _ in range(3):
                    try:
                        target()
                    except RecursionError:
                        errors += 1
        finally:
            sys.setrecursionlimit(limit)
        return errors

    profile, errors, left = run_traced(body, mode=mode)
    assert errors == 9 and left == 0
    assert calls_of(profile, "recurse") > 3 * 250
    assert calls_of(profile, "Recursive.method") > 3 * 250


def _stack():
    frame, frames = sys._getframe(), []
    while frame:
        frames.append(frame)
        frame = frame.f_back
    return frames


def counter(n, cleanup):
    try:
        for i in range(n):
            yield i
    finally:
        cleanup.append(n)


def bare_counter(n):
    for i in range(n):
        yield i


def test_generators_closed_or_collected_while_suspended():
    def body():
        cleanup, values = [], 0
        for round_ in range(200):
            a, b = counter(10, cleanup), bare_counter(10)
            c, d = counter(10, cleanup), bare_counter(10)
            values += next(a) + next(b) + next(c) + next(d) + next(a) + next(b)
            a.close()  # suspended inside try: runs the finally (PY_THROW + PY_UNWIND)
            b.close()  # suspended outside any try: 3.13.0 emits no event at all
            del c, d  # collected while suspended
            if round_ % 50 == 0:
                gc.collect()
        gc.collect()
        return values, len(cleanup)

    profile, (values, cleaned), left = run_traced(body)
    assert values == 200 * 2 and cleaned == 400 and left == 0
    assert calls_of(profile, "counter") == 400 and calls_of(profile, "bare_counter") == 400


async def leaf(i):
    await asyncio.sleep(0)
    return i


async def sleeper():
    await asyncio.sleep(3600)


@pytest.mark.parametrize("threshold", [0, 500])
def test_asyncio_with_thousands_of_tasks(threshold):
    tasks = 2000

    async def main():
        gathered = await asyncio.gather(*(leaf(i) for i in range(tasks)))
        async with asyncio.TaskGroup() as group:
            grouped = [group.create_task(leaf(i)) for i in range(tasks)]
        doomed = [asyncio.create_task(sleeper()) for _ in range(tasks // 2)]
        await asyncio.sleep(0)
        for task in doomed:
            task.cancel()
        cancelled = await asyncio.gather(*doomed, return_exceptions=True)
        return (sum(gathered), sum(t.result() for t in grouped),
                sum(isinstance(c, asyncio.CancelledError) for c in cancelled))

    profile, result, left = run_traced(lambda: asyncio.run(main()), threshold)
    expected = sum(range(tasks))
    assert result == (expected, expected, tasks // 2) and left == 0
    if threshold == 0:
        assert calls_of(profile, "leaf") == 2 * tasks and calls_of(profile, "sleeper") == tasks // 2
    else:
        assert calls_of(profile, "leaf") == threshold


def test_asyncio_with_thousands_of_tasks_under_sampling_windows():
    """The default at threshold 500: windows open and close while thousands of
    coroutines are suspended; the result and every thread's account hold."""
    tasks = 5000

    async def main():
        total = 0
        for _ in range(4):
            total += sum(await asyncio.gather(*(leaf(i) for i in range(tasks))))
        return total

    profile, result, _ = run_traced(lambda: asyncio.run(main()), 500, sample_interval_ms=5)
    assert result == 4 * sum(range(tasks))
    assert profile.sampling.windows > 0 and not profile.sampling.whole
    # Not asserted: the estimate of leaf's calls, a real-clock figure (+4 % to
    # +67 % of the 20 000 measured here, at times past the 1/sqrt(windows)
    # the profile claims: a known gap, in the README's limitations). Nor that
    # a window caught leaf at all: under load (./dev test --under-load, the
    # clock thread starved) once none did. What holds whatever the windows
    # caught: no estimate below what was recorded (the scale is at least 1),
    # and nothing recorded beyond what ran.
    leaf_records = [f for f in profile.functions if f.qualname == "leaf" and f.filename == __file__]
    assert profile.sampling.scale >= 1
    assert all(f.sampled_calls <= f.calls for f in leaf_records)
    assert sum(f.sampled_calls for f in leaf_records) <= 4 * tasks
