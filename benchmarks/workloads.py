"""Benchmark workloads and the runner one configuration executes in a fresh
process:  python workloads.py WORKLOAD CONFIG  ->  prints "seconds events dropped"
(events delivered to Ocular's callbacks; trace events dropped at the buffer
memory bound).

The first three are mixed, realistic programs (the kind cProfile costs
2.6-3.4x on); `loops` is a worst case: a tight loop that delivers an event
every few nanoseconds of real work."""

import json
import re
import sys
import time


def mixed(rounds=60):
    """Parsing, a numeric kernel, recursion, generators, objects, exceptions."""
    sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/examples")
    import demo

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


WORKLOADS = {"mixed": mixed, "stdlib": stdlib, "objects": objects, "loops": loops}


def run(name, config):
    function = WORKLOADS[name]
    events = dropped = 0
    if config == "untraced":
        start = time.perf_counter()
        function()
        elapsed = time.perf_counter() - start
    elif config.startswith("ocular-"):
        import os
        import tempfile

        import ocular

        mode, threshold, *trace = config.split("-")[1:]
        with tempfile.TemporaryDirectory() as directory:
            output = os.path.join(directory, "trace." + trace[0]) if trace else None
            ocular.start_tracing(mode=mode, perfetto=bool(trace), deinstrument_threshold=int(threshold),
                                 output=output or "unused.json")
            start = time.perf_counter()
            function()
            elapsed = time.perf_counter() - start
            profile = ocular.stop_tracing()
            events, dropped = profile.events, profile.dropped_events
    elif config == "cprofile":
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        start = time.perf_counter()
        function()
        elapsed = time.perf_counter() - start
        profiler.disable()
    elif config.startswith("empty-"):
        import empty_callback

        monitoring, events_of = sys.monitoring, sys.monitoring.events
        names = ["INSTRUCTION"] if config == "empty-precise" else ["JUMP", "BRANCH"]
        names += ["PY_START", "PY_RESUME", "PY_THROW", "PY_RETURN", "PY_YIELD", "PY_UNWIND",
                  "RAISE", "RERAISE", "EXCEPTION_HANDLED"]
        callback = empty_callback.make()
        monitoring.use_tool_id(2, "empty")
        for event in names:
            monitoring.register_callback(2, getattr(events_of, event), callback)
        monitoring.set_events(2, sum(getattr(events_of, e) for e in names))
        start = time.perf_counter()
        function()
        elapsed = time.perf_counter() - start
        monitoring.set_events(2, 0)
    else:
        raise SystemExit(f"unknown config {config}")
    print(f"{elapsed:.6f} {events} {dropped}")


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
