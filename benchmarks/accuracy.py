"""Ground truth for Ocular's figures (not a test): `python benchmarks/accuracy.py`.

Leaf functions of very different event density are each timed untraced, on
their own; then traced (threshold 0) in the same order and shape; Ocular's self time of each is compared with its untraced time.
Each traced call is paired with a call of the function's untraced twin (the
same source compiled again and excluded), in one tracing session, so that a
drift of the machine's speed hits both alike.

Block level: `two_loops` is a dense loop followed by a sparse one; its twins
`dense_only` and `sparse_only` are the same loops alone. The share of
two_loops' time that Ocular gives each loop's blocks is compared with the
twins' untraced shares.

Output: a markdown table, error = Ocular / untraced - 1, median over the runs
and the spread (max - min) of the runs' errors, per mode.

Sampled estimates (threshold 500, the default sampling windows): a loop run
for a known number of iterations and a function called a known number of
times, whose estimated hits and calls are compared with those numbers, next
to the sampling error the profile claims (1/sqrt(windows)).
"""

import argparse
import os
import statistics
import sys
import time


import ocular


# ---- the leaves: every one a plain function with no Python callees ----------

def leaf_int_loop(n=40000):
    total = 0
    for i in range(n):
        total += i
    return total


def leaf_float_branch(n=30000):
    x = 0.5
    hits = 0
    for _ in range(n):
        x = x * 1.000001 + 0.25
        if x > 1000.0:
            x -= 999.0
            hits += 1
    return hits


def leaf_string_build(n=8000):
    parts = []
    for i in range(n):
        parts.append(str(i) + ",")
    return len("".join(parts))


def leaf_dict_count(n=20000):
    counts = {}
    for i in range(n):
        key = i % 97
        counts[key] = counts.get(key, 0) + 1
    return len(counts)


BIG = 7 ** 40000


def leaf_big_multiply():
    return (BIG * BIG).bit_length()


DATA = [(i * 7919) % 10007 for i in range(60000)]


def leaf_sort():
    return sorted(DATA)[100]


