"""Benchmark workloads: Ocular's own micro workloads, the pyperformance ones
(pyperformance_workloads.py) and `many_codes`, under one registry:
prepare(name, units) -> run().

The first three micro workloads are mixed, realistic programs (the kind
cProfile costs 2.6-3.4x on); `loops` is a worst case: a tight loop that
delivers an event every few nanoseconds of real work. `many_codes` is not
timed for overhead: it touches 10 000 code objects once each, which is what
makes stop_tracing() slow."""

import functools
import json
import os
import re
import sys

import pyperformance_workloads

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import demo  # noqa: E402  (examples/demo.py, for `mixed`)


def mixed(rounds=60):
    """Parsing, a numeric kernel, recursion, generators, objects, exceptions."""
    total = 0
    for _ in range(rounds):
        text = json.dumps({"items": [{"name": f"item {i}", "tags": ["a", str(i)]} for i in range(800)]})
        total += len(demo.word_counts(demo.tokenize(text)))
        total += sum(map(sum, [demo.mandelbrot_row(y, 64) for y in range(64)]))
        total += demo.fib(19) + sum(demo.squares(30000))
        total += demo.bank(30000)[1]
    return total


def stdlib(rounds=200):
    """Library-heavy code: json, re, str formatting, sorting, dict work."""
    pattern = re.compile(r"(\w+)=(\d+)")
    total = 0
    for r in range(rounds):
        records = [{"id": i, "name": f"n{i}", "score": (i * 37) % 101} for i in range(3000)]
        decoded = json.loads(json.dumps(records))
        decoded.sort(key=lambda rec: (rec["score"], rec["name"]))
        line = " ".join(f"k{i}={i * r}" for i in range(500))
        total += sum(int(v) for _, v in pattern.findall(line))
        groups = {}
        for rec in decoded:
            groups.setdefault(rec["score"] % 10, []).append(rec["id"])
        total += sum(len(v) for v in groups.values())
    return total


def objects(n=2_700_000):
    class Vector:
        __slots__ = ("x", "y")

        def __init__(self, x, y):
            self.x = x
            self.y = y

        def add(self, other):
            return Vector(self.x + other.x, self.y + other.y)

        def norm1(self):
            return abs(self.x) + abs(self.y)

    acc = Vector(0, 0)
    best = 0
    for i in range(n):
        acc = acc.add(Vector(i % 17, -(i % 13)))
        if i % 1000 == 0:
            best = max(best, acc.norm1())
    return acc.x + best


def loops(n=23_000_000):
    total = 0
    for i in range(n):
        if i % 3:
            total += i
        else:
            total -= 1
    return total


def _leaf(x):
    return x + 1


def _middle(x):
    return _leaf(x) + _leaf(x)


def _numbers(n):
    for i in range(n):
        yield i


def calls(n=2_000_000):
    """The call path alone, for callgrind (./dev callgrind --workloads calls):
    per iteration 3 calls and returns, a generator's resumption and yield, and
    6 edges (14 events at adaptive threshold 0)."""
    total = 0
    for i in range(n):
        total += _middle(i)
    for value in _numbers(n):
        total += value
    return total


WORKLOADS = {"mixed": mixed, "stdlib": stdlib, "objects": objects, "loops": loops, "calls": calls}
# Units of a short probe run (run.py scales each workload from it).
MICRO_PROBES = {"mixed": 6, "stdlib": 20, "objects": 270_000, "loops": 2_300_000, "calls": 200_000}

MANY_CODES = 10_000


def many_codes_source(count):
    """`count` small functions, each with a loop and a branch (a few blocks)."""
    return "\n".join(
        f"def f{i}(n):\n    total = {i}\n    for k in range(n):\n"
        f"        if k % 2:\n            total += k\n    return total\n"
        for i in range(count))


def prepare_many_codes(count):
    # Compiled here, before the run (compiling is C work nobody traces); the
    # run creates the functions and calls each once: count + 1 code objects.
    code = compile(many_codes_source(count), "<many_codes>", "exec")

    def run():
        namespace = {}
        exec(code, namespace)
        for i in range(count):
            namespace[f"f{i}"](3)
    return run


def names():
    """Every workload, micro ones last (they are Ocular's own)."""
    return [*pyperformance_workloads.RECIPES, *WORKLOADS, "many_codes"]


def probe_units(name):
    """Units of a short run, which run.py times to scale the workload."""
    if name in WORKLOADS:
        return MICRO_PROBES[name]
    if name == "many_codes":
        return MANY_CODES
    if name in pyperformance_workloads.RECIPES:
        return pyperformance_workloads.RECIPES[name][1]
    raise SystemExit(f"unknown workload {name!r}; known: {', '.join(names())}")


def prepare(name, units):
    """-> run(): the workload at `units`, its inputs built and modules imported."""
    probe_units(name)  # validates the name
    if name == "many_codes":
        return prepare_many_codes(units)
    if name in WORKLOADS:
        function = WORKLOADS[name]
    else:
        function = pyperformance_workloads.RECIPES[name][0]()
    return functools.partial(function, units)  # no Python frame of the harness's own
