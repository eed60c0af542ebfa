"""pytest --ocular: a profile of every test, and the hottest functions of the
whole session in the terminal summary.

    pytest --ocular [--ocular-mode adaptive|precise] [--ocular-threshold N] [--ocular-dir DIR]

Each test's call phase (the test function and everything it calls) runs
under an Ocular run of its own; fixture setup and teardown are not part of
it, as most of their time is pytest's own machinery. DIR (default .ocular)
receives one profile per test, named after its node id, and the session's
combined profile (combined.*, with an HTML report); index.tsv maps node ids
to file names. pytest's and pluggy's own code is not traced.

Without --ocular this plugin only declares its options: it traces nothing,
writes nothing and imports nothing of Ocular's (it is a module of its own,
outside the ocular package, whose import would load the engine).
"""

import hashlib
import os
import re

import pytest

MODES = ("adaptive", "precise")  # ocular.MODES (checked by the tests), without importing the engine
DEFAULT_DIR = ".ocular"
COMBINED = "combined"
SAVED_SUFFIX = ".json"  # Profile.save's format is JSON
SUMMARY_ROWS = 10


def pytest_addoption(parser):
    group = parser.getgroup("ocular", "Ocular profiler")
    group.addoption("--ocular", action="store_true", default=False,
                    help="profile every test with Ocular (one profile per test, plus a combined one)")
    group.addoption("--ocular-mode", choices=MODES, default="adaptive",
                    help="adaptive: cycles per basic block; precise: per bytecode instruction")
    group.addoption("--ocular-threshold", type=int, default=500, metavar="N",
                    help="hits per site before Ocular de-instruments it (0 = trace everything; default 500)")
    group.addoption("--ocular-dir", default=DEFAULT_DIR, metavar="DIR",
                    help=f"where the profiles go (default {DEFAULT_DIR})")


def pytest_configure(config):
    if not config.getoption("ocular"):
        return
    threshold = config.getoption("ocular_threshold")
    if threshold < 0:
        raise pytest.UsageError(f"--ocular-threshold must be 0 or more (0 = trace everything), not {threshold}")
    config.pluginmanager.register(_Profiler(config, threshold), "ocular-profiler")


def file_stem(nodeid, taken):
    """A file name for a test's node id: safe on every file system, unique
    (case-insensitively) among `taken`, which it joins."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", nodeid.replace("::", "__")).strip("._-") or "test"
    if len(stem) > 120:  # file names stop at 255 bytes; keep it readable and still unique
        stem = stem[:100] + "-" + hashlib.sha1(nodeid.encode()).hexdigest()[:12]
    unique, n = stem, 1
    while unique.lower() in taken:
        n += 1
        unique = f"{stem}-{n}"
    taken.add(unique.lower())
    return unique


def _excluded_code():
    """pytest's and pluggy's directories: their frames are the harness, not the test."""
    import _pytest
    import pluggy

    return [os.path.dirname(module.__file__) + os.sep for module in (_pytest, pluggy)]


class _Profiler:
    def __init__(self, config, threshold):
        import ocular

        from ocular._merge import Merger

        self.ocular = ocular
        self.mode = config.getoption("ocular_mode")
        self.threshold = threshold
        self.directory = os.path.abspath(config.getoption("ocular_dir"))
        os.makedirs(self.directory, exist_ok=True)
        self.exclude = _excluded_code()
        self.merger = Merger()
        self.taken = {COMBINED}
        self.index = []  # (node id, file name, program cycles, tsc_hz)
        self.failures = {}  # why a test could not be profiled: {message: tests}
        self.tracing = None  # the node id being profiled
        self.combined = None  # the session's profile, at its end
        self.combined_files = []

    # -- one run per test: its call phase ---------------------------------------

    @pytest.hookimpl(wrapper=True, trylast=True)  # innermost: inside the capture and logging wrappers
    def pytest_runtest_call(self, item):
        try:
            self.ocular.start_tracing(mode=self.mode, perfetto=False, deinstrument_threshold=self.threshold,
                                      exclude=self.exclude)
        except Exception as error:  # e.g. no free tool id: the test still runs, unprofiled
            self.failures.setdefault(f"{type(error).__name__}: {error}", []).append(item.nodeid)
            return (yield)
        self.tracing = item.nodeid
        try:
            return (yield)
        finally:
            self.tracing = None
            self._finish(item.nodeid, self.ocular.stop_tracing())

    def _finish(self, nodeid, profile):
        if profile is None:  # the test stopped Ocular itself
            self.failures.setdefault("the test stopped Ocular's run", []).append(nodeid)
            return
        stem = file_stem(nodeid, self.taken)
        path = self._save(profile, stem)
        self.index.append((nodeid, os.path.basename(path), profile.total_cycles, profile.tsc_hz))
        self.merger.add(profile)

    def _save(self, profile, stem):
        """The profile as a file of DIR: Profile.save's format where this
        Ocular has it, else the text report."""
        base = os.path.join(self.directory, stem)
        if hasattr(profile, "save"):  # ocular.load(path) reads it back
            profile.save(base + SAVED_SUFFIX)
            return base + SAVED_SUFFIX
        with open(base + ".txt", "w", encoding="utf-8") as file:
            file.write(profile.report())
        return base + ".txt"

    # -- the session ---------------------------------------------------------------

    def pytest_sessionfinish(self, session):
        if self.tracing is not None:  # interrupted inside a test
            self.tracing = None
            self.ocular.stop_tracing()
        self.combined = self.merger.result() if self.merger.runs else None
        with open(os.path.join(self.directory, "index.tsv"), "w", encoding="utf-8") as file:
            file.write("node id\tfile\tprogram ms\n")
            for nodeid, name, cycles, hz in self.index:
                file.write(f"{nodeid}\t{name}\t{cycles * 1e3 / hz if hz else 0:.3f}\n")
        if self.combined is not None:
            self.combined_files = [os.path.basename(self._save(self.combined, COMBINED))]
            self.combined.to_html(os.path.join(self.directory, COMBINED + ".html"))
            self.combined_files.append(COMBINED + ".html")

    def pytest_terminal_summary(self, terminalreporter):
        from ocular import _report

        write = terminalreporter.write_line
        terminalreporter.section("ocular")
        for message, tests in self.failures.items():
            write(f"not profiled ({len(tests)} test{'s' if len(tests) > 1 else ''}, e.g. {tests[0]}): {message}")
        combined = self.combined
        if combined is None:
            write("no test was profiled")
            return
        where = os.path.relpath(self.directory)
        write(f"{len(self.index)} tests profiled ({self.mode} mode, threshold {self.threshold or 'off'}); "
              f"profiles in {where}{os.sep}: one per test (index.tsv), {', '.join(self.combined_files)}")
        total = combined.total_cycles
        rows = [(_report._share(f.cycles, f.uncertainty, total), _report._ms(combined, f.cycles, f.uncertainty),
                 _report._ms(combined, f.inclusive_cycles), f"{f.calls:,}",
                 f"{_report._short(f.filename)}:{f.firstlineno}", f.qualname)
                for f in combined.functions[:SUMMARY_ROWS]]
        lines = _report._table("Hottest functions over all tests (self time)",
                               ("self", "self ms", "incl ms", "calls", "where", "function"), rows)
        slowest = sorted(self.index, key=lambda entry: -entry[2])[:5]
        lines += _report._table("Tests with the most program time",
                                ("ms", "test"),
                                [(f"{cycles * 1e3 / hz if hz else 0:.3f}", nodeid) for nodeid, _, cycles, hz in slowest])
        for line in lines:
            write(line)