def leaf_unpack_pairs(n=20000, pairs=[(i, i) for i in range(100)]):
    s = 0
    for _ in range(n // 100):
        for p in pairs:
            u, v = p
            s += u
    return s


def leaf_while_attr(n=20000):
    class Box:
        __slots__ = ("v",)

    box = Box()
    box.v = 0
    i = 0
    while i < n:
        box.v = box.v + i
        i += 1
    return box.v


LEAVES = [leaf_int_loop, leaf_float_branch, leaf_string_build, leaf_dict_count, leaf_big_multiply,
          leaf_sort, leaf_unpack_pairs, leaf_while_attr]

# Specialisation: instrumented instructions run their base (unspecialised)
# form in precise mode, so where CPython's specialised form is much faster the
# traced instruction honestly costs more. These leaves are dominated by such
# instructions (BINARY_OP on ints/floats, COMPARE_OP, LOAD_ATTR on slots,
# UNPACK_SEQUENCE on tuples, FOR_ITER over a list, CALL of a builtin).
SPECIALIZATION_BOUND = {"leaf_int_loop", "leaf_float_branch", "leaf_dict_count", "leaf_unpack_pairs",
                        "leaf_while_attr", "leaf_string_build", "dense_only", "sparse_only", "two_loops"}


def dense_only(n=30000):
    total = 0
    for i in range(n):
        total += i
    return total


def sparse_only(n=3000):
    acc = []
    for i in range(n):
        acc.append(str(i * 3) + str(i * 5) + str(i * 7) + "," + str(i) * 3)
        if len(acc) > 50:
            acc.clear()
    return len(acc)


def two_loops(n_dense=30000, n_sparse=3000):
    total = 0
    for i in range(n_dense):
        total += i
    acc = []
    for i in range(n_sparse):
        acc.append(str(i * 3) + str(i * 5) + str(i * 7) + "," + str(i) * 3)
        if len(acc) > 50:
            acc.clear()
    return total + len(acc)


BLOCK_CASE = [dense_only, sparse_only, two_loops]
PAIRS = 24  # twin/traced call pairs per tracing session


def twins():
    """Every function of this file compiled again under another file name:
    excluded from tracing, the twins run at untraced speed while Ocular traces,
    so each traced call is interleaved with an untraced one of the same code and
    a drift of the machine's speed hits both alike."""
    with open(__file__) as source:
        namespace = {"__name__": "accuracy_twins"}
        exec(compile(source.read(), __file__ + "<twin>", "exec"), namespace)
    return namespace


TWINS = twins() if __name__ == "__main__" else {}


def floor_session(function):
    """The same comparison with no Ocular at all: the function against its
    twin, both untraced. What this shows is the machine's own noise."""
    twin = TWINS[function.__name__]
    first, second = [], []
    for _ in range(PAIRS):
        start = time.perf_counter_ns()
        twin()
        first.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        function()
        second.append(time.perf_counter_ns() - start)
    return statistics.fmean(second) / statistics.fmean(first) - 1


def session(function, mode):
    """(profile, Ocular's self ns per call of `function`, its twin's untraced
    ns per call) from one tracing session: both are means over the session, so
    that both hold the same mix of the machine's fast and slow moments."""
    twin = TWINS[function.__name__]
    code = function.__code__
    ocular.start_tracing(mode=mode, perfetto=False, deinstrument_threshold=0,
                         include_only=[function.__name__], exclude=["<twin>"])
    untraced = []
    try:
        for _ in range(PAIRS):
            start = time.perf_counter_ns()
            twin()
            untraced.append(time.perf_counter_ns() - start)
            function()
    finally:
        profile = ocular.stop_tracing()
    mine = [f for f in profile.functions if f.filename == code.co_filename and f.qualname == code.co_qualname]
    return profile, profile.cycles_to_ns(mine[0].cycles) / PAIRS if mine else 0.0, statistics.fmean(untraced)


def loop_lines(function):
    """(first line of the dense loop, first line of the sparse loop) in two_loops."""
    first = function.__code__.co_firstlineno
    return first + 2, first + 5


def one_run(mode):
    errors, untraced = {}, {}
    for function in LEAVES + BLOCK_CASE:
        profile, traced_ns, untraced_ns = session(function, mode)
        errors[function.__name__] = traced_ns / untraced_ns - 1
        untraced[function.__name__] = untraced_ns
        if function is two_loops:
            dense_line, sparse_line = loop_lines(two_loops)
            mine = [b for b in profile.blocks if b.qualname == "two_loops"]
            total = sum(b.cycles for b in mine) or 1
            dense = sum(b.cycles for b in mine
                        if b.first_line is not None and dense_line <= b.first_line < sparse_line)
            sparse = sum(b.cycles for b in mine if b.first_line is not None and b.first_line >= sparse_line)
    twin_total = untraced["dense_only"] + untraced["sparse_only"]
    shares = {
        "two_loops: dense loop's share": (dense / total) / (untraced["dense_only"] / twin_total) - 1,
        "two_loops: sparse loop's share": (sparse / total) / (untraced["sparse_only"] / twin_total) - 1,
    }
    return errors, shares, profile


def floor_run():
    return {f.__name__: floor_session(f) for f in LEAVES + BLOCK_CASE}


# ---- sampled estimates: counts known exactly ------------------------------

def counted_loop(n):
    total = 0
    for i in range(n):
        if i & 1:
            total += i
    return total


def tiny(x):
    return x


def counted_calls(n):
    for i in range(n):
        tiny(i)


def sampled_estimates(runs, seconds=1.0):
    """{case: [(estimate / truth - 1, claimed error)]} over `runs` runs."""
    n_loop = _scaled(counted_loop, seconds)
    n_calls = _scaled(counted_calls, seconds)
    results = {}
    for _ in range(runs):
        for case, function, n, pick in (
                (f"loop of {n_loop:,} iterations: its block's hits", counted_loop, n_loop,
                 lambda p: max((b.hits for b in p.blocks if b.qualname == "counted_loop"))),
                (f"{n_calls:,} calls of a trivial function: its calls", counted_calls, n_calls,
                 lambda p: next(f.calls for f in p.functions if f.qualname == "tiny"))):
            ocular.start_tracing(perfetto=False, deinstrument_threshold=500, include_only=__file__)
            function(n)
            profile = ocular.stop_tracing()
            claimed = 1 / profile.sampling.windows ** 0.5 if profile.sampling.windows else float("inf")
            results.setdefault(case, []).append((pick(profile) / n - 1, claimed))
    return results


def _scaled(function, seconds):
    n = 100_000
    while True:
        start = time.perf_counter()
        function(n)
        took = time.perf_counter() - start
        if took > 0.1:
            return int(n * seconds / took)
        n *= 4


def print_sampled(runs):
    print(f"### sampled estimates (threshold 500, sample_interval_ms={ocular.SAMPLE_INTERVAL_MS:g}, "
          f"windows of {ocular.MIN_WINDOW_MS:g} ms), {runs} runs of about 1 s untraced\n")
    print("| case | estimate / truth - 1 (median) | range over runs | sampling error claimed (median) |")
    print("|---|---:|---:|---:|")
    for case, values in sampled_estimates(runs).items():
        errors = [e for e, _ in values]
        claimed = statistics.median(c for _, c in values)
        print(f"| {case} | {100 * statistics.median(errors):+.1f} % | "
              f"{100 * min(errors):+.1f} .. {100 * max(errors):+.1f} % | {100 * claimed:.0f} % |")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--modes", default="adaptive,precise")
    parser.add_argument("--no-sampled", action="store_true", help="leave out the sampled estimates")
    options = parser.parse_args()
    if not options.no_sampled:
        print_sampled(options.runs)
    for f in LEAVES + BLOCK_CASE:  # warm up: specialise, as a long-running program would
        f()
    print(f"Python {sys.version.split()[0]}, threshold 0, {options.runs} runs of "
          f"{PAIRS} untraced/traced call pairs per function\n")
    floors = {}
    for _ in range(options.runs):
        for name, value in floor_run().items():
            floors.setdefault(name, []).append(value)
    for mode in filter(None, options.modes.split(",")):
        results, share_results, costs = {}, {}, []
        for _ in range(options.runs):
            errors, shares, profile = one_run(mode)
            for name, value in errors.items():
                results.setdefault(name, []).append(value)
            for name, value in shares.items():
                share_results.setdefault(name, []).append(value)
            cal = profile.calibration
            costs.append(cal.costs[cal.principal].ticks)
        print(f"### {mode} mode\n")
        print("| function | Ocular / untraced - 1 (median) | spread over runs | "
              "the machine's own spread (untraced / untraced) | note |")
        print("|---|---:|---:|---:|---|")
        for name, values in list(results.items()) + list(share_results.items()):
            note = ""
            if mode == "precise" and name in SPECIALIZATION_BOUND:
                note = "specialisation-bound"
            floor = floors.get(name)
            floor_text = f"{100 * (max(floor) - min(floor)):.1f} pts" if floor else ""
            print(f"| {name} | {100 * statistics.median(values):+.1f} % | "
                  f"{100 * (max(values) - min(values)):.1f} pts | {floor_text} | {note} |")
        print()


if __name__ == "__main__":
    main()
