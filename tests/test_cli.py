"""The command line, run in subprocesses with this venv's python: the program
sees what plain python gives it, exits as it would, and each option and each
usage error does what it says. A few wiring tests run main() in-process."""

import json
import os
import subprocess
import sys
import types

import pytest

import ocular
from ocular import cli, export

PYTHON = sys.executable
OWN_DIR = os.path.dirname(ocular.__file__)

PROBE = """\
import json, sys
g = globals()
spec, loader = g.get("__spec__"), g.get("__loader__")
print(json.dumps({
    "name": __name__, "argv": sys.argv, "path0": sys.path[0], "rest": sys.path[1:],
    "file": g.get("__file__"), "cached": g.get("__cached__", "absent"),
    "spec": getattr(spec, "name", None), "package": g.get("__package__", "absent"),
    "loader": getattr(loader, "__name__", type(loader).__name__),
    "main": sys.modules["__main__"].__dict__ is g,
    "dunders": sorted(k for k in g if k.startswith("__")),
    "code": sys._getframe().f_code.co_filename,
}))
"""

WORK = """\
import sys


def leaf(n):
    return sum(i * i for i in range(n))


def branch(n):
    return leaf(n) + leaf(n // 2)


def fail():
    raise ValueError("the program's own error")


if __name__ == "__main__":
    print(branch(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
    if "fail" in sys.argv:
        fail()
    if "exit" in sys.argv:
        sys.exit(int(sys.argv[-1]))
"""


