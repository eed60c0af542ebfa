"""End-to-end trace export: the engine's records through the writer to a
file, checked with tracecheck (strict JSON, the official Perfetto schema, and
Perfetto's nesting rules)."""

import collections
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

import ocular
import tracecheck
import workloads
from conftest import functions_of, traced

WORKLOADS = workloads.__file__


def workload():
    return workloads.mixed_no_genexpr() + workloads.deep(100)


def function_slices(slices):
    return [s for s in slices if s.end_kind == "E" and "file" in s.args]


def block_slices(slices):
    return [s for s in slices if s.end_kind == "E" and "start_offset" in s.args]


def shape(trace):
    """The slice tree without times: names and nesting per thread track."""
    slices = tracecheck.check_nesting(trace)
    children = collections.defaultdict(list)
    for index, s in enumerate(slices):
        if s.end_kind != "i":
            children[s.parent].append(index)

    def node(index):
        return (slices[index].name, tuple(node(c) for c in children[index]))

    return tuple(node(i) for i in children[None])


def test_json_slices_match_the_profile(tmp_path):
    path = tmp_path / "run.json"
    profile, _ = traced(workload, perfetto=True, output=str(path))
    trace = tracecheck.load_json(path)  # strict
    slices = tracecheck.check_nesting(trace)
    assert trace.pid == os.getpid()
    assert set(trace.thread_names) and threading.get_native_id() in {t[1] for t in trace.thread_names}
    calls = collections.Counter(s.name for s in function_slices(slices))
    for name, stats in functions_of(profile, workloads).items():
        assert calls[name] == stats.calls, name
    # Each block slice is a straight-line segment from its first block to
    # end_offset; the blocks it covers, counted over all slices, are the hits.
    blocks = collections.defaultdict(list)
    for b in profile.blocks:
        if b.filename == WORKLOADS:
            blocks[b.qualname].append(b)
    covered = collections.Counter()
    for s in block_slices(slices):
        qualname = slices[s.parent].name
        for b in blocks.get(qualname, []):
            if s.args["start_offset"] <= b.start_offset <= s.args["end_offset"]:
                covered[(qualname, b.start_offset)] += 1
    expected = {(b.qualname, b.start_offset): b.hits for bs in blocks.values() for b in bs}
    assert {k: covered[k] for k in expected} == expected
    assert profile.trace_events > 0 and profile.dropped_events == 0
    assert tracecheck.max_depth(trace) < tracecheck.MAX_DEPTH
    # The writer's own slice counts are the file's.
    assert profile.trace_block_slices == len(block_slices(slices)) > 0
    assert profile.trace_function_slices == len(function_slices(slices)) > 0


def test_protobuf_decodes_and_has_the_same_slice_tree_as_json(tmp_path):
    shapes = []
    for name in ("run.json", "run.pftrace", "run.json.gz", "run.perfetto-trace.gz"):
        path = tmp_path / name
        profile, _ = traced(workload, perfetto=True, output=str(path))
        trace = tracecheck.load(path)  # proto: official schema, unknown fields fail
        assert profile.trace_events > 0
        shapes.append(shape(trace))
    assert shapes[0] == shapes[1] == shapes[2] == shapes[3]
    assert len(shapes[0]) > 0


def test_threads_get_their_own_named_tracks(tmp_path):
    path = tmp_path / "threads.pftrace"

    def run():
        threads = [threading.Thread(target=workloads.mixed_no_genexpr, name=f"worker-{i}")
                   for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    profile, _ = traced(run, perfetto=True, output=str(path))
    trace = tracecheck.load_pftrace(path)
    slices = tracecheck.check_nesting(trace)
    names = set(trace.thread_names.values())
    assert {f"worker-{i}" for i in range(4)} <= names
    per_track = collections.Counter(s.track for s in function_slices(slices) if s.name == "fib")
    assert len(per_track) == 4 and set(per_track.values()) == {465}


def test_precise_instructions_go_to_a_separate_track(tmp_path):
    path = tmp_path / "precise.json"
    profile, _ = traced(workloads.loops, 30, mode="precise", perfetto=True, output=str(path))
    trace = tracecheck.load_json(path)
    slices = tracecheck.check_nesting(trace)
    tracks = {s.track[0] for s in slices}
    assert "insn" in tracks and "thread" in tracks
    insn = [s for s in slices if s.track[0] == "insn"]
    assert all(s.depth == 0 for s in insn)  # they never deepen the function nesting
    hits = sum(i.hits for i in profile.instructions if i.qualname == "loops" and i.opname != "RESUME")
    assert len(insn) >= hits


def test_deep_recursion_stays_under_perfettos_depth_limit(tmp_path):
    path = tmp_path / "deep.json"
    profile, _ = traced(workloads.deep, 900, perfetto=True, output=str(path))
    trace = tracecheck.load_json(path)
    assert functions_of(profile, workloads)["deep"].calls == 901
    assert tracecheck.max_depth(trace) < tracecheck.MAX_DEPTH


def test_overfull_buffer_drops_and_reports(tmp_path):
    path = tmp_path / "drops.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profile, result = traced(workloads.loops, 400_000, perfetto=True, output=str(path),
                                 max_buffer_mb=1)
    assert result == workloads.loops(400_000)
    assert profile.dropped_events > 0
    trace = tracecheck.load_json(path)
    tracecheck.check_nesting(trace)
    assert trace.dropped() == profile.dropped_events
    assert any("dropped" in (e.name or "") for e in trace.instants())


