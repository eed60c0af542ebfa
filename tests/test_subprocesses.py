"""start_tracing(subprocesses=True) and --subprocesses: children forked,
spawned by multiprocessing, or run by subprocess are profiled, each saves its
profile, and the parent's Profile.subprocesses names them. Each program runs
in a fresh interpreter (its own environment and multiprocessing state)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import ocular

HERE = os.path.dirname(os.path.abspath(__file__))

PROGRAM = """
import json, multiprocessing, os, subprocess, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork with the writer thread alive
import ocular

def child_work(n):
    total = 0
    for i in range(n):
        total += i
    return total

def target(n, queue):
    queue.put(child_work(n))

def parent_work():
    return sum(range(1000))

if __name__ == "__main__":
    how = sys.argv[1]
    ocular.start_tracing(deinstrument_threshold=0, subprocesses=True, **json.loads(sys.argv[2]))
    parent_work()
    if how == "subprocess":
        code = "import sys; sys.path.insert(0, %r); import child_module; child_module.main(3)" % os.getcwd()
        result = subprocess.run([sys.executable, *sys.argv[3:], "-c", code], capture_output=True, text=True)
        outcome = (result.returncode, result.stdout, result.stderr)
    elif how == "fork":
        pid = os.fork()
        if pid == 0:
            child_work(5000)
            sys.exit(0)
        outcome = os.waitpid(pid, 0)[1]
    else:
        context = multiprocessing.get_context(how.split(":")[1])
        queue = context.Queue()
        process = context.Process(target=target, args=(20000, queue))
        process.start()
        got = queue.get(timeout=60)
        process.join(60)
        outcome = (process.exitcode, got)
    profile = ocular.stop_tracing()
    print(json.dumps({"children": list(profile.subprocesses), "outcome": outcome,
                      "parent_functions": sorted(f.qualname for f in profile.functions),
                      "env": [os.environ.get("PYTHONPATH"), os.environ.get("OCULAR_SUBPROCESSES")],
                      "report": profile.report(0)}))
"""

CHILD_MODULE = """
def work(n):
    return sum(i * i for i in range(n))

def main(times):
    for _ in range(times):
        work(1000)
    print("child ran")
"""


def run(tmp_path, how, *extra, options=None, env=None):
    (tmp_path / "program.py").write_text(textwrap.dedent(PROGRAM))
    (tmp_path / "child_module.py").write_text(textwrap.dedent(CHILD_MODULE))
    environment = dict(os.environ, **(env or {}))
    environment.pop("OCULAR_SUBPROCESSES", None)
    result = subprocess.run([sys.executable, "program.py", how, json.dumps(options or {"perfetto": False}), *extra],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, env=environment)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "ocular" not in result.stderr.lower(), result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def calls(profile, qualname):
    return sum(f.calls for f in profile.functions if f.qualname == qualname)


@pytest.mark.parametrize("how", ["multiprocessing:fork", "multiprocessing:spawn", "multiprocessing:forkserver"])
def test_multiprocessing_children_save_their_profiles(tmp_path, how):
    got = run(tmp_path, how)
    assert got["outcome"] == [0, sum(range(20000))]
    assert len(got["children"]) == 1
    child = ocular.load(got["children"][0])
    assert os.path.dirname(got["children"][0]) == str(tmp_path)
    assert calls(child, "child_work") == calls(child, "target") == 1
    assert child.deinstrument_threshold == 0 and child.mode == "adaptive"
    assert "child_work" not in got["parent_functions"] and "parent_work" in got["parent_functions"]
    assert got["env"] == [None, None]  # the parent's environment as it was
    assert "1 child process profiled" in got["report"]


def test_a_forked_child_that_exits_normally_saves_its_profile(tmp_path):
    got = run(tmp_path, "fork")
    assert got["outcome"] == 0
    (path,) = got["children"]
    assert calls(ocular.load(path), "child_work") == 1


def test_python_run_by_subprocess_is_profiled_with_a_trace_beside_the_parents(tmp_path):
    got = run(tmp_path, "subprocess", options={"perfetto": True, "output": "parent.pftrace"})
    returncode, stdout, stderr = got["outcome"]
    assert returncode == 0 and stdout == "child ran\n" and stderr == ""
    (path,) = got["children"]
    child = ocular.load(path)
    assert calls(child, "work") == 3 and calls(child, "main") == 1
    assert child.subprocesses == ()  # the run's first process names them all
    # no frame of Ocular's own start-up code in the child's profile
    assert not [f for f in child.functions if "ocular" in f.filename.replace(HERE, "")]
    assert child.trace_path and child.trace_path.endswith(".pftrace") and os.path.exists(child.trace_path)
    assert os.path.basename(child.trace_path).startswith("parent.") and child.trace_path != path
    assert os.path.exists(tmp_path / "parent.pftrace")


def test_a_child_that_ignores_pythonpath_runs_unprofiled(tmp_path):
    got = run(tmp_path, "subprocess", "-E")
    returncode, stdout, stderr = got["outcome"]
    assert (returncode, stdout, stderr) == (0, "child ran\n", "")
    assert got["children"] == []


def test_the_childrens_own_sitecustomize_still_runs(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['SITE_RAN'] = 'yes'\n")
    (tmp_path / "child_module.py").write_text("")
    got = run(tmp_path, "subprocess", env={"PYTHONPATH": str(site)})
    returncode, stdout, stderr = got["outcome"]
    assert returncode == 0 and stderr == ""
    assert got["env"][0] == str(site)  # restored
    assert len(got["children"]) == 1


def test_children_are_not_profiled_unless_asked(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent("""
        import subprocess, sys, ocular
        ocular.start_tracing(perfetto=False)
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        print(ocular.stop_tracing().subprocesses)
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.stdout.strip() == "()" and result.returncode == 0
    assert not list(tmp_path.glob("*.ocular.json"))


def test_subprocesses_must_be_a_bool_and_nothing_is_hooked():
    with pytest.raises(TypeError, match="subprocesses must be True or False"):
        ocular.start_tracing(perfetto=False, subprocesses="yes")
    assert ocular.stop_tracing() is None
    assert "OCULAR_SUBPROCESSES" not in os.environ


def test_the_command_line_takes_subprocesses(tmp_path):
    (tmp_path / "child_module.py").write_text(textwrap.dedent(CHILD_MODULE))
    (tmp_path / "main.py").write_text(textwrap.dedent(f"""
        import subprocess, sys
        code = "import sys; sys.path.insert(0, {str(tmp_path)!r}); import child_module; child_module.main(2)"
        subprocess.run([sys.executable, "-c", code], check=True)
    """))
    result = subprocess.run([sys.executable, "-m", "ocular", "--no-trace", "--subprocesses", "--threshold", "0",
                             "main.py"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "child ran\n"
    assert "1 child process profiled" in result.stderr
    (path,) = tmp_path.glob("ocular_profile.*.ocular.json")
    assert calls(ocular.load(path), "work") == 2
