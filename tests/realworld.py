"""Real-world suite (`./dev realworld`, not part of the pytest run): CPython's
own test modules run under Ocular, in both modes, with and without
de-instrumentation. Each must pass exactly as it does untraced, leave the
shadow stacks balanced (no lost frame with threshold 0), attribute almost
every cycle, and write a trace that passes tracecheck."""

import os
import sys
import tempfile
import unittest
import resource
import warnings

import ocular

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tracecheck  # noqa: E402

MODULES = ["test.test_generators", "test.test_exceptions", "test.test_asyncio.test_tasks",
           "test.test_json", "test.test_contextlib"]


def run_tests(module):
    suite = unittest.defaultTestLoader.loadTestsFromName(module)
    with open(os.devnull, "w") as sink:
        result = unittest.TextTestRunner(stream=sink, verbosity=0).run(suite)
    return result.testsRun, len(result.failures) + len(result.errors)


def main():
    warnings.simplefilter("ignore")
    passed = failed = 0
    with tempfile.TemporaryDirectory() as directory:
        for module in MODULES:
            baseline = run_tests(module)
            for mode in ("adaptive", "precise"):
                for threshold in (0, 500):
                    if module == "test.test_json" and mode == "precise" and threshold == 0:
                        continue  # ~300 M events: minutes on 2 cores for no new coverage
                    output = os.path.join(directory, f"{module}-{mode}-{threshold}.pftrace")
                    ocular.start_tracing(mode=mode, deinstrument_threshold=threshold, output=output)
                    try:
                        outcome = run_tests(module)
                    finally:
                        profile = ocular.stop_tracing()
                    total = profile.total_cycles + max(profile.unattributed_cycles, 0)
                    unattributed = profile.unattributed_cycles / total if total else 0.0
                    problems = []
                    if outcome != baseline:
                        problems.append(f"tests {outcome} != untraced {baseline}")
                    if threshold == 0 and profile.lost_frames:
                        problems.append(f"{profile.lost_frames} lost frames")
                    if threshold == 0 and unattributed > 0.02:
                        problems.append(f"{unattributed:.1%} unattributed")
                    if profile.failure:
                        problems.append(profile.failure)
                    # tracecheck holds a whole trace in Python objects: only the
                    # smaller traces are replayed (the pytest suite covers the rest).
                    if not profile.dropped_events and os.path.getsize(output) < 8 << 20:
                        tracecheck.check_nesting(tracecheck.load_pftrace(output))
                    os.unlink(output)
                    status = "ok" if not problems else "FAILED: " + "; ".join(problems)
                    print(f"{module} {mode} threshold={threshold}: {outcome[0]} tests, "
                          f"{profile.events:,} events, {unattributed:.2%} unattributed, "
                          f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10} MB -> {status}",
                          flush=True)
                    passed += not problems
                    failed += bool(problems)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
