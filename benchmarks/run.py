"""Ocular's benchmarks (not tests): `./dev bench [--quick | --full] [--repeat N] [--workloads a,b]`.

Three sizes: the default (about 15 minutes here: every contender and floor,
seven representative workloads at ~0.4 s, 3 rounds; the README's summary
table, in docs/), --full (about 2 hours: fourteen workloads at ~1.1 s, 5
rounds, in docs/full/) and --quick (a smoke run in under 2 minutes, in
.bench-quick/).

Every measurement runs in a fresh interpreter (contenders.py); in each round
every workload runs under every contender, the contenders' order rotating from
round to round, so that the machine's slow and fast phases fall on all of them
alike; the median of the rounds is kept and only ratios measured in this one
run are reported.

Before the rounds, a probe per workload (untraced, then one cProfile pass)
scales it to --seconds untraced and names its hottest functions for
line_profiler. After them: the trace writer alone (bench_writer.py).

The raw measurements go to OUTPUT/benchmarks.json after every round, and the
report (report.py: OUTPUT/benchmarks.md and .png) is rewritten from them;
`python benchmarks/report.py OUTPUT/benchmarks.json` redoes the report alone.
A progress line follows every workload of every round, with the time spent
and the expected time left (from the first round's times once it is done).
"""

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import contenders  # noqa: E402
import jinja2_suite  # noqa: E402
import pyperformance_workloads  # noqa: E402
import report  # noqa: E402
import workloads  # noqa: E402

PEER_PACKAGES = {"cprofile": None, "viztracer": "viztracer", "yappi": "yappi", "pyinstrument": "pyinstrument",
                 "line_profiler": "line_profiler"}
# Ten of pyperformance's (calls, objects, floats, generators, coroutines, C-heavy
# regexes), then Ocular's own micro workloads. Any other in
# pyperformance_workloads.RECIPES can be named with --workloads.
FULL_WORKLOADS = ["nbody", "richards", "raytrace", "float", "deltablue", "go", "hexiom", "regex_v8", "generators",
                  "coroutines", "mixed", "stdlib", "objects", "loops"]
# The default run's: floats, calls, objects (raytrace), C-heavy regexes,
# generators, coroutines and the densest micro workload.
STANDARD_WORKLOADS = ["nbody", "richards", "raytrace", "regex_v8", "generators", "coroutines", "loops"]
QUICK_WORKLOADS = ["nbody", "richards", "generators", "loops"]
# (workloads, untraced seconds per workload, rounds, output directory) per size.
SIZES = {"quick": (QUICK_WORKLOADS, 0.12, 1, ".bench-quick"), "standard": (STANDARD_WORKLOADS, 0.4, 3, "docs"),
         "full": (FULL_WORKLOADS, 1.1, 5, os.path.join("docs", "full"))}
# Configurations for the two workloads that are not about overhead ratios.
STOP_CONFIGS = ["untraced", "ocular-adaptive-500", "ocular-adaptive-0", "ocular-precise-500", "ocular-precise-0"]
SUITE_CONFIGS = ["untraced", "ocular-adaptive-500", "ocular-adaptive-0", "ocular-adaptive-0-pftrace",
                 "ocular-precise-0", "cprofile"]
QUICK_STOP_CONFIGS = ["untraced", "ocular-adaptive-500"]
QUICK_SUITE_CONFIGS = ["untraced", "ocular-adaptive-500"]
CHILD_TIMEOUT_S = 900


def build_empty_callback(directory):
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = os.path.join(directory, "empty_callback" + suffix)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
                    os.path.join(HERE, "empty_callback.c"), "-o", target], check=True)
    return directory


def child(workload, config, units, env, hot=()):
    """One measurement in a fresh interpreter -> its JSON result, or {"error": ...}."""
    command = [sys.executable, os.path.join(HERE, "contenders.py"), workload, config, str(units)]
    if hot:
        command.append(json.dumps([[filename, line] for filename, line, _ in hot]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT_S} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {(done.stderr or done.stdout)[-1500:]}"}
    return json.loads(lines[-1])


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0],
            "implementation": platform.python_implementation(), "commit": commit,
            "date": datetime.date.today().isoformat()}


