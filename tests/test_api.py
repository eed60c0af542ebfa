"""Arguments, lifecycle, tool ids and coexistence."""

import cProfile
import dataclasses
import os
import subprocess
import sys
import warnings

import pytest

import ocular
import workloads
from conftest import functions_of, traced


def no_tool_of_ours():
    return all(sys.monitoring.get_tool(t) != ocular.TOOL_NAME for t in range(6))


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"mode": "fast"}, ValueError, ["'adaptive'", "'precise'", "'fast'"]),
        ({"mode": None}, ValueError, ["'adaptive'", "'precise'", "None"]),
        ({"deinstrument_threshold": True}, TypeError, ["deinstrument_threshold", "bool"]),
        ({"deinstrument_threshold": 1.5}, TypeError, ["deinstrument_threshold", "float"]),
        ({"deinstrument_threshold": "5"}, TypeError, ["deinstrument_threshold"]),
        ({"deinstrument_threshold": -1}, ValueError, ["deinstrument_threshold", "-1"]),
        ({"deinstrument_threshold": 2**40}, ValueError, ["deinstrument_threshold"]),
        ({"exclude": 5}, TypeError, ["exclude", "int"]),
        ({"exclude": [b"x"]}, TypeError, ["exclude", "bytes"]),
        ({"include_only": b"x"}, TypeError, ["include_only"]),
        ({"include_only": ["ok", None]}, TypeError, ["include_only", "NoneType"]),
        ({"perfetto": "yes"}, TypeError, ["perfetto"]),
        ({"perfetto": True, "output": "trace.txt"}, ValueError, [".json", ".pftrace", "trace.txt"]),
        ({"perfetto": True, "output": 42}, TypeError, ["output"]),
        ({"max_buffer_mb": 0}, ValueError, ["max_buffer_mb"]),
    ],
)
def test_bad_arguments_raise_before_anything_is_hooked(kwargs, error, words):
    kwargs.setdefault("perfetto", False)
    with pytest.raises(error) as excinfo:
        ocular.start_tracing(**kwargs)
    for word in words:
        assert word in str(excinfo.value)
    assert not ocular.is_tracing()
    assert no_tool_of_ours()


def test_patterns_accept_one_str_or_any_iterable():
    for value in ("loops", ["loops"], ("loops",), (p for p in ["loops"])):
        profile, _ = traced(workloads.mixed_no_genexpr, include_only=value)
        assert set(functions_of(profile, workloads)) == {"loops"}


def test_lifecycle():
    assert ocular.stop_tracing() is None
    ocular.start_tracing(perfetto=False)
    assert ocular.is_tracing()
    with pytest.raises(RuntimeError, match="already tracing"):
        ocular.start_tracing(perfetto=False)
    assert ocular.is_tracing()
    profile = ocular.stop_tracing()
    assert isinstance(profile, ocular.Profile)
    assert not ocular.is_tracing()
    assert ocular.stop_tracing() is None


def test_prefers_profiler_id_and_releases_everything():
    ocular.start_tracing(perfetto=False)
    assert sys.monitoring.get_tool(2) == ocular.TOOL_NAME
    ocular.stop_tracing()
    assert no_tool_of_ours()
    for tool in (2, 3, 4):
        assert sys.monitoring.get_tool(tool) is None
    if hasattr(sys.monitoring, "_all_events"):
        assert sys.monitoring._all_events() == {}
    # Another tool can take the profiler id, and cProfile works again.
    sys.monitoring.use_tool_id(2, "someone else")
    sys.monitoring.free_tool_id(2)
    profiler = cProfile.Profile()
    profiler.enable()
    workloads.fib(5)
    profiler.disable()


def test_falls_back_to_free_ids_and_names_the_holders():
    held = []
    try:
        for tool, name in ((2, "cProfile-like"), (3, "other-A")):
            sys.monitoring.use_tool_id(tool, name)
            held.append(tool)
        ocular.start_tracing(perfetto=False)
        assert sys.monitoring.get_tool(4) == ocular.TOOL_NAME
        profile = ocular.stop_tracing()
        assert profile is not None
        sys.monitoring.use_tool_id(4, "other-B")
        held.append(4)
        with pytest.raises(RuntimeError) as excinfo:
            ocular.start_tracing(perfetto=False)
        for name in ("cProfile-like", "other-A", "other-B"):
            assert name in str(excinfo.value)
        assert not ocular.is_tracing()
        assert sys.monitoring.get_tool(0) is None and sys.monitoring.get_tool(1) is None
    finally:
        for tool in held:
            sys.monitoring.free_tool_id(tool)


