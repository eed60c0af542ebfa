"""Third-party test suites under Ocular (`./dev thirdparty`, not part of the
pytest run).

Each project's own tests, from its PyPI sdist at a pinned version, run
in-process with pytest.main() in a fresh worker process per configuration:
once untraced (the baseline), then under Ocular. A configuration passes when

  - every test has the same outcome as in the baseline (passed / failed /
    skipped / xfailed ..., per test id), and the worker did not crash;
  - Ocular issued no warning and reports no failure, no trace error, no
    dropped trace event (.pftrace keeps up at threshold 500);
  - every thread's account adds up exactly: covered = the functions' self
    cycles + untraced + lost + overhead + Ocular's own;
  - lost frames are 0 at threshold 0 and at most LOST_BOUND (15 %) of the
    PY_START events seen at threshold 500 (a frame whose return site was
    DISABLEd ends unseen; the shadow stack drops it at the next event);
  - a trace, when written, passes tracecheck (the official schema, Perfetto's
    nesting rules) over its first TRACECHECK_BYTES (8 MB): tracecheck holds
    a trace in Python objects, minutes for a whole one.

Figures below their stated uncertainty (cycles < -uncertainty) are counted
and shown for functions, blocks, lines and instructions; they are the
"Truthful cycles" issue's (known), and fail the run only with --strict-signs.

    python tests/thirdparty.py --prepare DIR   # download, unpack, install the sdists
    python tests/thirdparty.py DIR [--only PROJECT] [--strict-signs]
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
LOST_BOUND = 0.15
TRACECHECK_BYTES = 8 << 20

# name: (pip requirement, directory of the tests inside the sdist, extra pytest arguments)
PROJECTS = {
    "more-itertools": ("more-itertools==10.5.0", ["tests"], []),
    "toolz": ("toolz==1.0.0", ["toolz/tests"], []),
    "attrs": ("attrs==24.2.0", ["tests"], ["-p", "thirdparty_hypothesis"]),
    # test_unit.py runs its whole suite once per packrat setting: the first
    # variant is the suite, the others add minutes and no coverage.
    "pyparsing": ("pyparsing==3.1.4", ["tests/test_simple_unit.py", "tests/test_unit.py::Test02_WithoutPackrat",
                                       "tests/test_examples.py"], []),
}
EXTRA_REQUIREMENTS = ["hypothesis", "coverage"]  # attrs' tests; the coverage run

# (label, mode, threshold, trace) — every project runs the first three; the
# costlier ones only on the project named.
CONFIGS = [
    ("adaptive 0", "adaptive", 0, False),
    ("adaptive 500 + trace", "adaptive", 500, True),
    ("precise 500", "precise", 500, False),
]
EXTRA_CONFIGS = {
    "toolz": [("precise 0", "precise", 0, False), ("adaptive 0 + trace", "adaptive", 0, True)],
    "more-itertools": [("precise 500 + trace", "precise", 500, True)],
}
COVERAGE_PROJECT = "toolz"


def source_dir(root, name):
    requirement = PROJECTS[name][0]
    return os.path.join(root, requirement.replace("==", "-"))


def prepare(root):
    os.makedirs(root, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    requirements = [PROJECTS[name][0] for name in PROJECTS]
    subprocess.run(pip + ["install", "pytest>=8", *EXTRA_REQUIREMENTS], check=True)
    for requirement in requirements:
        target = source_dir(root, next(n for n in PROJECTS if PROJECTS[n][0] == requirement))
        if os.path.isdir(target):
            continue
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(pip + ["download", "--no-deps", "--no-binary", ":all:", requirement, "-d", download],
                           check=True)
            (archive,) = os.listdir(download)
            with tarfile.open(os.path.join(download, archive)) as tar:
                tar.extractall(root, filter="data")
            extracted = os.path.join(root, archive[: -len(".tar.gz")])
            if extracted != target:  # sdists name their directory with _ or -
                os.rename(extracted, target)
    # The packages themselves, from the unpacked sources (no wheel involved).
    subprocess.run(pip + ["install", "--no-deps"] + [source_dir(root, n) for n in PROJECTS], check=True)


# ---- the worker: one project, one configuration, in this process ------------

class Outcomes:
    """pytest plugin: the outcome of each test id (setup errors included)."""

    def __init__(self):
        self.outcomes = {}
        self.warnings = []

    def pytest_runtest_logreport(self, report):
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        if report.when == "call" or outcome not in ("passed",):
            previous = self.outcomes.get(report.nodeid)
            if previous in (None, "passed") or report.when == "call":
                self.outcomes[report.nodeid] = outcome if report.when == "call" else f"{report.when} {outcome}"

    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        text = str(warning_message.message)
        if "ocular" in str(warning_message.filename).lower() or "Ocular" in text:
            self.warnings.append(text)


def negatives(records):
    return sum(1 for r in records if r.cycles < -r.uncertainty)


def worker(root, name, config, out):
    import pytest

    os.chdir(source_dir(root, name))
    sys.path.insert(0, HERE)  # thirdparty_hypothesis
    _, dirs, extra = PROJECTS[name]
    args = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", *extra, *dirs]
    plugin = Outcomes()
    result = {"project": name, "config": config, "problems": []}
    label, mode, threshold, trace = config
    began = time.perf_counter()
    if mode is None:
        code = pytest.main(args, plugins=[plugin])
    else:
        import ocular

        output = os.path.join(tempfile.gettempdir(), f"ocular-thirdparty-{os.getpid()}.pftrace")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ocular.start_tracing(mode=mode, deinstrument_threshold=threshold, perfetto=trace, output=output)
            try:
                code = pytest.main(args, plugins=[plugin])
            finally:
                profile = ocular.stop_tracing()
        ours = [str(w.message) for w in caught if "ocular" in str(w.filename).lower() or
                "Ocular" in str(w.message)]
        result.update(check_profile(profile, threshold, plugin.warnings + ours))
        if trace:
            result.update(check_trace(output, profile))
            os.unlink(output)
    result["seconds"] = time.perf_counter() - began
    result["exit_code"] = int(code)
    result["outcomes"] = plugin.outcomes
    with open(out, "w") as file:
        json.dump(result, file)


def check_profile(profile, threshold, ocular_warnings):
    problems = []
    if ocular_warnings:
        problems.append(f"Ocular warned: {ocular_warnings[:3]}")
    if profile.failure:
        problems.append(f"failure: {profile.failure}")
    if profile.trace_error:
        problems.append(f"trace error: {profile.trace_error}")
    unbalanced = [t.native_id for t in profile.threads
                  if t.covered_cycles != sum(f.cycles for f in t.functions) + t.untraced_cycles +
                  t.lost_cycles + t.overhead_cycles + t.ocular_cycles]
    if unbalanced:
        problems.append(f"accounts of threads {unbalanced} do not add up")
    starts = sum(f.calls for f in profile.functions)
    lost_share = profile.lost_frames / starts if starts else 0.0
    if threshold == 0 and profile.lost_frames:
        problems.append(f"{profile.lost_frames} lost frames at threshold 0")
    elif lost_share > LOST_BOUND:
        problems.append(f"lost frames {lost_share:.1%} of starts > {LOST_BOUND:.0%}")
    signs = {kind: negatives(getattr(profile, kind)) for kind in ("functions", "blocks", "lines", "instructions")}
    sizes = {kind: len(getattr(profile, kind)) for kind in signs}
    return {"problems": problems, "events": profile.events, "lost_frames": profile.lost_frames,
            "lost_share": lost_share, "negatives": signs, "sizes": sizes, "threads": len(profile.threads),
            "dropped": profile.dropped_events}


def check_trace(path, profile):
    import tracecheck

    size = os.path.getsize(path)
    problems = []
    if profile.dropped_events and profile.deinstrument_threshold:
        problems.append(f"{profile.dropped_events} trace events dropped at threshold > 0")
    with open(path, "rb") as file:
        head = file.read(TRACECHECK_BYTES)
    prefix = path + ".head"
    with open(prefix, "wb") as file:
        file.write(head)
    try:
        whole = len(head) == size
        # a cut file ends in a partial packet and open slices: tolerated
        tracecheck.check_nesting(tracecheck.load_pftrace(prefix, tolerant=not whole), allow_open=not whole)
    except tracecheck.TraceError as error:
        problems.append(f"tracecheck: {error}")
    finally:
        os.unlink(prefix)
    return {"trace_bytes": size, "trace_checked": min(size, TRACECHECK_BYTES), "trace_problems": problems}


# ---- the driver ----------------------------------------------------------------

def run_worker(root, name, config):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    began = time.perf_counter()
    command = [sys.executable, os.path.abspath(__file__), "--worker", root, name, json.dumps(config), path]
    process = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=1800)
    try:
        with open(path) as file:
            result = json.load(file)
    except (OSError, ValueError):
        result = {"project": name, "config": config, "outcomes": {}, "problems": [
            f"worker crashed (exit {process.returncode}): {process.stderr[-600:]}"]}
    finally:
        if os.path.exists(path):
            os.unlink(path)
    result["wall"] = time.perf_counter() - began
    return result


def compare(baseline, result):
    problems = list(result.get("problems", [])) + list(result.get("trace_problems", []))
    before, after = baseline["outcomes"], result["outcomes"]
    changed = sorted(test for test in set(before) | set(after) if before.get(test) != after.get(test))
    if changed:
        problems.append(f"{len(changed)} tests changed outcome, e.g. " +
                        "; ".join(f"{t}: {before.get(t)} -> {after.get(t)}" for t in changed[:3]))
    if result.get("exit_code") != baseline.get("exit_code"):
        problems.append(f"pytest exit code {result.get('exit_code')} != {baseline.get('exit_code')}")
    return problems


def coverage_check(root, name):
    """`coverage run -m pytest` on the project with and without Ocular (a
    -p plugin starting it at configure): the same total percentage."""
    directory = source_dir(root, name)
    _, dirs, extra = PROJECTS[name]
    percentages = []
    for with_ocular in (False, True):
        env = dict(os.environ, PYTHONPATH=HERE, COVERAGE_FILE=os.path.join(tempfile.gettempdir(),
                                                                           f".coverage-ocular-{with_ocular}"))
        command = [sys.executable, "-m", "coverage", "run", f"--source={name}", "-m", "pytest", "-q",
                   "-p", "no:cacheprovider", *extra, *dirs]
        if with_ocular:
            command[-len(dirs):-len(dirs)] = ["-p", "thirdparty_ocular"]
        run = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
        report = subprocess.run([sys.executable, "-m", "coverage", "report", "--format=total", "--precision=2"],
                                cwd=directory, env=env, capture_output=True, text=True)
        percentages.append((run.returncode, report.stdout.strip()))
    problems = [] if percentages[0] == percentages[1] and percentages[0][0] == 0 else [
        f"coverage without / with Ocular: {percentages}"]
    return percentages, problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="where the sdists are unpacked")
    parser.add_argument("--prepare", action="store_true", help="download, unpack and install, then exit")
    parser.add_argument("--only", action="append", choices=sorted(PROJECTS))
    parser.add_argument("--strict-signs", action="store_true",
                        help="fail on figures below their uncertainty (the Truthful cycles issue's)")
    parser.add_argument("--no-coverage", action="store_true")
    options = parser.parse_args()
    root = os.path.abspath(options.root)
    if options.prepare:
        prepare(root)
        return 0
    rows, failed = [], 0
    began = time.perf_counter()
    for name in options.only or PROJECTS:
        baseline = run_worker(root, name, ("untraced", None, None, False))
        tests = len(baseline["outcomes"])
        counts = {}
        for outcome in baseline["outcomes"].values():
            counts[outcome] = counts.get(outcome, 0) + 1
        status = "ok" if baseline.get("exit_code") in (0, 1) and tests else f"FAILED {baseline['problems']}"
        failed += status != "ok"
        rows.append((name, "untraced", tests, ", ".join(f"{n} {o}" for o, n in sorted(counts.items())),
                     baseline.get("wall", 0), "", "", "", status))
        print(f"{name} untraced: {tests} tests ({counts}) in {baseline.get('wall', 0):.1f} s -> {status}",
              flush=True)
        for config in CONFIGS + EXTRA_CONFIGS.get(name, []):
            result = run_worker(root, name, config)
            problems = compare(baseline, result)
            signs = result.get("negatives", {})
            if options.strict_signs and any(signs.values()):
                problems.append(f"figures below their uncertainty: {signs}")
            status = "ok" if not problems else "FAILED: " + "; ".join(problems)
            failed += bool(problems)
            sizes = result.get("sizes", {})
            negative = " ".join(f"{kind[0]} {signs.get(kind, 0)}/{sizes.get(kind, 0)}" for kind in
                                ("functions", "blocks", "lines", "instructions"))
            trace = ""
            if config[3]:
                trace = f"{result.get('trace_bytes', 0) / 1e6:.0f} MB" + \
                    (f", first {result.get('trace_checked', 0) / 1e6:.0f} MB checked" if result.get("trace_checked")
                     else "") + \
                    (f", {result.get('dropped', 0):,} dropped" if result.get("dropped") else "")
            rows.append((name, config[0], len(result.get("outcomes", {})), "same as untraced" if
                         not any("changed outcome" in p for p in problems) else "CHANGED",
                         result.get("wall", 0), f"{result.get('events', 0):,}",
                         f"{result.get('lost_frames', 0)} ({result.get('lost_share', 0):.2%})", trace, status))
            print(f"{name} {config[0]}: {result.get('events', 0):,} events, lost {result.get('lost_frames', 0)}, "
                  f"below uncertainty {negative}, {trace} in {result.get('wall', 0):.1f} s -> {status}", flush=True)
    if not options.no_coverage and (not options.only or COVERAGE_PROJECT in options.only):
        percentages, problems = coverage_check(root, COVERAGE_PROJECT)
        failed += bool(problems)
        status = "ok" if not problems else "FAILED: " + "; ".join(problems)
        rows.append((COVERAGE_PROJECT, "coverage run, with / without Ocular", "", "", 0, "", "", "",
                     f"{percentages[1][1]} % / {percentages[0][1]} % -> {status}"))
        print(f"{COVERAGE_PROJECT} coverage without / with Ocular: {percentages} -> {status}", flush=True)
    print()
    print("| project | configuration | tests | outcomes | s | events | lost frames | trace | result |")
    print("|---|---|---:|---|---:|---:|---:|---|---|")
    for row in rows:
        print("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in row) + " |")
    print(f"\nthird-party suites: {time.perf_counter() - began:.0f} s")
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5])
        sys.exit(0)
    sys.exit(main())
