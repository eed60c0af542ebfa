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


# ---- one trace of every process: ocular.merge_traces, `ocular merge` --------------------

def _events_by_track(trace):
    return {track: len(events) for track, events in trace.events.items()}


@pytest.mark.parametrize("suffix", [".pftrace", ".json"])
def test_the_parents_and_childs_traces_merge_into_one_of_both_processes(tmp_path, suffix):
    import tracecheck

    got = run(tmp_path, "subprocess", options={"perfetto": True, "output": "parent" + suffix})
    (child_profile,) = got["children"]
    parent_path, child_path = str(tmp_path / ("parent" + suffix)), ocular.load(child_profile).trace_path
    parent, child = tracecheck.load(parent_path), tracecheck.load(child_path)
    assert parent.pid != child.pid
    merged_path = str(tmp_path / ("all" + suffix))
    assert ocular.merge_traces(merged_path, [parent_path, child_path]) == 2
    merged = tracecheck.load(merged_path, processes=True)
    assert merged.pids == {parent.pid, child.pid}
    # Every track of either file is in the merge, with all of its events, and
    # still nests as Perfetto stacks slices.
    expected = _events_by_track(parent)
    assert not set(expected) & set(_events_by_track(child))  # tracks of their own
    expected.update(_events_by_track(child))
    assert _events_by_track(merged) == expected
    assert len(tracecheck.check_nesting(merged)) == len(tracecheck.check_nesting(parent)) + len(
        tracecheck.check_nesting(child))
    assert merged.thread_names == {**parent.thread_names, **child.thread_names}
    with pytest.raises(tracecheck.TraceError):  # one process per file, as the writer makes them
        tracecheck.load(merged_path)
    if suffix == ".pftrace":
        # Bytes put end to end share sequence ids: the checker (like Perfetto,
        # which would mix the two writers' interned names) refuses that.
        (tmp_path / "concatenated.pftrace").write_bytes(
            (tmp_path / "parent.pftrace").read_bytes() + open(child_path, "rb").read())
        with pytest.raises(tracecheck.TraceError, match="CLEARED twice"):
            tracecheck.load(tmp_path / "concatenated.pftrace", processes=True)


def test_merge_traces_reads_gzip_and_a_trace_cut_short(tmp_path):
    import gzip

    import tracecheck

    got = run(tmp_path, "subprocess", options={"perfetto": True, "output": "parent.json"})
    child_path = ocular.load(got["children"][0]).trace_path
    with open(child_path, "rb") as f:
        whole = f.read()
    cut = tmp_path / "child-cut.json.gz"
    with gzip.open(cut, "wb") as f:
        f.write(whole[: whole.index(b"\n{", len(whole) // 2) + 7])  # inside an event
    assert ocular.merge_traces(tmp_path / "all.json.gz", [tmp_path / "parent.json", cut]) == 2
    merged = tracecheck.load(tmp_path / "all.json.gz", processes=True)
    alone = tracecheck.load(cut, tolerant=True)
    assert alone.truncated
    child_tracks = {track: events for track, events in merged.events.items() if track in alone.events}
    assert {t: len(e) for t, e in child_tracks.items()} == _events_by_track(alone)
    tracecheck.check_nesting(merged, allow_open=True)  # the cut child's slices stay open


def test_merge_traces_refuses_bad_arguments_naming_them(tmp_path):
    got = run(tmp_path, "subprocess", options={"perfetto": True, "output": "parent.pftrace"})
    parent, child = str(tmp_path / "parent.pftrace"), ocular.load(got["children"][0]).trace_path
    with pytest.raises(TypeError, match="output must be a path"):
        ocular.merge_traces(3, [parent])
    with pytest.raises(TypeError, match="traces must be a list of paths"):
        ocular.merge_traces("all.pftrace", parent)
    with pytest.raises(ValueError, match="output must end in one of .json, .pftrace"):
        ocular.merge_traces(str(tmp_path / "all.txt"), [parent])
    with pytest.raises(ValueError, match="one format"):
        ocular.merge_traces(str(tmp_path / "all.json"), [parent, child])
    with pytest.raises(ValueError, match="also one of traces"):
        ocular.merge_traces(parent, [parent, child])
    with pytest.raises(ValueError, match="at least one"):
        ocular.merge_traces(str(tmp_path / "all.pftrace"), [])
    copy = tmp_path / "copy.pftrace"
    copy.write_bytes(open(parent, "rb").read())
    with pytest.raises(ValueError, match="both of pid"):
        ocular.merge_traces(str(tmp_path / "all.pftrace"), [parent, copy])
    (tmp_path / "not.pftrace").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a Perfetto trace"):
        ocular.merge_traces(str(tmp_path / "all.pftrace"), [parent, tmp_path / "not.pftrace"])
    with pytest.raises(OSError, match="missing.pftrace"):
        ocular.merge_traces(str(tmp_path / "all.pftrace"), [parent, tmp_path / "missing.pftrace"])
    assert not (tmp_path / "all.pftrace").exists()  # nothing written on any error


def test_the_command_line_merges_the_childrens_traces_and_merges_on_request(tmp_path):
    import tracecheck

    (tmp_path / "child_module.py").write_text(textwrap.dedent(CHILD_MODULE))
    (tmp_path / "main.py").write_text(textwrap.dedent(f"""
        import subprocess, sys
        code = "import sys; sys.path.insert(0, {str(tmp_path)!r}); import child_module; child_module.main(2)"
        for _ in range(2):
            subprocess.run([sys.executable, "-c", code], check=True)
    """))
    result = subprocess.run([sys.executable, "-m", "ocular", "-o", "run.pftrace", "--subprocesses", "--threshold",
                             "0", "main.py"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 child processes profiled" in result.stderr
    assert "the traces of 3 processes merged into" in result.stderr
    merged = tracecheck.load(tmp_path / "run.merged.pftrace", processes=True)
    children = sorted(tmp_path.glob("run.*-*.pftrace"))
    assert len(children) == 2
    assert merged.pids == {tracecheck.load(tmp_path / "run.pftrace").pid} | {tracecheck.load(p).pid for p in children}
    again = subprocess.run([sys.executable, "-m", "ocular", "merge", "again.pftrace", "run.pftrace", *map(str, children)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "the traces of 3 processes merged into again.pftrace" in again.stdout
    assert (tmp_path / "again.pftrace").read_bytes() == (tmp_path / "run.merged.pftrace").read_bytes()
    bad = subprocess.run([sys.executable, "-m", "ocular", "merge", "again.json", "run.pftrace"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert bad.returncode == 2 and "merge: error: traces and output must be of one format" in bad.stderr