def run(*args, cwd, python=(PYTHON,), **options):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONSAFE")}
    return subprocess.run([*python, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=env, **options)


def ocular_run(*args, cwd, python=(PYTHON,)):
    return run("-m", "ocular", *args, cwd=cwd, python=python)


@pytest.fixture
def tree(tmp_path):
    """A working directory with a script in a subdirectory, a package, a link,
    a directory and a zip file with a __main__."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "probe.py").write_text(PROBE)
    (tmp_path / "sub" / "work.py").write_text(WORK)
    os.symlink(tmp_path / "sub" / "probe.py", tmp_path / "link.py")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "probe.py").write_text(PROBE)
    (package / "__main__.py").write_text(PROBE)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__main__.py").write_text(PROBE)
    import zipfile

    with zipfile.ZipFile(tmp_path / "app.zip", "w") as archive:
        archive.writestr("__main__.py", PROBE)
    return tmp_path


PROGRAMS = {
    "script in a subdirectory": ["sub/probe.py", "a", "--mode", "x"],
    "script through a symlink": ["link.py", "b"],
    "module": ["-m", "pkg.probe", "c", "-c", "d"],
    "package": ["-m", "pkg", "e"],
    "code": ["-c", PROBE, "f", "g"],
    "directory": ["app", "h"],
    "zip file": ["app.zip", "i"],
}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_the_program_sees_what_plain_python_gives_it(tree, program):
    args = PROGRAMS[program]
    plain = run(*args, cwd=tree)
    under = ocular_run("--no-trace", "--quiet", *args, cwd=tree)
    assert plain.returncode == under.returncode == 0, under.stderr
    expected, got = json.loads(plain.stdout), json.loads(under.stdout)
    assert got == expected
    assert got["name"] == "__main__" and got["argv"][1:] == args[-len(got["argv"]) + 1:]
    assert under.stderr == ""


def test_the_console_script_and_safe_path_give_the_same(tree):
    plain = json.loads(run("sub/probe.py", "x", cwd=tree).stdout)
    script = os.path.join(os.path.dirname(PYTHON), "ocular")
    assert json.loads(run("--no-trace", "--quiet", "sub/probe.py", "x", cwd=tree, python=(script,)).stdout) == plain
    safe = json.loads(run("-P", "sub/probe.py", "x", cwd=tree).stdout)
    assert safe["path0"] != plain["path0"]  # -P: no script directory on sys.path
    assert json.loads(ocular_run("--no-trace", "--quiet", "sub/probe.py", "x", cwd=tree,
                                 python=(PYTHON, "-P")).stdout) == safe


def test_exit_codes_system_exit_and_exceptions_are_as_without_ocular(tree):
    cases = [
        ["-c", "import sys; sys.exit(3)"],
        ["-c", "import sys; sys.exit('bye')"],
        ["-c", "raise SystemExit"],
        ["sub/work.py", "10", "fail"],
        ["-c", "def f():\n    1 / 0\nf()"],
        ["-c", "raise KeyboardInterrupt"],
        ["-c", "x = ("],  # a syntax error: nothing runs
    ]
    for args in cases:
        plain = run(*args, cwd=tree)
        under = ocular_run("--no-trace", "--quiet", *args, cwd=tree)
        assert (under.returncode, under.stdout, under.stderr) == (plain.returncode, plain.stdout, plain.stderr), args
    assert run("sub/work.py", "10", "fail", cwd=tree).returncode == 1
    assert "Traceback" in run("sub/work.py", "10", "fail", cwd=tree).stderr


def test_a_failing_program_is_still_reported_and_saved(tree):
    under = ocular_run("--no-trace", "--save", "p.json", "sub/work.py", "10", "fail", cwd=tree)
    assert under.returncode == 1
    assert "ValueError: the program's own error" in under.stderr and "Ocular profile:" in under.stderr
    profile = ocular.load(tree / "p.json")
    assert {"leaf", "branch", "fail", "<module>"} <= {f.qualname for f in profile.functions}
    under = ocular_run("--no-trace", "--quiet", "--save", "q.json", "sub/work.py", "10", "exit", "4", cwd=tree)
    assert under.returncode == 4 and ocular.load(tree / "q.json").functions


def test_no_frame_of_ocular_or_of_a_runner_is_in_the_profile(tree):
    for i, args in enumerate([["sub/work.py"], ["-m", "pkg.probe"], ["-c", "import json; json.dumps([1])"],
                              ["app"]]):
        under = ocular_run("--no-trace", "--threshold", "0", "--save", f"{i}.json", *args, cwd=tree)
        assert under.returncode == 0, under.stderr
        profile = ocular.load(tree / f"{i}.json")
        files = {f.filename for f in profile.functions}
        assert not [f for f in files if f.startswith(OWN_DIR) or "runpy" in f], args
        assert "runpy" not in under.stderr and "cli.py" not in under.stderr
        module = next(f for f in profile.functions if f.qualname == "<module>" and "importlib" not in f.filename)
        assert list(profile.callers(module)) == [None]  # the program's entry: nothing of ours above it


def test_the_programs_threads_are_waited_for_and_traced(tree):
    (tree / "threads.py").write_text(
        "import threading, time\n"
        "def late(n):\n    time.sleep(0.05)\n    return sum(range(n))\n"
        "threading.Thread(target=late, args=(1000,), name='late-worker').start()\n")
    under = ocular_run("--no-trace", "--quiet", "--save", "t.json", "threads.py", cwd=tree)
    assert under.returncode == 0, under.stderr
    profile = ocular.load(tree / "t.json")
    worker = next(t for t in profile.threads if t.name == "late-worker")
    assert [f.calls for f in worker.functions if f.qualname == "late"] == [1]


def test_tracing_options_reach_start_tracing(tree):
    under = ocular_run("--mode", "precise", "--threshold", "0", "--exclude", "leaf", "--exclude", "genexpr",
                       "--max-buffer-mb", "8", "-o", "t.pftrace", "--save", "p.json", "--quiet",
                       "sub/work.py", "20", cwd=tree)
    assert under.returncode == 0, under.stderr
    profile = ocular.load(tree / "p.json")
    assert profile.mode == "precise" and profile.deinstrument_threshold == 0
    names = {f.qualname for f in profile.functions}
    assert "branch" in names and not any("leaf" in n for n in names)
    assert profile.trace_path == str(tree / "t.pftrace") and (tree / "t.pftrace").stat().st_size > 0
    ocular_run("--include-only", "leaf", "--include-only", "branch", "--output", "u.json", "--save", "p.json",
               "--quiet", "sub/work.py", cwd=tree)
    profile = ocular.load(tree / "p.json")
    assert {f.qualname for f in profile.functions} == {"leaf", "branch", "leaf.<locals>.<genexpr>"}
    assert (tree / "u.json").exists() and not (tree / "ocular_trace.json").exists()
    ocular_run("--save", "p.json", "--quiet", "sub/work.py", cwd=tree)  # the defaults
    profile = ocular.load(tree / "p.json")
    assert profile.mode == "adaptive" and profile.deinstrument_threshold == 500
    assert profile.trace_path == str(tree / "ocular_trace.json") and (tree / "ocular_trace.json").exists()
    os.unlink(tree / "ocular_trace.json")
    ocular_run("--no-trace", "--save", "p.json.gz", "--quiet", "sub/work.py", cwd=tree)
    assert ocular.load(tree / "p.json.gz").trace_path is None and not (tree / "ocular_trace.json").exists()


def test_max_buffer_mb_is_passed_on(tree, monkeypatch, capsys):
    seen = {}
    real = ocular.start_tracing

    def spy(**options):
        seen.update(options)
        real(**options)

    monkeypatch.setattr(ocular, "start_tracing", spy)
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    monkeypatch.setattr(sys, "path", sys.path[:])
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    assert cli.main(["--no-trace", "--quiet", "--max-buffer-mb", "3", "--threshold", "7", "-c", "x = 1"]) == 0
    assert seen == {"mode": "adaptive", "perfetto": False, "deinstrument_threshold": 7, "exclude": None,
                    "include_only": None, "output": os.path.abspath("ocular_trace.json"), "max_buffer_mb": 3,
                    "subprocesses": False}


def test_in_process_main_gives_back_the_callers_main_module(tmp_path, monkeypatch):
    """The program runs as __main__; once main() returns or the program's
    SystemExit leaves it, the caller's own __main__ is back (a later
    multiprocessing spawn would otherwise re-run the program in each child)."""
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    monkeypatch.setattr(sys, "path", sys.path[:])
    caller = sys.modules["__main__"]
    script = tmp_path / "prog.py"
    script.write_text("import sys\nassert sys.modules['__main__'].__dict__ is globals()\n")
    assert cli.main(["--no-trace", "--quiet", str(script)]) == 0
    assert sys.modules["__main__"] is caller
    with pytest.raises(SystemExit) as exit:
        cli.main(["--no-trace", "--quiet", "-c", "raise SystemExit(3)"])
    assert exit.value.code == 3 and sys.modules["__main__"] is caller


def report_rows(text, title="Hottest functions"):
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_report_options(tree):
    under = ocular_run("--no-trace", "--threshold", "0", "--report", "2", "--sort", "calls", "sub/work.py", cwd=tree)
    assert under.stdout.strip() == str(sum(i * i for i in range(100)) + sum(i * i for i in range(50)))
    assert "Hottest functions (by calls)" in under.stderr
    rows = report_rows(under.stderr)
    assert len(rows) == 2 and int(rows[0][4]) >= int(rows[1][4])
    assert len(report_rows(ocular_run("--no-trace", "--limit", "1", "sub/work.py", cwd=tree).stderr)) == 1
    threaded = ocular_run("--no-trace", "--thread", "MainThread", "sub/work.py", cwd=tree)
    assert "Ocular profile of thread MainThread" in threaded.stderr
    quiet = ocular_run("--no-trace", "--quiet", "sub/work.py", cwd=tree)
    assert quiet.stderr == "" and quiet.stdout.strip() == under.stdout.strip()
    version = ocular_run("--version", cwd=tree)
    assert version.returncode == 0 and version.stdout.strip() == f"ocular {ocular.__version__}"


def test_every_option_has_one_line_of_help(tree):
    out = ocular_run("--help", cwd=tree)
    assert out.returncode == 0
    parser = cli._run_parser("python -m ocular")
    for action in parser._actions:
        assert action.help and "\n" not in action.help, action.option_strings
        for option in action.option_strings:
            assert option in out.stdout
    for command in ("report", "annotate"):
        text = ocular_run(command, "--help", cwd=tree)
        assert text.returncode == 0 and "SAVED" in text.stdout
    merge = ocular_run("merge", "--help", cwd=tree)
    assert merge.returncode == 0 and "OUTPUT" in merge.stdout and "TRACE" in merge.stdout
    # the epilog names every subcommand with the program's name filled in
    epilog = " ".join(out.stdout.split())
    assert "{prog}" not in out.stdout and all(f"{prog} {word}" in epilog for prog in ["python -m ocular"]
                                              for word in ("report SAVED", "annotate SAVED", "merge OUTPUT"))


USAGE_ERRORS = {
    "a bad mode": (["--mode", "fast", "sub/work.py"], ["--mode", "fast"]),
    "a negative threshold": (["--threshold", "-1", "sub/work.py"], ["--threshold", "-1"]),
    "a threshold that is not a number": (["--threshold", "many", "sub/work.py"], ["--threshold", "many"]),
    "a zero buffer": (["--max-buffer-mb", "0", "sub/work.py"], ["--max-buffer-mb", "0"]),
    "negative rows": (["--report", "-3", "sub/work.py"], ["--report", "-3"]),
    "a bad sort": (["--sort", "speed", "sub/work.py"], ["--sort", "speed"]),
    "a bad trace suffix": (["-o", "trace.txt", "sub/work.py"], ["-o/--output", "trace.txt"]),
    "a save directory that is missing": (["--save", "nowhere/p.json", "sub/work.py"], ["--save", "nowhere"]),
    "an unknown option": (["--bogus", "sub/work.py"], ["--bogus"]),
    "no program": (["--no-trace"], ["no program"]),
    "-m without a module": (["-m"], ["-m"]),
    "a missing script": (["missing.py"], ["missing.py", "No such file"]),
    "a missing module": (["-m", "no_such_module_here"], ["no_such_module_here"]),
    "a directory without __main__": (["sub"], ["__main__", "sub"]),
    "report of a missing file": (["report", "missing.json"], ["missing.json"]),
    "report of a file that is not a profile": (["report", "sub/work.py"], ["sub/work.py", "not a profile"]),
    "report with a bad sort": (["report", "missing.json", "--sort", "x"], ["--sort"]),
    "annotate without a target": (["annotate", "missing.json"], ["TARGET"]),
}


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS))
def test_usage_errors_exit_2_before_anything_runs(tree, case):
    args, words = USAGE_ERRORS[case]
    under = ocular_run(*args, cwd=tree)
    assert under.returncode == 2, under.stderr
    for word in words:
        assert word in under.stderr
    assert under.stdout == "" and "Traceback" not in under.stderr
    assert not (tree / "ocular_trace.json").exists()  # nothing was hooked: no trace was opened


@pytest.fixture
def saved(tree):
    under = ocular_run("--no-trace", "--threshold", "0", "--quiet", "--save", "p.json", "sub/work.py", cwd=tree)
    assert under.returncode == 0, under.stderr
    return tree / "p.json"


def test_report_and_annotate_read_a_saved_profile(tree, saved, monkeypatch):
    profile = ocular.load(saved)
    monkeypatch.chdir(tree)  # paths are shown relative to the working directory
    out = ocular_run("report", "p.json", "--sort", "inclusive", "--report", "3", cwd=tree)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.rstrip("\n") == profile.report(3, sort="inclusive").rstrip("\n")
    out = ocular_run("report", "p.json", "--thread", "MainThread", cwd=tree)
    assert out.stdout.startswith("Ocular profile of thread MainThread")
    out = ocular_run("report", "p.json", "--callers", "leaf", "--callees", "branch", cwd=tree)
    assert out.returncode == 0
    assert "Callers of leaf" in out.stdout and "Callees of branch" in out.stdout
    assert [row for row in out.stdout.splitlines() if row.split()[:1] == ["2"] and " branch " in row]
    out = ocular_run("annotate", "p.json", "branch", cwd=tree)
    assert out.returncode == 0 and "def branch(n):" in out.stdout and "return leaf(n) + leaf(n // 2)" in out.stdout
    out = ocular_run("annotate", "p.json", "sub/work.py", cwd=tree)
    assert out.returncode == 0 and all(line in out.stdout for line in WORK.splitlines() if line)
    for args, word in ((["annotate", "p.json", "nothing_like_it"], "nothing_like_it"),
                       (["report", "p.json", "--thread", "nobody"], "nobody"),
                       (["report", "p.json", "--callers", "nothing_like_it"], "nothing_like_it")):
        out = ocular_run(*args, cwd=tree)
        assert out.returncode == 2 and word in out.stderr


@pytest.fixture
def fake_format(monkeypatch, tmp_path):
    """A format registered in ocular.export.FORMATS for this test only."""
    written = []
    module = types.ModuleType("ocular.export._test_fake")

    def write(profile, path, **options):
        written.append((profile, path, options))
        with open(path, "w") as file:
            file.write(f"fake: {len(profile.functions)} functions\n")

    module.write = write
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(export.FORMATS, "fake_fmt", ("_test_fake", "a format of this test"))
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    monkeypatch.setattr(sys, "path", sys.path[:])
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    return written


def test_each_export_format_is_an_option(fake_format, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "--fake-fmt PATH" in capsys.readouterr().out
    out = tmp_path / "run.fake"
    assert cli.main(["--no-trace", "--quiet", "--fake-fmt", str(out), "-c", "def f(): pass\nf()"]) == 0
    assert out.read_text() == "fake: 2 functions\n" and len(fake_format) == 1
    assert fake_format[0][2] == {"quiet": True}  # --quiet silences the export's progress too
    profile = fake_format[0][0]
    profile.save(tmp_path / "p.json")
    again = tmp_path / "again.fake"
    assert cli.main(["report", str(tmp_path / "p.json"), "--quiet", "--fake-fmt", str(again)]) == 0
    assert fake_format[1][0] == profile and again.read_text() == out.read_text()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", str(tmp_path / "p.json"), "--fake-fmt", str(tmp_path / "no" / "x")])
    assert exit_info.value.code == 2


def test_the_real_registry_gives_an_option_per_format():
    parser = cli._run_parser("ocular")
    options = {option for action in parser._actions for option in action.option_strings}
    assert {f"--{name.replace('_', '-')}" for name in export.FORMATS} <= options