def test_cprofile_running_is_not_evicted():
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        ocular.start_tracing(perfetto=False)
        assert sys.monitoring.get_tool(2) == "cProfile"
        ocular.stop_tracing()
        assert sys.monitoring.get_tool(2) == "cProfile"
    finally:
        profiler.disable()


def test_two_hundred_start_stop_cycles():
    for _ in range(200):
        profile, result = traced(workloads.work, 50)
        assert result == workloads.work(50)
        assert functions_of(profile, workloads)["work"].calls == 1
        assert no_tool_of_ours()


def test_internal_failure_is_reported_at_stop_and_never_raises():
    from ocular import _engine

    expected = workloads.loops(100)
    ocular.start_tracing(perfetto=False, deinstrument_threshold=0)
    _engine.simulate_failure()
    result = workloads.loops(100)  # the program runs on, unharmed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = ocular.stop_tracing()
    assert result == expected
    assert profile.failure and "simulated" in profile.failure
    assert any("simulated" in str(w.message) for w in caught)


def test_report_is_readable():
    profile, _ = traced(workloads.mixed_no_genexpr)
    text = profile.report(limit=5)
    assert str(profile) == profile.report()
    assert "Hottest functions" in text and "Hottest basic blocks" in text and "Hottest lines" in text
    # the five hottest functions by name (which five is the real clock's to
    # say: under load a preemption reorders a 1 ms run), and every function
    # in the full report
    for function in profile.functions[:5]:
        assert function.qualname in text
    assert all(name in profile.report() for name in ("loops", "fib", "Shape.area"))
    # the source text of the hottest line is shown
    hottest = profile.lines[0]
    import linecache

    assert linecache.getline(hottest.filename, hottest.lineno).strip()[:40] in text
    assert sorted(profile.functions)  # records are orderable
    assert profile.tsc_hz > 1e6 and profile.duration_ns > 0


def test_ocular_own_code_is_never_traced():
    profile, _ = traced(workloads.mixed_no_genexpr)
    own = os.path.dirname(ocular.__file__)
    assert not [f for f in profile.functions if f.filename.startswith(own)]
    assert not [b for b in profile.blocks if b.filename.startswith(own)]


@dataclasses.dataclass(frozen=True)
class Point:  # the program's own dataclass: its generated __init__ has no file either
    x: float
    y: float


def test_ocular_own_code_without_a_file_is_never_traced_but_the_programs_is():
    """dataclasses compiles __init__ at run time ("<string>"): Ocular's own
    (its records, its calibration's, made by its refreshes mid-run) are
    Ocular's, the program's are the program's."""
    from ocular._calibration import KindCost

    def work():
        return [(Point(i, i), KindCost(float(i), 0.0)) for i in range(300)]

    profile, _ = traced(work)
    inits = [f for f in profile.functions if f.qualname.endswith("<locals>.__init__")]
    assert [f.calls for f in inits] == [300]  # Point's, called 300 times; KindCost's not seen
    assert Point.__init__.__code__.co_filename == KindCost.__init__.__code__.co_filename == inits[0].filename


def test_old_python_gets_a_clear_import_error():
    candidates = [os.path.join(os.path.expanduser("~/.pyenv/versions"), v, "bin", "python3")
                  for v in sorted(os.listdir(os.path.expanduser("~/.pyenv/versions")))
                  if v.startswith("3.11")] if os.path.isdir(os.path.expanduser("~/.pyenv/versions")) else []
    candidates += ["/usr/bin/python3", "python3.11"]
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src")
    for python in candidates:
        try:
            version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2] < (3, 12))"],
                                     capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            continue
        if version != "True":
            continue
        result = subprocess.run([python, "-c", "import ocular"], cwd=src, capture_output=True, text=True)
        assert result.returncode != 0
        assert "ImportError" in result.stderr and "3.12" in result.stderr
        return
    pytest.fail("no Python older than 3.12 found to check the import error on")


def test_instructions_are_built_on_first_use_and_read_as_a_tuple():
    import pickle
    import threading

    profile, _ = traced(workloads.mixed_no_genexpr, mode="precise")
    deferred = profile.instructions
    assert deferred._records is None  # stop_tracing() did not build them
    got = []
    threads = [threading.Thread(target=lambda: got.append(tuple(deferred))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    whole = deferred._tuple()
    assert len(got) == 4 and all(g == whole for g in got) and len(deferred) == len(whole) > 0
    assert deferred == whole and whole == deferred and deferred[0] is whole[0] and deferred[-2:] == whole[-2:]
    assert [i.cycles for i in deferred] == sorted((i.cycles for i in whole), reverse=True)
    assert hash(deferred) == hash(whole) and () + deferred == whole
    restored = pickle.loads(pickle.dumps(profile))
    assert type(restored.instructions) is tuple and restored == profile
