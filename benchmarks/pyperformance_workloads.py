"""Workloads from pyperformance, loaded from the installed package.

pyperformance ships each benchmark's source as
pyperformance/data-files/benchmarks/bm_NAME/run_benchmark.py. Ocular's
repository holds none of that code: this module finds the installed files,
imports them as ordinary modules (their `if __name__ == "__main__"` block,
which builds pyperf's runner, does not run) and calls the function the runner
would have timed, with the arguments the runner block would have passed.

Each recipe returns `run(units)`: `units` is the runner's loop count (for
benchmarks timed with bench_time_func) or the number of calls of the timed
function (bench_func). run.py scales `units` so that each workload takes at
least about a second untraced.
"""

import argparse
import importlib.util
import os
import sys
from importlib import metadata, resources


def benchmarks_dir():
    try:
        root = resources.files("pyperformance") / "data-files" / "benchmarks"
    except ModuleNotFoundError:
        raise SystemExit("pyperformance is not installed: run the benchmarks with ./dev bench") from None
    path = os.fspath(root)
    if not os.path.isdir(path):
        raise SystemExit(f"pyperformance {metadata.version('pyperformance')} has no benchmark sources at {path}")
    return path


def load(name):
    """Import bm_NAME/run_benchmark.py as the module bm_NAME (once)."""
    module_name = f"bm_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    directory = os.path.join(benchmarks_dir(), module_name)
    path = os.path.join(directory, "run_benchmark.py")
    if not os.path.exists(path):
        raise SystemExit(f"pyperformance has no benchmark {name!r} ({path} is missing)")
    sys.path.insert(0, directory)  # some benchmarks import data files beside them
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def timed_loops(function, *args):
    """A bench_time_func benchmark: function(loops, *args) runs `loops` times."""
    return lambda units: function(units, *args)


def repeated(function, *args):
    """A bench_func benchmark: one call is one sample."""

    def run(units):
        for _ in range(units):
            function(*args)

    return run


class _Capture:
    """Stands in for pyperf's runner where a benchmark builds its inputs inside
    the function that would hand them to the runner: it only records what
    would have been timed."""

    def __init__(self):
        self.metadata = {}
        self.call = None

    def bench_func(self, name, function, *args):
        self.call = (function, args)


def _chaos():
    module = load("chaos")
    capture = _Capture()
    module.main(capture, argparse.Namespace(
        thickness=module.DEFAULT_THICKNESS, width=module.DEFAULT_WIDTH, height=module.DEFAULT_HEIGHT,
        iterations=module.DEFAULT_ITERATIONS, filename=None, rng_seed=module.DEFAULT_RNG_SEED))
    return repeated(capture.call[0], *capture.call[1])


def _json_dumps():
    module = load("json_dumps")
    # What the runner block builds from the default cases.
    data = [(getattr(module, case)[0], range(getattr(module, case)[1])) for case in module.CASES]
    return repeated(module.bench_json_dumps, data)


def _richards():
    module = load("richards")
    return repeated(module.Richards().run, 1)


# name -> (recipe returning run(units), units for a short probe). The probe
# is what run.py times to scale a workload to its target duration.
RECIPES = {
    "nbody": (lambda: timed_loops((m := load("nbody")).bench_nbody, m.DEFAULT_REFERENCE, m.DEFAULT_ITERATIONS), 1),
    "richards": (_richards, 2),
    "raytrace": (lambda: timed_loops((m := load("raytrace")).bench_raytrace, m.DEFAULT_WIDTH,
                                     m.DEFAULT_HEIGHT, None), 1),
    "chaos": (_chaos, 1),
    "fannkuch": (lambda: repeated((m := load("fannkuch")).fannkuch, m.DEFAULT_ARG), 1),
    "float": (lambda: repeated((m := load("float")).benchmark, m.POINTS), 1),
    "spectral_norm": (lambda: timed_loops(load("spectral_norm").bench_spectral_norm), 1),
    "deltablue": (lambda: repeated(load("deltablue").delta_blue, 100), 2),
    "go": (lambda: repeated(load("go").versus_cpu), 1),
    "hexiom": (lambda: timed_loops((m := load("hexiom")).main, m.DEFAULT_LEVEL), 2),
    "json_dumps": (_json_dumps, 2),
    "regex_v8": (lambda: timed_loops(load("regex_v8").bench_regex_v8), 2),
    "generators": (lambda: timed_loops(load("generators").bench_generators), 2),
    "coroutines": (lambda: timed_loops(load("coroutines").bench_coroutines), 1),
    "nqueens": (lambda: repeated(load("nqueens").bench_n_queens, 8), 1),
}


def version():
    return metadata.version("pyperformance")
