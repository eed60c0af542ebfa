"""Instructions per event, by callgrind (not a test): repeatable where times are not.

    ./dev callgrind [--workloads raytrace,generators] [--configs floor-adaptive,ocular-adaptive-0]
                    [--units 1,3]

Each (workload, config) runs twice in a fresh interpreter under
`valgrind --tool=callgrind` (contenders.py, the benchmark's own measurement),
at two unit counts. The difference between the two runs is the work of the
extra units alone: start-up, calibration, stop_tracing() and the interpreter's
own start cancel out. Per event delivered (Ocular's count of the same extra
units at threshold 0; the floor receives the same events):

    instructions per event = (Ir(config, more) - Ir(config, fewer)
                              - (Ir(untraced, more) - Ir(untraced, fewer))) / extra events

and, for Ocular, the share of that in the engine by C function (self cost,
from callgrind_annotate). Recalibrations are off (OCULAR_BENCH_NO_REFRESH):
they run on a wall-clock timer, so under valgrind their work would grow with
the run. Callgrind counts instructions, not cycles: a cache
miss costs nothing here, so this says which code path got shorter, and the
benchmark's times say whether the run got faster.
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

DEFAULT_WORKLOADS = ["raytrace", "generators", "richards", "nbody"]
DEFAULT_CONFIGS = ["floor-adaptive", "ocular-adaptive-0"]
TOP = 10


def measure(workload, config, units, env, directory):
    """(the measurement's JSON, total Ir, {engine function: self Ir})."""
    out = os.path.join(directory, f"{workload}-{config}-{units}.callgrind")
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
               os.path.join(HERE, "contenders.py"), workload, config, str(units)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-1500:]}")
    total = None
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    annotate = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", out],
                              capture_output=True, text=True).stdout
    engine = collections.Counter()
    for line in annotate.splitlines():
        match = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(\S+):(\S+)\s+\[(.*)\]", line)
        if match and "_engine" in match[4]:
            engine[match[3]] += int(match[1].replace(",", ""))
    return json.loads(lines[-1]), total, engine


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS))
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help="floors and Ocular's threshold-0 configurations")
    parser.add_argument("--units", default="1,3", help="the two unit counts (default 1,3)")
    options = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    fewer, more = (int(u) for u in options.units.split(","))
    configs = options.configs.split(",")
    bad = [c for c in configs if not (c.endswith("-0") or "floor-" in c)]
    if bad:
        raise SystemExit(f"threshold-0 Ocular configurations and floors only (same events as Ocular's count): {bad}")
    with tempfile.TemporaryDirectory() as directory:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([bench.build_empty_callback(directory), HERE]),
                   OCULAR_BENCH_NO_REFRESH="1")  # contenders.py: their work would grow with valgrind's slowness
        print("| workload | config | extra events | instructions / event | of which engine | "
              f"engine's top {TOP} functions (instructions / event) |")
        print("|---|---|---:|---:|---:|---|")
        for workload in options.workloads.split(","):
            runs = {}
            for config in ["untraced"] + sorted(configs, key=lambda c: "floor-" in c):
                runs[config] = [measure(workload, config, units, env, directory) for units in (fewer, more)]
            untraced = runs["untraced"][1][1] - runs["untraced"][0][1]
            for config in configs:
                mode = "precise" if "precise" in config else "adaptive"
                counted = runs.get(f"ocular-{mode}-0")
                if not counted:
                    print(f"| {workload} | {config} | (needs ocular-{mode}-0 for the event count) | | | |")
                    continue
                events = counted[1][0]["events"] - counted[0][0]["events"]
                (_, low, engine_low), (_, high, engine_high) = runs[config]
                per_event = (high - low - untraced) / events
                engine = engine_high - engine_low
                in_engine = sum(engine.values()) / events
                top = ", ".join(f"{name} {ir / events:.1f}" for name, ir in engine.most_common(TOP) if ir > 0)
                print(f"| {workload} | {config} | {events:,} | {per_event:.1f} | "
                      f"{in_engine:.1f} | {top} |", flush=True)


if __name__ == "__main__":
    main()
