"""Where a traced run's time goes, by `perf record` (not a test):

    ./dev why [--workloads raytrace,generators] [--configs ocular-adaptive-0,floor-adaptive]

Each (workload, config) runs once in a fresh interpreter (contenders.py, the
benchmark's own measurement, at the units of docs/benchmarks.json) under
`perf record` (its seconds are perf's run: slower than the benchmark's by
perf's sampling), and the samples of the measuring process are split by where
they fell: Ocular's engine (by C function), CPython's sys.monitoring
machinery (the functions that find and call a tool's callback), the rest of
the interpreter, the kernel. Set side by side with the floor (the same events
delivered to an empty C callback), the split says which part of Ocular's
overhead is its own work and which is the price of the events themselves.
The findings written up in docs/benchmarks.md ("Why") come from this run
(`benchmarks/why.md` holds that text).
"""

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run as bench  # noqa: E402

DEFAULT_WORKLOADS = ["raytrace", "generators", "nbody"]
DEFAULT_CONFIGS = ["untraced", "floor-adaptive", "ocular-adaptive-0", "ocular-adaptive-0-pftrace",
                   "floor-precise", "ocular-precise-0"]
# CPython's functions that deliver a sys.monitoring event to the tool's
# callback (Python/instrumentation.c, and the vectorcall into a C function).
MONITORING = re.compile(r"instrument|call_one_instrument|_PyEval_Monitor|monitoring|_PyObject_Vectorcall"
                        r"|cfunction_vectorcall|PyVectorcall")
TOP = 8


def perf_split(command, env, directory):
    """(the measurement's JSON, {'engine': {symbol: share}, 'monitoring': share, 'python': share,
    'kernel': share, 'other': share}) of `command` run under perf record (its samples from all
    of its threads: the trace writer's are Ocular's too)."""
    data = os.path.join(directory, "perf.data")
    record = subprocess.run(["perf", "record", "-q", "-F", "4999", "-o", data, "--", *command],
                            capture_output=True, text=True, env=env)
    lines = record.stdout.strip().splitlines()
    if record.returncode != 0 or not lines:
        raise SystemExit(f"perf record failed: {record.stderr[-800:]}")
    report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol",
                             "--percent-limit", "0"], capture_output=True, text=True)
    split = {"engine": collections.Counter(), "monitoring": 0.0, "python": 0.0, "kernel": 0.0, "other": 0.0}
    for line in report.stdout.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not match:
            continue
        share, dso, kind = float(match[1]), match[2], match[3]
        symbol = re.sub(r"(\s+-)+\s*$", "", match[4]).strip()  # perf's empty srcline columns
        if kind == "k":
            split["kernel"] += share
        elif dso.startswith("_engine"):
            split["engine"][symbol] += share
        elif "python" in dso or dso.startswith("libpython"):
            split["monitoring" if MONITORING.search(symbol) else "python"] += share
        else:
            split["other"] += share
    return json.loads(lines[-1]), split


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS))
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    options = parser.parse_args()
    if not shutil.which("perf"):
        raise SystemExit("perf is not installed (Debian: apt-get install linux-perf)")
    with open(os.path.join(os.path.dirname(HERE), "docs", "benchmarks.json")) as f:
        units = json.load(f)["units"]
    with tempfile.TemporaryDirectory() as directory:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([bench.build_empty_callback(directory), HERE]))
        for workload in options.workloads.split(","):
            print(f"\n## {workload} ({units[workload]} units)\n")
            print("| config | seconds | engine | sys.monitoring | rest of CPython | kernel | other | "
                  f"engine's top {TOP} functions |")
            print("|---|---:|---:|---:|---:|---:|---:|---|")
            for config in options.configs.split(","):
                command = [sys.executable, os.path.join(HERE, "contenders.py"), workload, config,
                           str(units[workload])]
                timing, split = perf_split(command, env, directory)
                engine = split["engine"]
                top = ", ".join(f"{name} {share:.1f}" for name, share in engine.most_common(TOP))
                print(f"| {config} | {timing.get('seconds', float('nan')):.2f} | {sum(engine.values()):.1f}% | "
                      f"{split['monitoring']:.1f}% | {split['python']:.1f}% | {split['kernel']:.1f}% | "
                      f"{split['other']:.1f}% | {top} |", flush=True)


if __name__ == "__main__":
    main()
