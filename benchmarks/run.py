"""Ocular's benchmarks (not tests): `./dev bench [--quick] [--repeat N] [--workloads a,b]`.

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
OUTPUT is docs/ for a full run, .bench-quick/ for --quick.
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
QUICK_WORKLOADS = ["nbody", "richards", "generators", "loops"]
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
    found = {"ocular": metadata.version("ocular"), "pyperformance": pyperformance_workloads.version(),
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
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 4 workloads at ~0.12 s, one round, jinja2's test_api.py only")
    parser.add_argument("--repeat", type=int, help="rounds (default 5; 1 with --quick)")
    parser.add_argument("--seconds", type=float, help="untraced seconds per workload (default 1.1; 0.12 quick)")
    parser.add_argument("--workloads", help=f"comma list (default: {','.join(FULL_WORKLOADS)}); "
                                            f"known: {','.join(workloads.names())}")
    parser.add_argument("--configs", help=f"comma list (default: all): {','.join(contenders.CONFIGS)}")
    parser.add_argument("--no-suite", dest="suite", action="store_false", help="skip jinja2's tests")
    parser.add_argument("--no-stop", dest="stop", action="store_false", help="skip many_codes")
    parser.add_argument("--no-writer", dest="writer", action="store_false", help="skip the writer benchmark")
    parser.add_argument("--output", help="directory for benchmarks.{json,md,png} (default docs/; .bench-quick/)")
    options = parser.parse_args()
    quick = options.quick
    repeat = options.repeat or (1 if quick else 5)
    seconds = options.seconds or (0.12 if quick else 1.1)
    names = options.workloads.split(",") if options.workloads else (QUICK_WORKLOADS if quick else FULL_WORKLOADS)
    for name in names:
        workloads.probe_units(name)  # fails early on an unknown name
    output = options.output or os.path.join(ROOT, ".bench-quick" if quick else "docs")
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
        raw = {"meta": {**machine(), "quick": quick, "repeat": repeat, "seconds": seconds, "rdtsc_ns": rdtsc_ns,
                        "suite_selection": env.get("OCULAR_BENCH_JINJA2_TESTS", "tests")},
               "versions": versions(), "units": {}, "hot": {}, "plan": plan, "measurements": [], "errors": []}
        print(f"probing {len(names)} workloads ...", flush=True)
        for name in plan:
            if name == "jinja2_tests":
                raw["units"][name] = 1
                continue
            raw["units"][name], raw["hot"][name] = scale(name, seconds, env, quick)
        for round_ in range(repeat):
            round_began = time.monotonic()
            for name, configs in plan.items():
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
                print(f"round {round_ + 1}/{repeat}: {name} done ({time.monotonic() - began:.0f} s)", flush=True)
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


def save(raw, path):
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        json.dump(raw, file, indent=1)
    os.replace(temporary, path)


if __name__ == "__main__":
    main()
