"""Ocular beside other sys.monitoring and settrace users: coverage.py (both
of its cores), cProfile, two other tools on ids 2 and 3, pdb; and what
Ocular's restart_events() at start and stop does to another tool."""

import cProfile
import json
import os
import pstats
import subprocess
import sys
import textwrap

import pytest

import ocular
import workloads
from conftest import functions_of

HERE = os.path.dirname(os.path.abspath(__file__))

# A pytest plugin (loaded with -p) that runs the whole pytest session under
# Ocular and writes what it saw; used inside `coverage run -m pytest`.
PLUGIN = '''
import json, os, warnings
import ocular

def pytest_configure(config):
    ocular.start_tracing(deinstrument_threshold=0, perfetto=False)

def pytest_unconfigure(config):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = ocular.stop_tracing()
    calls = {f.qualname: f.calls for f in profile.functions if os.path.basename(f.filename) == "shapes.py"}
    with open(os.environ["OCULAR_RESULT"], "w") as out:
        json.dump({"calls": calls, "failure": profile.failure, "lost": profile.lost_frames,
                   "warnings": [str(w.message) for w in caught]}, out)
'''

MODULE = '''
def classify(n):
    if n < 0:
        return "negative"
    if n == 0:
        return "zero"
    if n > 1000:
        return "large"          # never reached by the tests
    return "positive"

def area(kind, size):
    if kind == "square":
        return size * size
    if kind == "circle":        # never reached by the tests
        return 3.14159 * size * size
    raise ValueError(kind)
'''

TESTS = '''
import pytest
from shapes import area, classify

@pytest.mark.parametrize("n, expected", [(-3, "negative"), (0, "zero"), (5, "positive")])
def test_classify(n, expected):
    assert classify(n) == expected

def test_area():
    for size in range(10):
        assert area("square", size) == size * size
    with pytest.raises(ValueError):
        area("hexagon", 1)
'''


