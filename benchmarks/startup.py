"""Start-up costs (`./dev startup`; not a test):

1. importing a big package tree (sympy by default) in a fresh interpreter,
   untraced and under Ocular (adaptive and precise at threshold 500, adaptive
   at 0): every module's code runs once, so almost every code object Ocular
   sees is new, which is the worst case for its per-code set-up;
2. the first event of a big code object: Ocular analyses a code object's
   blocks and lines when it first sees it. A function of N `if` statements is
   compiled afresh and called once, untraced and under Ocular; the difference,
   per instruction, is what a first sight costs (CPython's own lazy
   instrumentation of the code object included).

Ratios and per-instruction figures only, minimum of --repeat fresh runs.
"""

import argparse
import json
import os
import subprocess
import sys
import time

IMPORT = """
import json, sys, time
mode, threshold = sys.argv[1], int(sys.argv[2])
if mode != "untraced":
    import ocular
    ocular.start_tracing(mode=mode, deinstrument_threshold=threshold, perfetto=False)
began = time.perf_counter()
import {package}
elapsed = time.perf_counter() - began
result = {{"seconds": elapsed, "modules": len(sys.modules)}}
if mode != "untraced":
    profile = ocular.stop_tracing()
    result.update(functions=len(profile.functions), events=profile.events, failure=profile.failure)
print(json.dumps(result))
"""

FIRST_CALL = """
import dis, json, sys, time
statements, traced = int(sys.argv[1]), sys.argv[2] == "1"
source = "def big(x):\\n    y = 0\\n" + "".join(
    f"    if x > {i}:\\n        y += {i}\\n" for i in range(statements)) + "    return y\\n"
namespace = {}
exec(compile(source, "<big>", "exec"), namespace)
big = namespace["big"]
instructions = sum(1 for _ in dis.get_instructions(big))
if traced:
    import ocular
    ocular.start_tracing(deinstrument_threshold=500, perfetto=False)
began = time.perf_counter()
big(statements)
first = time.perf_counter() - began
began = time.perf_counter()
big(statements)
second = time.perf_counter() - began
if traced:
    ocular.stop_tracing()
print(json.dumps({"first": first, "second": second, "instructions": instructions}))
"""


def run(script, *args):
    output = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                            check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def import_costs(package, repeat):
    script = IMPORT.format(package=package)
    configs = [("untraced", 0), ("adaptive", 500), ("precise", 500), ("adaptive", 0)]
    best = {}
    for _ in range(repeat):  # interleaved, so a noisy neighbour hits all alike
        for config in configs:
            result = run(script, *config)
            if config not in best or result["seconds"] < best[config]["seconds"]:
                best[config] = result
    base = best[("untraced", 0)]["seconds"]
    print(f"\n(a) `import {package}` in a fresh interpreter ({best[('untraced', 0)]['modules']} modules), "
          f"min of {repeat}\n")
    print("| configuration | seconds | ratio | functions seen | events |")
    print("|---|---:|---:|---:|---:|")
    for (mode, threshold), result in best.items():
        label = "untraced" if mode == "untraced" else f"{mode}, threshold {threshold}"
        seen = f"{result['functions']:,} | {result['events']:,}" if "events" in result else " | "
        print(f"| {label} | {result['seconds']:.3f} | {result['seconds'] / base:.2f}x | {seen} |")


def first_event_costs(sizes, repeat):
    print(f"\n(b) first call of a freshly compiled function of N `if` statements, min of {repeat}\n")
    print("| statements | instructions | untraced first call ms | Ocular first call ms | Ocular second call ms "
          "| extra ns per instruction |")
    print("|---:|---:|---:|---:|---:|---:|")
    for statements in sizes:
        untraced = min((run(FIRST_CALL, statements, 0) for _ in range(repeat)), key=lambda r: r["first"])
        traced = min((run(FIRST_CALL, statements, 1) for _ in range(repeat)), key=lambda r: r["first"])
        extra = (traced["first"] - untraced["first"]) / traced["instructions"] * 1e9
        print(f"| {statements:,} | {traced['instructions']:,} | {untraced['first'] * 1e3:.2f} | "
              f"{traced['first'] * 1e3:.2f} | {traced['second'] * 1e3:.2f} | {extra:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", default="sympy")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="100,1000,10000,30000")
    options = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    import_costs(options.package, options.repeat)
    first_event_costs([int(s) for s in options.sizes.split(",")], options.repeat)


if __name__ == "__main__":
    main()
