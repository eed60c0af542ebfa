"""The file exporters (pstats, speedscope, collapsed stacks, pprof), each read
back by a real reader of its format: pstats and gprof2dot, a JSON schema of
speedscope's published format, and pprof's published profile.proto (vendored
here from its Apache-2.0 source, as shipped on PyPI, compiled by
grpcio-tools). Totals are checked against the Profile, call counts and
callers against cProfile."""

import cProfile
import gzip
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import jsonschema
import pytest

import ocular
import workloads
from conftest import code_objects, traced
from ocular import CallStats, FunctionStats, Profile, ThreadStats
from ocular.export import FORMATS, _output, _stacks

WORKLOADS = workloads.__file__
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def mixed():
    return traced(workloads.mixed_no_genexpr)[0]


@pytest.fixture(scope="module")
def threaded():
    def run():
        threads = [threading.Thread(target=workloads.mixed_no_genexpr, name=f"worker-{i}") for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        workloads.loops(300)

    return traced(run)[0]


def quiet_progress():
    return _output.Progress(_output.arguments("test", "x", {"quiet": True})[1], "test", "x")


def check_total(total, threads, to_ns=None):
    """The stacks of `threads` add up to their functions' self cycles; a
    stack whose weight nets below zero (noise) is left out, so with such noise
    in the run they may add up to more, by at most that noise (and the cycle
    per function by which the engine rounds edges apart from functions).
    Without noise the figure is exact (to rounding, in ns)."""
    exact = sum(f.cycles for t in threads for f in t.functions)
    noise = (sum(-min(s.cycles, 0) for t in threads for _, _, s in t.edges)
             + sum(-min(f.cycles, 0) for t in threads for f in t.functions))
    slack = noise + sum(len(t.functions) for t in threads) if noise else 0
    low, high = (exact, exact + slack) if to_ns is None else (to_ns(exact) - 1, to_ns(exact + slack) + 1)
    assert low <= total <= high, (total, exact, noise)


def parse_collapsed(path):
    stacks = {}
    for line in Path(path).read_text().splitlines():
        text, weight = line.rsplit(" ", 1)
        assert text not in stacks  # one line per stack
        stacks[text] = int(weight)
    return stacks


def frame(function):
    return f"{function.__qualname__} ({WORKLOADS}:{function.__code__.co_firstlineno})"


def test_every_format_has_a_profile_method():
    assert {"pstats", "speedscope", "collapsed", "pprof"} <= set(FORMATS)
    for name in FORMATS:
        assert callable(getattr(Profile, f"to_{name}"))


# -- pstats ---------------------------------------------------------------------


def counts_and_callers(stats):
    """{(line, bare name): (primitive calls, calls, {caller line: calls})} for workloads' functions."""
    return {(line, name.rsplit(".", 1)[-1]): (cc, nc, {c[1]: v[0] for c, v in callers.items() if c[0] == WORKLOADS})
            for (filename, line, name), (cc, nc, tt, ct, callers) in stats.items() if filename == WORKLOADS}


def test_pstats_counts_and_callers_equal_cprofile(mixed, tmp_path):
    profiler = cProfile.Profile()
    profiler.enable()
    workloads.mixed_no_genexpr()
    profiler.disable()
    expected = counts_and_callers(pstats.Stats(profiler).stats)

    path = mixed.to_pstats(tmp_path / "mixed.prof")
    loaded = pstats.Stats(path)
    assert counts_and_callers(loaded.stats) == expected
    fib = expected[(workloads.fib.__code__.co_firstlineno, "fib")]
    assert fib[:2] == (1, 465) and fib[2][workloads.fib.__code__.co_firstlineno] == 464
    # Keys carry the qualified name.
    assert (WORKLOADS, workloads.Shape.area.__code__.co_firstlineno, "Shape.area") in loaded.stats


def test_pstats_times_are_the_profiles(mixed, tmp_path):
    path = mixed.to_pstats(tmp_path / "mixed.prof")
    stats = pstats.Stats(path).stats
    def seconds(cycles):
        return pytest.approx(mixed.cycles_to_ns(cycles) / 1e9, rel=1e-12, abs=1e-15)

    def key(function):
        return (function.filename, function.firstlineno, function.qualname)

    by_key = {key(f): f for f in mixed.functions}
    assert set(stats) == set(by_key)
    for name, (cc, nc, tt, ct, callers) in stats.items():
        function = by_key[name]
        assert (nc, tt, ct) == (function.calls, seconds(function.cycles), seconds(function.inclusive_cycles))
        # The callers' entries are the call tree's edges into the function.
        edges = {key(caller): e for caller, e in mixed.callers(function).items() if caller is not None}
        assert callers == {k: (e.calls, e.calls, seconds(e.cycles), seconds(e.inclusive_cycles))
                           for k, e in edges.items()}
    root = stats[(WORKLOADS, workloads.mixed_no_genexpr.__code__.co_firstlineno, "mixed_no_genexpr")]
    assert root[4] == {}  # a root has no caller entry
    # gprof2dot, another reader, draws the call graph from it.
    dot = subprocess.run([sys.executable, "-m", "gprof2dot", "-f", "pstats", "-n", "0", "-e", "0", path],
                         capture_output=True, text=True, check=True).stdout
    assert "fib" in dot and "465×" in dot and "464×" in dot


# -- stacks ---------------------------------------------------------------------


def test_stacks_follow_the_call_tree(mixed, tmp_path):
    """Where every function has one caller the stacks are exact: each is its
    leaf's self time under its only caller, recursion folded into one frame."""
    stacks = parse_collapsed(mixed.to_collapsed(tmp_path / "mixed.txt", unit="cycles"))
    functions = {f.qualname: f for f in mixed.functions}
    edges = {(a and a.qualname, b.qualname): s for a, b, s in mixed.edges}
    def weight(cycles):
        return cycles if cycles > 0 else None  # a stack below zero (noise) is left out

    top = frame(workloads.mixed_no_genexpr)
    assert stacks.get(top) == weight(functions["mixed_no_genexpr"].cycles)
    assert stacks.get(f"{top};{frame(workloads.fib)}") == weight(functions["fib"].cycles)  # fib -> fib too
    assert stacks.get(f"{top};{frame(workloads.loops)}") == weight(functions["loops"].cycles)
    # Shape.__init__ has two callers: each stack is its edge's self time. The
    # larger edge takes the cycle or so by which the engine rounds the edges
    # apart from the function; a stack below zero (noise) is left out.
    init = frame(workloads.Shape.__init__)
    under_of = stacks.get(f"{top};{frame(workloads.Shape.of)};{init}")
    under_unit = stacks.get(f"{top};{frame(workloads.Shape.unit)};{init}")
    from_of = edges[("Shape.of", "Shape.__init__")].cycles
    from_unit = edges[("Shape.unit", "Shape.__init__")].cycles
    assert under_unit == weight(from_unit)
    assert under_of == weight(functions["Shape.__init__"].cycles - from_unit)
    assert under_of is None or abs(under_of - from_of) <= 1
    check_total(sum(stacks.values()), mixed.threads)


def synthetic_profile():
    """A call tree made by hand (1 cycle = 1 ns): A has two callers, P and Q,
    and calls C; R and S call each other; F calls itself; X's time came out
    below zero (noise)."""
    names = {}

    def function(name, calls, self_cycles, inclusive):
        names[name] = FunctionStats("app.py", name, len(names) + 1, calls, self_cycles, inclusive)
        return names[name]

    main = function("main", 1, 10, 300)
    p, q = function("P", 1, 5, 50), function("Q", 1, 5, 60)
    a = function("A", 3, 40, 100)
    c = function("C", 3, 60, 60)
    r, s = function("R", 2, 12, 23), function("S", 1, 11, 11)
    f = function("F", 4, 2, 2)
    x = function("X", 1, -2, -2)
    edges = (
        (None, main, CallStats(1, 10, 300)),
        (main, p, CallStats(1, 5, 50)), (main, q, CallStats(1, 5, 60)),
        # A's self time by caller 30 / 10, its calls 2 / 1, its inclusive 45 / 55:
        # C's time under A divides as A's inclusive does.
        (p, a, CallStats(2, 30, 45)), (q, a, CallStats(1, 10, 55)),
        (a, c, CallStats(3, 60, 60)),
        (main, r, CallStats(1, 5, 23)), (r, s, CallStats(1, 11, 18)), (s, r, CallStats(1, 7, 7)),
        # F's recursive calls came out at -1 (noise): it nets out in F's one stack.
        (main, f, CallStats(1, 3, 2)), (f, f, CallStats(3, -1, -1)),
        (main, x, CallStats(1, -2, -2)),
    )
    thread = ThreadStats(native_id=7, name="main", covered_cycles=1000, functions=tuple(names.values()),
                         edges=edges)
    return Profile(mode="adaptive", deinstrument_threshold=0, tsc_hz=1e9, duration_ns=1000, events=0,
                   disabled_sites=0, functions=tuple(names.values()), threads=(thread,), _edges=edges)


def test_stacks_apportion_by_the_callers_inclusive_time_and_fold_recursion(tmp_path):
    profile = synthetic_profile()
    stacks = parse_collapsed(profile.to_collapsed(tmp_path / "synthetic.txt", unit="cycles"))
    names = {f.qualname: f"{f.qualname} (app.py:{f.firstlineno})" for f in profile.functions}
    main, P, Q, A, C, R, S, F = (names[n] for n in ("main", "P", "Q", "A", "C", "R", "S", "F"))
    assert stacks == {
        main: 10,
        f"{main};{P}": 5, f"{main};{Q}": 5,
        f"{main};{P};{A}": 30, f"{main};{Q};{A}": 10,
        f"{main};{P};{A};{C}": 27, f"{main};{Q};{A};{C}": 33,
        f"{main};{R}": 5 + 7,  # R's time under S goes to the R already on the stack
        f"{main};{R};{S}": 11,
        f"{main};{F}": 3 - 1,
    }
    assert sum(stacks.values()) == sum(f.cycles for f in profile.functions) + 2  # X's -2 left out


# -- speedscope -----------------------------------------------------------------


def check_speedscope(path):
    document = json.loads(Path(path).read_text())
    jsonschema.validate(document, json.loads((HERE / "speedscope_schema.json").read_text()))
    frames = document["shared"]["frames"]
    for profile in document["profiles"]:
        assert len(profile["samples"]) == len(profile["weights"])
        assert all(0 <= i < len(frames) for stack in profile["samples"] for i in stack)
        assert all(isinstance(w, int) and w > 0 for w in profile["weights"])
        assert profile["endValue"] == sum(profile["weights"]) and profile["startValue"] == 0
    return document


def test_speedscope_validates_and_each_thread_adds_up(threaded, tmp_path):
    for lines in (False, True):
        document = check_speedscope(threaded.to_speedscope(tmp_path / f"t{lines}.json", lines=lines))
        by_name = {p["name"]: p for p in document["profiles"]}
        assert len(by_name) == len(threaded.threads) == 3
        for thread in threaded.threads:
            profile = by_name[f"{thread.name} (thread {thread.native_id})"]
            check_total(sum(profile["weights"]), [thread], threaded.cycles_to_ns)
        assert {"worker-0", "worker-1", "MainThread"} == {p["name"].split(" (")[0] for p in document["profiles"]}


def test_speedscope_schema_check_can_fail(mixed, tmp_path):
    document = json.loads(Path(mixed.to_speedscope(tmp_path / "m.json")).read_text())
    del document["profiles"][0]["weights"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, json.loads((HERE / "speedscope_schema.json").read_text()))


# -- collapsed ------------------------------------------------------------------


def test_collapsed_totals_equal_the_profiles(threaded, tmp_path):
    cycles = parse_collapsed(threaded.to_collapsed(tmp_path / "c.txt", unit="cycles"))
    check_total(sum(cycles.values()), threaded.threads)
    ns = parse_collapsed(threaded.to_collapsed(tmp_path / "n.txt"))
    assert abs(sum(ns.values()) - threaded.cycles_to_ns(sum(cycles.values()))) <= 1
    assert set(ns) == set(cycles)  # threads merged: one line per distinct stack
    assert all(weight > 0 for weight in ns.values())


def test_collapsed_lines_go_down_to_lines_that_ran(mixed, tmp_path):
    """lines=True splits each stack's leaf over lines of its own code, and
    the parts add up to the stack."""
    plain = parse_collapsed(mixed.to_collapsed(tmp_path / "f.txt", unit="cycles"))
    split = parse_collapsed(mixed.to_collapsed(tmp_path / "l.txt", lines=True, unit="cycles"))
    check_total(sum(split.values()), mixed.threads)
    codes = code_objects(workloads)
    regrouped, parts, lines_of = defaultdict(int), defaultdict(int), defaultdict(set)
    for text, weight in split.items():
        *callers, leaf = text.split(";")
        qualname, where = leaf[:-1].split(" (")
        line = int(where.rsplit(":", 1)[1])
        # The leaf's line is one of its code object's own lines (dis' line table).
        assert line in {n for _, _, n in codes[qualname].co_lines() if n}, leaf
        stack = ";".join([*callers, f"{qualname} ({WORKLOADS}:{codes[qualname].co_firstlineno})"])
        regrouped[stack] += weight
        parts[stack] += 1
        lines_of[qualname].add(line)
    assert set(regrouped) <= set(plain)
    for stack, weight in plain.items():  # each part rounded to a whole cycle
        assert abs(regrouped.get(stack, 0) - weight) <= parts[stack] + 1
    assert len(lines_of["loops"]) > 3  # really split over lines


# -- pprof ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pprof_schema(tmp_path_factory):
    """perftools.profiles.Profile, compiled from the vendored profile.proto."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("proto") / "profile.desc"
    assert protoc.main(["protoc", f"-I{HERE}", f"--descriptor_set_out={out}", str(HERE / "profile.proto")]) == 0
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("perftools.profiles.Profile"))


def decode_pprof(schema, path):
    message = schema.FromString(gzip.decompress(Path(path).read_bytes()))
    strings = list(message.string_table)
    assert strings[0] == ""
    functions = {f.id: f for f in message.function}
    locations = {}
    for location in message.location:
        assert len(location.line) == 1 and location.line[0].function_id in functions
        locations[location.id] = location.line[0]
    samples = []
    for sample in message.sample:
        assert len(sample.value) == len(message.sample_type) == 2
        stack = [(strings[functions[locations[i].function_id].name], locations[i].line) for i in sample.location_id]
        labels = {strings[label.key]: strings[label.str] if label.str else label.num for label in sample.label}
        samples.append((stack, tuple(sample.value), labels))
    return message, strings, functions, samples


def test_pprof_decodes_with_the_official_schema_and_adds_up(threaded, pprof_schema, tmp_path):
    for lines in (False, True):
        message, strings, functions, samples = decode_pprof(
            pprof_schema, threaded.to_pprof(tmp_path / f"p{lines}.pb.gz", lines=lines))
        assert [(strings[t.type], strings[t.unit]) for t in message.sample_type] == [
            ("cycles", "count"), ("wall", "nanoseconds")]
        assert strings[message.default_sample_type] == "wall"
        assert (strings[message.period_type.type], strings[message.period_type.unit]) == ("wall", "nanoseconds")
        assert message.period == 1 and message.duration_nanos == threaded.duration_ns and message.time_nanos > 0
        # Functions with their file and first line: those of the profile that are on a stack
        # with weight (a stack netting zero or below, noise of a recursive leaf, is left out).
        weighed = {(filename, qualname, first) for _, stacks in _stacks.stacks(threaded, quiet_progress(), lines)
                   for stack, weight in stacks if weight > 0 for filename, qualname, first, _ in stack}
        assert {(strings[f.name], strings[f.filename], f.start_line) for f in functions.values()} == {
            (f.qualname, f.filename, f.firstlineno) for f in threaded.functions
            if (f.filename, f.qualname, f.firstlineno) in weighed}
        # and only noise is left out: a function absent has no more self time than its uncertainty
        assert all(f.cycles <= f.uncertainty for f in threaded.functions
                   if (f.filename, f.qualname, f.firstlineno) not in weighed)
        for thread in threaded.threads:
            mine = [s for s in samples if s[2]["thread_id"] == thread.native_id]
            check_total(sum(s[1][0] for s in mine), [thread])
            assert abs(sum(s[1][1] for s in mine) - threaded.cycles_to_ns(sum(s[1][0] for s in mine))) <= 1
            assert all(s[2]["thread"] == f"{thread.name} (thread {thread.native_id})" for s in mine)
    # The leaf first; without lines a frame's line is its function's first line.
    _, _, _, samples = decode_pprof(pprof_schema, threaded.to_pprof(tmp_path / "p.pb.gz"))
    fib = [stack for stack, _, _ in samples if stack[0][0] == "fib"]
    assert fib and all(stack[:2] == [("fib", workloads.fib.__code__.co_firstlineno),
                             ("mixed_no_genexpr", workloads.mixed_no_genexpr.__code__.co_firstlineno)]
               for stack in fib)


@pytest.mark.skipif(shutil.which("go") is None,
                    reason="go tool pprof not installed (Debian: apt-get install golang-go); "
                           "the file is checked against profile.proto above")
def test_go_tool_pprof_reads_it(threaded, tmp_path):
    path = threaded.to_pprof(tmp_path / "p.pb.gz")
    top = subprocess.run(["go", "tool", "pprof", "-top", "-nodefraction=0", "-sample_index=cycles", path], capture_output=True,
                         text=True, check=True, env={**os.environ, "HOME": str(tmp_path)}).stdout
    total = int(re.search(r"Total samples = (\d+)", top).group(1))
    check_total(total, threaded.threads)
    assert re.search(r"\bfib\n", top)


# -- arguments, errors, progress -------------------------------------------------


@pytest.mark.parametrize("name", ["pstats", "speedscope", "collapsed", "pprof", "html"])
def test_bad_arguments_name_themselves(mixed, tmp_path, name):
    method = getattr(mixed, f"to_{name}")
    path = tmp_path / "out"
    with pytest.raises(TypeError, match="path"):
        method(42)
    with pytest.raises(TypeError, match="'colour'.*valid options: .*quiet"):
        method(path, colour=True)
    with pytest.raises(TypeError, match="quiet must be True or False"):
        method(path, quiet="yes")
    with pytest.raises(TypeError, match="progress"):
        method(path, progress=3)
    if name not in ("pstats", "html"):
        with pytest.raises(TypeError, match="lines must be True or False"):
            method(path, lines=1)
    assert not path.exists()  # nothing written for a bad call
    heard = []
    assert method(path, quiet=True, progress=heard.append) == str(path) and path.stat().st_size > 0
    assert heard == []  # every format takes quiet (the CLI passes --quiet on) and says nothing
    with pytest.raises(OSError) as raised:
        method(tmp_path / "no-such-directory" / "out")
    assert raised.value.filename == str(tmp_path / "no-such-directory" / "out")
    assert str(tmp_path / "no-such-directory" / "out") in str(raised.value)
    with pytest.raises(OSError) as raised:
        method(tmp_path)  # a directory
    assert raised.value.filename == str(tmp_path)


def test_unknown_format_and_unit(mixed, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'svg'.*pprof.*pstats"):
        mixed.export("svg", tmp_path / "x")
    with pytest.raises(ValueError, match="unit must be one of 'ns', 'cycles', not 'hours'"):
        mixed.to_collapsed(tmp_path / "x", unit="hours")
    assert not (tmp_path / "x").exists()


def test_a_failed_export_leaves_no_file(mixed, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("stack reconstruction failed")

    monkeypatch.setattr(ocular.export._stacks, "stacks", broken)
    with pytest.raises(RuntimeError):
        mixed.to_speedscope(tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("name", ["pstats", "speedscope", "collapsed", "pprof"])
def test_progress_on_stderr_only_for_slow_exports(threaded, tmp_path, capsys, monkeypatch, name):
    path = str(tmp_path / "out")
    getattr(threaded, f"to_{name}")(path)
    assert capsys.readouterr().err == ""  # fast: silent

    now = [0.0]

    def clock():
        now[0] += 0.7
        return now[0]

    monkeypatch.setattr(_output, "clock", clock)
    getattr(threaded, f"to_{name}")(path)
    err = capsys.readouterr().err.splitlines()
    assert err and all(line.startswith(f"ocular: {name} export to {path}: ") for line in err)
    assert err[-1].split(": ", 2)[2].startswith("done")
    assert len(err) >= 2  # a progress line before the closing one

    getattr(threaded, f"to_{name}")(path, quiet=True)
    assert capsys.readouterr().err == ""
    received = []
    getattr(threaded, f"to_{name}")(path, progress=received.append)
    assert capsys.readouterr().err == "" and received and received[-1].startswith(f"ocular: {name}")
