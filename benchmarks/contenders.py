"""One measurement, in a fresh process (run.py starts one per measurement):

    python contenders.py WORKLOAD CONFIG UNITS [HOT_JSON]

runs the workload once under CONFIG and prints one JSON object: the run's
seconds (the workload alone, between the profiler's start and stop), the peak
RSS of the process (ru_maxrss, after the profiler stopped), and per contender
what it reports: Ocular's delivered events, stop_tracing() seconds and trace
size; the timed floor's own event count.

CONFIG is one of CONFIGS below. HOT_JSON (line_profiler only) lists the
functions to profile as [[filename, firstlineno], ...]. The special config
`probe` times the workload untraced and then names its hottest functions by
a cProfile pass, for run.py's scaling and line_profiler's choice.
"""

import gc
import json
import os
import resource
import sys
import tempfile
import time
import types

OCULAR = [f"ocular-{mode}-{threshold}{trace}" for mode in ("adaptive", "precise")
          for threshold in (500, 0) for trace in ("", "-pftrace")]
FLOORS = ["floor-adaptive", "floor-precise", "timed-floor-adaptive", "timed-floor-precise"]
PEERS = ["cprofile", "viztracer", "yappi", "pyinstrument", "line_profiler"]
CONFIGS = ["untraced", *OCULAR, *FLOORS, *PEERS]
HOT_FUNCTIONS = 3


def timed(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def run_ocular(run, config, result):
    import ocular

    if os.environ.get("OCULAR_BENCH_NO_REFRESH"):
        # callgrind.py: recalibrations run on a wall-clock timer, and under
        # valgrind a run lasts 50 times longer, so their work would grow with
        # the run and read as a cost per event
        from ocular import _calibration

        _calibration.Calibrator.refreshes = False

    mode, threshold, *trace = config.split("-")[1:]
    with tempfile.TemporaryDirectory() as directory:
        output = os.path.join(directory, "trace.pftrace")
        ocular.start_tracing(mode=mode, perfetto=bool(trace), deinstrument_threshold=int(threshold),
                             output=output)
        result["seconds"] = timed(run)
        began = time.perf_counter()
        profile = ocular.stop_tracing()
        result["stop_seconds"] = time.perf_counter() - began
        result["events"] = profile.events
        result["dropped"] = profile.dropped_events
        result["functions"] = len(profile.functions)
        if trace:
            result["trace_bytes"] = os.path.getsize(output)
            result["trace_events"] = profile.trace_events
            result["trace_block_slices"] = profile.trace_block_slices
            result["trace_function_slices"] = profile.trace_function_slices


def floor_events(mode):
    """The events Ocular enables at threshold 0 in this mode, read from the engine."""
    from ocular import _engine

    return sorted(_engine.callbacks(_engine.MODE_PRECISE if mode == "precise" else _engine.MODE_ADAPTIVE))


def run_floor(run, config, result):
    import empty_callback

    timed_floor = config.startswith("timed-")
    monitoring = sys.monitoring
    names = floor_events(config.rsplit("-", 1)[1])
    callback = empty_callback.make_timed() if timed_floor else empty_callback.make()
    tool = 2
    monitoring.use_tool_id(tool, "floor")
    for name in names:
        monitoring.register_callback(tool, getattr(monitoring.events, name), callback)
    monitoring.set_events(tool, sum(getattr(monitoring.events, name) for name in names))
    result["seconds"] = timed(run)
    monitoring.set_events(tool, 0)
    if timed_floor:
        result["events"] = callback.calls


def attachable_functions():
    """(filename, firstlineno) -> a function object whose code that is, for
    every function alive now (line_profiler attaches to function objects: a
    function created later, inside a call, cannot be chosen)."""
    found = {}
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType):
            code = obj.__code__
            found.setdefault((code.co_filename, code.co_firstlineno), obj)
    return found


def run_line_profiler(run, hot, result):
    import line_profiler

    functions = attachable_functions()
    profiler = line_profiler.LineProfiler()
    attached = []
    for filename, line in hot:
        function = functions.get((filename, line))
        if function is not None:
            profiler.add_function(function)
            attached.append(function.__qualname__)
    result["hot"] = attached
    profiler.enable_by_count()
    try:
        result["seconds"] = timed(run)
    finally:
        profiler.disable_by_count()


def run_peer(run, config, hot, result):
    if config == "cprofile":
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        result["seconds"] = timed(run)
        profiler.disable()
    elif config == "viztracer":
        from viztracer import VizTracer

        # Defaults (a ring of 1 M entries); the trace is not saved, as no
        # other contender's output is timed either.
        tracer = VizTracer(verbose=0)
        tracer.start()
        result["seconds"] = timed(run)
        tracer.stop()
        tracer.clear()
    elif config == "yappi":
        import yappi

        yappi.set_clock_type("wall")
        yappi.start()
        result["seconds"] = timed(run)
        yappi.stop()
    elif config == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler()  # default 1 ms sampling interval
        profiler.start()
        result["seconds"] = timed(run)
        profiler.stop()
    elif config == "line_profiler":
        run_line_profiler(run, hot, result)


def probe(run, result, own_files):
    """Untraced time, then the hottest attachable functions by cProfile's tottime."""
    import cProfile
    import pstats

    # Before any run: what line_profiler's own process will find at its start.
    attachable = set(attachable_functions())
    run()  # warm: imports, caches, specialisation
    result["seconds"] = timed(run)
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    ranked = sorted(stats.items(), key=lambda item: -item[1][2])  # (cc, nc, tottime, cumtime, callers)
    hot = []
    for (filename, line, name), _ in ranked:
        if (filename, line) in attachable and filename not in own_files:
            hot.append([filename, line, name])
        if len(hot) == HOT_FUNCTIONS:
            break
    result["hot"] = hot


def main():
    workload, config, units = sys.argv[1], sys.argv[2], int(sys.argv[3])
    hot = json.loads(sys.argv[4]) if len(sys.argv) > 4 else []
    if config not in CONFIGS and config != "probe":
        raise SystemExit(f"unknown config {config!r}; known: probe, {', '.join(CONFIGS)}")
    if workload == "jinja2_tests":
        import jinja2_suite

        run = jinja2_suite.prepare(os.environ["OCULAR_BENCH_JINJA2"], os.environ.get("OCULAR_BENCH_JINJA2_TESTS"))
    else:
        import workloads

        run = workloads.prepare(workload, units)
    result = {}
    if config == "probe":
        here = os.path.dirname(os.path.abspath(__file__))
        probe(run, result, {os.path.join(here, f) for f in ("contenders.py", "pyperformance_workloads.py")})
    elif config == "untraced":
        result["seconds"] = timed(run)
    elif config.startswith("ocular-"):
        run_ocular(run, config, result)
    elif "floor-" in config:
        run_floor(run, config, result)
    else:
        run_peer(run, config, hot, result)
    result["rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
