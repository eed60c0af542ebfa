"""The pytest plugin (ocular_pytest), run as users run it: pytest in a
subprocess on a small test directory."""

import os
import re
import subprocess
import sys

import pytest

import ocular
import ocular_pytest as pytest_plugin

# square() is called spin's n times: 100,000, 10, 20, and once by the method.
SUITE = '''
import pytest


def square(x):
    return x * x


def spin(n):
    total = 0
    for i in range(n):
        total += square(i)
    return total


def test_spin():
    assert spin(100_000) > 0


@pytest.mark.parametrize("n", [10, 20])
def test_param(n):
    assert spin(n) >= 0


class TestGroup:
    def test_method(self):
        assert square(4) == 16
'''
CALLS = {"test_numbers.py::test_spin": 100_000, "test_numbers.py::test_param[10]": 10,
         "test_numbers.py::test_param[20]": 20, "test_numbers.py::TestGroup::test_method": 1}

# Saved profiles where this Ocular can save them (Profile.save), else text reports.
SUFFIX = pytest_plugin.SAVED_SUFFIX if hasattr(ocular.Profile, "save") else ".txt"

UNTRACED = '''
import sys


def test_nothing_holds_a_tool_id():
    assert all(sys.monitoring.get_tool(t) != "ocular" for t in range(6))


def test_the_plugin_imported_nothing_of_ocular():
    assert "ocular" not in sys.modules and "ocular_pytest" in sys.modules
'''


def pytest_run(folder, *arguments):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", COLUMNS="200")
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *arguments],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suite")
    (folder / "test_numbers.py").write_text(SUITE)
    (folder / "test_untraced.py").write_text(UNTRACED)
    return folder


def calls_of(report, qualname):
    """The calls column of `qualname`'s row in a text report's function table."""
    for line in report.split("Hottest functions")[1].split("\n\n")[0].splitlines():
        cells = line.split()
        if cells and cells[-1] == qualname:
            return int(cells[3].replace(",", ""))
    raise AssertionError(f"{qualname} not in the report:\n{report}")


@pytest.fixture(scope="module")
def profiled(suite):
    out = suite / "profiles"
    done = pytest_run(suite, "--ocular", "--ocular-threshold", "0", "--ocular-dir", str(out), "test_numbers.py")
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def test_one_profile_per_test_named_after_its_node_id(profiled):
    out, _ = profiled
    taken = {pytest_plugin.COMBINED}
    stems = {nodeid: pytest_plugin.file_stem(nodeid, taken) for nodeid in CALLS}
    assert stems["test_numbers.py::test_param[10]"] == "test_numbers.py__test_param_10"
    files = {path.name for path in out.iterdir()}
    assert files == {stem + SUFFIX for stem in stems.values()} | {
        "index.tsv", "combined" + SUFFIX, "combined.html"}
    index = [line.split("\t") for line in (out / "index.tsv").read_text().splitlines()[1:]]
    assert [(nodeid, name) for nodeid, name, _ in index] == [(n, stems[n] + SUFFIX) for n in CALLS]
    assert all(float(ms) > 0 for _, _, ms in index)


def calls_in(path, qualname):
    """calls of `qualname` in a profile the plugin wrote: saved (ocular.load
    reads it) where this Ocular has Profile.save, else a text report."""
    if path.suffix == ".txt":
        return calls_of(path.read_text(), qualname)
    return next(f.calls for f in ocular.load(path).functions if f.qualname == qualname)


def test_each_profile_holds_its_own_tests_calls_and_combined_holds_all(profiled):
    out, _ = profiled
    taken = {pytest_plugin.COMBINED}
    for nodeid, calls in CALLS.items():
        assert calls_in(out / (pytest_plugin.file_stem(nodeid, taken) + SUFFIX), "square") == calls, nodeid
    assert calls_in(out / ("combined" + SUFFIX), "square") == sum(CALLS.values())
    assert calls_in(out / ("combined" + SUFFIX), "spin") == 3  # test_spin and the two parameters
    assert "test_spin" in (out / "combined.html").read_text()


def test_summary_names_the_hottest_functions(profiled):
    out, stdout = profiled
    summary = stdout.split("ocular")[1:]
    assert summary, stdout
    text = "ocular".join(summary)
    assert "4 tests profiled (adaptive mode, threshold off)" in text
    hottest = text.split("Hottest functions over all tests (self time)")[1].splitlines()
    assert hottest[2].split()[-1] in ("square", "spin")  # the first row under the header
    assert {"square", "spin"} <= {line.split()[-1] for line in hottest[2:6] if line.strip()}
    assert "test_numbers.py::test_spin" in text.split("Tests with the most program time")[1].splitlines()[2]


def test_without_the_flag_nothing_is_traced_or_written(suite):
    done = pytest_run(suite)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout  # test_untraced ran: no tool id was Ocular's, no ocular module loaded
    assert not (suite / pytest_plugin.DEFAULT_DIR).exists()
    assert not re.search(r"=+ ocular =+", done.stdout)


def test_the_plugin_is_registered_and_its_modes_are_ocular_s(suite):
    assert pytest_plugin.MODES == ocular.MODES
    done = pytest_run(suite, "--help")
    for option in ("--ocular", "--ocular-mode", "--ocular-threshold", "--ocular-dir"):
        assert option in done.stdout


@pytest.mark.parametrize("arguments, words", [
    (["--ocular-threshold", "-1"], ["--ocular-threshold", "-1"]),
    (["--ocular-mode", "fast"], ["--ocular-mode", "'fast'", "adaptive", "precise"]),
    (["--ocular-threshold", "many"], ["--ocular-threshold", "many"]),
])
def test_bad_options_are_usage_errors(suite, arguments, words):
    done = pytest_run(suite, "--ocular", *arguments)
    assert done.returncode == 4  # pytest's usage error
    for word in words:
        assert word in done.stderr
    assert "Traceback" not in done.stderr


def test_file_stems_are_safe_and_unique():
    taken = set()
    stems = [pytest_plugin.file_stem(nodeid, taken) for nodeid in (
        "a/b.py::T::test[x/y]", "a/b.py::T::test[x\\y]", "A/B.py::t::TEST[X/Y]", "../../etc/passwd", "::", "x" * 400)]
    assert stems[0] == "a_b.py__T__test_x_y_"[:-1]  # separators become _, edges trimmed
    assert len({s.lower() for s in stems}) == len(stems)  # unique even where case does not count
    for stem in stems:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", stem) and not stem.startswith(".") and len(stem) <= 124


def test_a_suite_that_errors_on_warnings_runs_when_ocular_was_imported_first(tmp_path):
    """Profiling a suite in-process, as `start_tracing(); pytest.main()`: pytest
    checks the plugin's distribution (ocular's) for modules imported before it
    could rewrite them, and a warning there fails a suite run with -W error."""
    (tmp_path / "test_numbers.py").write_text(SUITE)
    program = (
        "import sys, ocular, pytest\n"
        "ocular.start_tracing(perfetto=False, deinstrument_threshold=0)\n"
        f"code = pytest.main(['-q', '-W', 'error', '-p', 'no:cacheprovider', {str(tmp_path)!r}])\n"
        "profile = ocular.stop_tracing()\n"
        "assert [f.calls for f in profile.functions if f.qualname == 'square'] == [100_031]\n"
        "sys.exit(code)\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "4 passed" in result.stdout