def versions():
    found = {"ocular": metadata.version("ocular-profiler"), "pyperformance": pyperformance_workloads.version(),
             "cprofile": f"stdlib (Python {sys.version.split()[0]})"}
    for peer, package in PEER_PACKAGES.items():
        if package:
            found[peer] = metadata.version(package)
    try:
        found["jinja2"] = jinja2_suite.version()
    except metadata.PackageNotFoundError:
        pass
    return found


def scale(workload, seconds, env, quick):
    """Probe the workload: units for `seconds` untraced, and its hot functions."""
    probe_units = workloads.probe_units(workload)
    if workload == "many_codes":
        # Not scaled: the point is the number of code objects, not the time.
        return probe_units, []
    result = child(workload, "probe", probe_units, env)
    if "error" in result:
        raise SystemExit(f"probing {workload} failed: {result['error']}")
    units = max(1, math.ceil(probe_units * seconds / result["seconds"]))
    # A workload with a fixed cost per call (generators builds its tree
    # outside the loop) scales worse than linearly from a short probe: check
    # the scaled run once and correct it from there.
    check = child(workload, "untraced", units, env)
    if "error" not in check and check["seconds"] < 0.95 * seconds:
        units = math.ceil(units * seconds / check["seconds"])
    return units, result["hot"]