def test_unwritable_output_raises_oserror_before_hooking(tmp_path):
    bad = tmp_path / "missing-dir" / "trace.json"
    with pytest.raises(OSError) as excinfo:
        ocular.start_tracing(output=str(bad))
    assert str(bad) in str(excinfo.value)
    assert not ocular.is_tracing()
    assert all(sys.monitoring.get_tool(t) != ocular.TOOL_NAME for t in range(6))


def test_write_failure_mid_run_is_reported_and_harmless(tmp_path):
    path = tmp_path / "full.json"
    os.symlink("/dev/full", path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile, result = traced(workloads.loops, 200_000, perfetto=True, output=str(path))
    assert result == workloads.loops(200_000)
    assert profile.trace_error
    assert any("trace" in str(w.message) for w in caught)


def run_script(tmp_path, body, kill_after_bytes=None):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(WORKLOADS)!r})
        import ocular, workloads
        ocular.start_tracing(deinstrument_threshold=0, output={str(tmp_path / 'out.json')!r})
    """) + textwrap.dedent(body))
    process = subprocess.Popen([sys.executable, str(script)])
    if kill_after_bytes is None:
        assert process.wait(timeout=120) == 0
    else:
        out = tmp_path / "out.json"
        deadline = time.time() + 60
        while (not out.exists() or out.stat().st_size < kill_after_bytes) and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    return tmp_path / "out.json"


def test_a_script_that_never_stops_gets_a_complete_file_at_exit(tmp_path):
    path = run_script(tmp_path, "workloads.mixed_no_genexpr()\n")
    trace = tracecheck.load_json(path)  # strict: the array is closed
    slices = tracecheck.check_nesting(trace)  # nothing left open
    assert collections.Counter(s.name for s in function_slices(slices))["fib"] == 465


def test_sigkill_leaves_a_file_a_tolerant_parser_accepts(tmp_path):
    path = run_script(tmp_path, "while True:\n    workloads.mixed_no_genexpr()\n",
                      kill_after_bytes=2_000_000)
    with pytest.raises(tracecheck.TraceError):
        tracecheck.load_json(path)  # not closed: strict parsing refuses it
    trace = tracecheck.load_json(path, tolerant=True)
    slices = tracecheck.check_nesting(trace, allow_open=True)
    assert len(function_slices(slices)) > 100


# The writer thread makes the process multi-threaded; CPython warns about fork.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_tracing_runs_untraced_and_the_parent_finishes(tmp_path):
    path = tmp_path / "fork.json"
    ocular.start_tracing(deinstrument_threshold=0, output=str(path))
    workloads.fib(10)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: untraced, no tool of ours, normal exit with atexit
        ok = not ocular.is_tracing() and sys.monitoring.get_tool(2) is None
        ok = ok and workloads.loops(100) == workloads.loops(100)
        os.write(write_end, b"ok" if ok else b"no")
        os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 2) == b"ok"
    assert os.waitpid(pid, 0)[1] == 0
    workloads.fib(10)
    profile = ocular.stop_tracing()
    assert functions_of(profile, workloads)["fib"].calls == 2 * 177
    trace = tracecheck.load_json(path)
    assert collections.Counter(s.name for s in function_slices(tracecheck.check_nesting(trace)))["fib"] == 354


def test_a_size_budget_keeps_function_slices_to_the_end(tmp_path):
    def loop_heavy():
        for _ in range(40):
            workloads.work(3000)
            workloads.mixed_no_genexpr()

    unbounded, _ = traced(loop_heavy, perfetto=True, output=str(tmp_path / "full.json"))
    assert unbounded.trace_kept is None and unbounded.trace_bytes > 3 << 20
    path = tmp_path / "bounded.json"
    profile, _ = traced(loop_heavy, perfetto=True, output=str(path), max_trace_mb=1)
    size = os.path.getsize(path)
    assert size == profile.trace_bytes
    # the budget is checked per transcribed buffer: it may be passed by one's worth
    assert size < (1 << 20) + (256 << 10)
    assert "function slices" in profile.trace_kept and "left out" in profile.trace_kept
    assert "the trace holds" in profile.report()
    trace = tracecheck.load(path)
    slices = tracecheck.check_nesting(trace)  # still well nested: open slices were closed
    functions, blocks = function_slices(slices), block_slices(slices)
    assert blocks and functions
    # after the blocks stop, the calls go on being written
    assert max(s.ts for s in functions) > max(s.ts for s in blocks)
    assert profile.trace_block_slices < unbounded.trace_block_slices


def test_function_level_trace(tmp_path):
    path = tmp_path / "functions.json"
    profile, _ = traced(workload, perfetto=True, output=str(path), trace_detail="functions")
    slices = tracecheck.check_nesting(tracecheck.load(path))
    assert profile.trace_block_slices == 0 and profile.trace_function_slices > 0
    assert not block_slices(slices)
    calls = collections.Counter(s.name for s in function_slices(slices))
    for name, stats in functions_of(profile, workloads).items():
        assert calls[name] == stats.calls, name


@pytest.mark.parametrize("kwargs, error", [
    ({"max_trace_mb": 0}, ValueError), ({"max_trace_mb": "1"}, TypeError), ({"max_trace_mb": True}, TypeError),
    ({"trace_detail": "lines"}, ValueError),
])
def test_trace_budget_arguments_are_checked(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        ocular.start_tracing(perfetto=True, output="x.pftrace", **kwargs)
    assert not ocular.is_tracing()