def coverage_run(tmp_path, core, with_ocular):
    """`coverage run -m pytest` on a small test file: (total %, Ocular's result or None)."""
    (tmp_path / "shapes.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "test_shapes.py").write_text(textwrap.dedent(TESTS))
    (tmp_path / "ocular_plugin.py").write_text(PLUGIN)
    result_file = tmp_path / f"ocular-{core}.json"
    env = dict(os.environ, COVERAGE_CORE=core, COVERAGE_FILE=str(tmp_path / f".coverage-{core}-{with_ocular}"),
               OCULAR_RESULT=str(result_file), PYTHONPATH=str(tmp_path))
    command = [sys.executable, "-m", "coverage", "run", "--source=shapes", "-m", "pytest", "-q",
               "-p", "no:cacheprovider", "test_shapes.py"]
    if with_ocular:
        command[-1:-1] = ["-p", "ocular_plugin"]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout, run.stdout
    report = subprocess.run([sys.executable, "-m", "coverage", "report", "--format=total", "--precision=2"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    ocular_result = json.loads(result_file.read_text()) if with_ocular else None
    return float(report.stdout.strip()), ocular_result


def test_coverage_reports_the_same_percentage_under_ocular(tmp_path):
    # sysmon: coverage on sys.monitoring tool 1, DISABLEing each line after its
    # first hit; ctrace: coverage on sys.settrace (tool 7 inside CPython).
    alone, _ = coverage_run(tmp_path, "sysmon", with_ocular=False)
    assert 50 < alone < 100  # the two unreached returns are missed
    for core in ("sysmon", "ctrace"):
        together, seen = coverage_run(tmp_path, core, with_ocular=True)
        assert together == alone, core
        assert seen["failure"] is None and seen["warnings"] == [] and seen["lost"] == 0
        # imported once; classify ran 3 times, area 11 times (10 squares, one hexagon)
        assert seen["calls"] == {"<module>": 1, "classify": 3, "area": 11}


def test_with_cprofile_running_ocular_takes_id_3_and_both_count_the_same_calls():
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        ocular.start_tracing(perfetto=False, deinstrument_threshold=0)
        try:
            assert sys.monitoring.get_tool(2) == "cProfile"
            assert sys.monitoring.get_tool(3) == ocular.TOOL_NAME
            workloads.fib(10)
        finally:
            profile = ocular.stop_tracing()
        assert sys.monitoring.get_tool(2) == "cProfile" and sys.monitoring.get_tool(3) is None
    finally:
        profiler.disable()
    stats = pstats.Stats(profiler).stats
    cprofile_calls = next(calls for (filename, _, name), (_, calls, *_) in stats.items()
                          if name == "fib" and filename == workloads.__file__)
    assert cprofile_calls == functions_of(profile, workloads)["fib"].calls == 177


class CountingTool:
    """Another sys.monitoring tool on a given id: counts PY_START of one file,
    optionally returning DISABLE after the first hit of each code object."""

    def __init__(self, tool, name, disable=False):
        self.tool, self.name, self.disable, self.starts = tool, name, disable, {}

    def __enter__(self):
        sys.monitoring.use_tool_id(self.tool, self.name)
        sys.monitoring.register_callback(self.tool, sys.monitoring.events.PY_START, self.on_start)
        sys.monitoring.set_events(self.tool, sys.monitoring.events.PY_START)
        return self

    def on_start(self, code, offset):
        if code.co_filename == workloads.__file__:
            self.starts[code.co_qualname] = self.starts.get(code.co_qualname, 0) + 1
            if self.disable:
                return sys.monitoring.DISABLE
        return None

    def __exit__(self, *exc):
        sys.monitoring.set_events(self.tool, 0)
        sys.monitoring.register_callback(self.tool, sys.monitoring.events.PY_START, None)
        sys.monitoring.free_tool_id(self.tool)


def test_with_ids_2_and_3_held_by_active_tools_ocular_takes_4_and_all_see_every_call():
    with CountingTool(2, "tool-two") as two, CountingTool(3, "tool-three") as three:
        sys.monitoring.restart_events()
        ocular.start_tracing(perfetto=False, deinstrument_threshold=0)
        try:
            assert sys.monitoring.get_tool(4) == ocular.TOOL_NAME
            workloads.fib(10)
        finally:
            profile = ocular.stop_tracing()
        assert two.starts["fib"] == three.starts["fib"] == functions_of(profile, workloads)["fib"].calls == 177
        assert sys.monitoring.get_tool(4) is None
    # All three ids held: RuntimeError naming the holders, in
    # test_api.test_falls_back_to_free_ids_and_names_the_holders.


def test_restart_events_at_start_and_stop_rearms_another_tools_disabled_sites():
    """Documented behaviour: start_tracing() and stop_tracing() each call the
    interpreter-wide restart_events(), so a site another tool DISABLEd fires
    for it once more after each of them (and then that tool DISABLEs it again)."""
    with CountingTool(3, "disabling-tool", disable=True) as other:
        sys.monitoring.restart_events()
        for _ in range(3):
            workloads.fib(1)
        assert other.starts["fib"] == 1  # DISABLEd after its first hit
        for _ in range(3):
            workloads.fib(1)
        assert other.starts["fib"] == 1  # stays disabled on its own
        ocular.start_tracing(perfetto=False, deinstrument_threshold=0)
        try:
            for _ in range(3):
                workloads.fib(1)
            assert other.starts["fib"] == 2  # start's restart_events re-armed it once
        finally:
            profile = ocular.stop_tracing()
        assert functions_of(profile, workloads)["fib"].calls == 3  # Ocular's own view is unaffected
        for _ in range(3):
            workloads.fib(1)
        assert other.starts["fib"] == 3  # and stop's restart_events once more
        for _ in range(3):
            workloads.fib(1)
        assert other.starts["fib"] == 3


PDB_SCRIPT = '''
import sys, pdb
import ocular

def scale(values, factor):
    out = []
    for v in values:
        doubled = v * factor
        out.append(doubled)
    return out

def main():
    total = 0
    for i in range(3):
        total += sum(scale([i, i + 1], 2))
    return total

ocular.start_tracing(deinstrument_threshold=0, perfetto=False)
result = pdb.Pdb(nosigint=True).runcall(main)
profile = ocular.stop_tracing()
calls = {f.qualname: f.calls for f in profile.functions if f.filename == __file__}
print("RESULT", result, calls["main"], calls["scale"], profile.lost_frames, profile.failure, flush=True)
'''


def test_pdb_session_with_breakpoints_while_ocular_traces(tmp_path):
    # bdb uses sys.settrace on 3.12/3.13 (CPython's internal tool 7): both
    # tracers see the same program.
    script = tmp_path / "debugged.py"
    script.write_text(PDB_SCRIPT)
    line = PDB_SCRIPT.splitlines().index("        doubled = v * factor") + 1
    commands = f"b {script}:{line}\nc\np v\nc\np v, factor\nclear 1\nc\n"
    run = subprocess.run([sys.executable, str(script)], input=commands, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "Breakpoint 1 at" in out
    # the first stop shows v == 0 (scale([0, 1], 2)), the second v == 1 and factor 2
    printed = [line.split("(Pdb) ")[-1] for line in out.splitlines() if "(Pdb) " in line]
    assert "0" in printed and "(1, 2)" in printed, out
    assert out.count(f"debugged.py({line})scale()") == 2  # stopped twice at the breakpoint, then ran on
    result = out.split("RESULT ", 1)[1].split()
    # total = sum over i of 2*i + 2*(i+1) = 2 + 6 + 10; main called once, scale 3 times
    assert result == ["18", "1", "3", "0", "None"], out