def rotated(items, by):
    by %= len(items)
    return items[by:] + items[:by]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick",
                      help="a smoke run: 4 workloads at ~0.12 s, one round, jinja2's test_api.py only")
    size.add_argument("--full", action="store_const", dest="size", const="full",
                      help=f"the 2-hour run: {len(FULL_WORKLOADS)} workloads at ~1.1 s, 5 rounds, into docs/full/")
    parser.add_argument("--repeat", type=int, help="rounds (default 3; 5 with --full, 1 with --quick)")
    parser.add_argument("--seconds", type=float,
                        help="untraced seconds per workload (default 0.4; 1.1 with --full, 0.12 with --quick)")
    parser.add_argument("--workloads", help=f"comma list (default: {','.join(STANDARD_WORKLOADS)}); "
                                            f"known: {','.join(workloads.names())}")
    parser.add_argument("--configs", help=f"comma list (default: all): {','.join(contenders.CONFIGS)}")
    parser.add_argument("--no-suite", dest="suite", action="store_false", help="skip jinja2's tests")
    parser.add_argument("--no-stop", dest="stop", action="store_false", help="skip many_codes")
    parser.add_argument("--no-writer", dest="writer", action="store_false", help="skip the writer benchmark")
    parser.add_argument("--output", help="directory for benchmarks.{json,md,png} (default docs/; docs/full/ with --full, "
                                             ".bench-quick/ with --quick, .bench-subset/ when --workloads, --configs, --repeat "
                             "or --seconds is given)")
    options = parser.parse_args()
    size = options.size or "standard"
    quick = size == "quick"
    default_names, default_seconds, default_repeat, default_output = SIZES[size]
    repeat = options.repeat or default_repeat
    seconds = options.seconds or default_seconds
    names = options.workloads.split(",") if options.workloads else default_names
    for name in names:
        workloads.probe_units(name)  # fails early on an unknown name
    # A subset is a check, not the published figures: it never overwrites docs/.
    subset = bool(options.workloads or options.configs or options.repeat or options.seconds)
    output = options.output or os.path.join(ROOT, ".bench-subset" if subset and not quick else default_output)
    os.makedirs(output, exist_ok=True)
    raw_path = os.path.join(output, "benchmarks.json")
    began = time.monotonic()

    with tempfile.TemporaryDirectory() as directory:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([build_empty_callback(directory), HERE]))
        plan = {name: list(contenders.CONFIGS) for name in names}
        if options.stop:
            plan["many_codes"] = QUICK_STOP_CONFIGS if quick else STOP_CONFIGS
        if options.suite:
            plan["jinja2_tests"] = QUICK_SUITE_CONFIGS if quick else SUITE_CONFIGS
        if options.configs:
            chosen = options.configs.split(",")
            unknown = set(chosen) - set(contenders.CONFIGS)
            if unknown:
                raise SystemExit(f"unknown configs {', '.join(sorted(unknown))}; known: {', '.join(contenders.CONFIGS)}")
            plan = {name: [c for c in configs if c in chosen or c == "untraced"] for name, configs in plan.items()}
        if "jinja2_tests" in plan:
            env["OCULAR_BENCH_JINJA2"] = jinja2_suite.fetch(os.path.join(ROOT, ".bench-cache"))
            if quick:
                env["OCULAR_BENCH_JINJA2_TESTS"] = "tests/test_api.py"
        rdtsc_ns = float(subprocess.run(
            [sys.executable, "-c", "import empty_callback; print(empty_callback.rdtsc_ns())"],
            capture_output=True, text=True, env=env, check=True).stdout)
        raw = {"meta": {**machine(), "quick": quick, "size": size, "repeat": repeat, "seconds": seconds, "rdtsc_ns": rdtsc_ns,
                        "suite_selection": env.get("OCULAR_BENCH_JINJA2_TESTS", "tests")},
               "versions": versions(), "units": {}, "hot": {}, "plan": plan, "measurements": [], "errors": []}
        print(f"probing {len(names)} workloads ...", flush=True)
        for name in plan:
            if name == "jinja2_tests":
                raw["units"][name] = 1
                continue
            raw["units"][name], raw["hot"][name] = scale(name, seconds, env, quick)
        progress = Progress(plan, repeat)
        for round_ in range(repeat):
            round_began = time.monotonic()
            for name, configs in plan.items():
                step_began = time.monotonic()
                # A stride prime to the number of configurations: each round
                # starts elsewhere, so no contender always follows the same one.
                for config in rotated(configs, round_ * 7):
                    hot = raw["hot"].get(name, ()) if config == "line_profiler" else ()
                    result = child(name, config, raw["units"][name], env, hot)
                    result.update(workload=name, config=config, round=round_)
                    if "error" in result:
                        print(f"  {name} {config}: {result['error']}", file=sys.stderr, flush=True)
                        raw["errors"].append(result)
                    else:
                        raw["measurements"].append(result)
                progress.done(round_, name, time.monotonic() - step_began)
                print(f"round {round_ + 1}/{repeat}: {name} done ({len(configs)} contenders, "
                      f"{time.monotonic() - began:.0f} s so far, {progress.left()} left)", flush=True)
            print(f"round {round_ + 1} took {time.monotonic() - round_began:.0f} s", flush=True)
            raw["meta"]["elapsed_s"] = time.monotonic() - began
            save(raw, raw_path)
            report.write(raw, output)
    if options.writer:
        print("the trace writer alone ...", flush=True)
        slices = ["--slices", "1000000", "--repeats", "1"] if quick else ["--repeats", "2"]
        raw["writer"] = subprocess.run([sys.executable, os.path.join(HERE, "bench_writer.py"), *slices],
                                       capture_output=True, text=True, check=True).stdout
    raw["meta"]["elapsed_s"] = time.monotonic() - began
    save(raw, raw_path)
    report.write(raw, output)
    print(f"done in {raw['meta']['elapsed_s']:.0f} s: {output}/benchmarks.md, benchmarks.png, benchmarks.json")
    if raw["errors"]:
        raise SystemExit(f"{len(raw['errors'])} measurements failed (listed in {output}/benchmarks.md)")


class Progress:
    """The expected time left: each remaining (round, workload) step costs
    what it cost in the first round; before the first round has seen a
    workload, its cost is guessed from the mean per contender so far."""

    def __init__(self, plan, repeat):
        self.contenders = {name: len(configs) for name, configs in plan.items()}
        self.steps = [(round_, name) for round_ in range(repeat) for name in plan]
        self.first = {}
        self.finished = 0

    def done(self, round_, name, seconds):
        self.first.setdefault(name, seconds)
        self.finished += 1

    def left(self):
        seen = sum(self.contenders[name] for name in self.first)
        per_contender = sum(self.first.values()) / seen if seen else 0
        seconds = sum(self.first.get(name, per_contender * self.contenders[name])
                      for _, name in self.steps[self.finished:])
        return f"~{seconds / 60:.0f} min" if seconds >= 90 else f"~{seconds:.0f} s"


def save(raw, path):
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        json.dump(raw, file, indent=1)
    os.replace(temporary, path)


if __name__ == "__main__":
    main()
