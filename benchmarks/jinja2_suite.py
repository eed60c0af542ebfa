"""A real test suite as a workload: jinja2's tests, from its PyPI sdist, run
in-process with pytest.main (as a user profiling their test suite would).

fetch(cache) downloads the sdist of the jinja2 version installed in this
interpreter (pip download --no-binary), unpacks it under `cache` and returns
the directory holding its tests/. prepare(root, selection) returns run(),
which runs the suite (or the `selection`, a path under root) and fails if a
test fails: a profiler that breaks the suite has no overhead to report.
"""

import contextlib
import glob
import io
import os
import subprocess
import sys
import tarfile
from importlib import metadata


def fetch(cache):
    version = metadata.version("jinja2")
    root = os.path.join(cache, f"jinja2-{version}")
    if os.path.isdir(os.path.join(root, "tests")):
        return root
    os.makedirs(cache, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"jinja2=={version}", "-d", cache], check=True)
    archives = glob.glob(os.path.join(cache, f"[jJ]inja2-{version}.tar.gz"))
    if not archives:
        raise SystemExit(f"pip download left no jinja2-{version} sdist in {cache}")
    with tarfile.open(archives[0]) as archive:
        archive.extractall(cache, filter="data")
    if not os.path.isdir(os.path.join(root, "tests")):
        raise SystemExit(f"the jinja2 {version} sdist has no tests/ (looked in {root})")
    return root


def prepare(root, selection=None):
    import pytest  # imported here, before the run: the suite is what is timed

    target = os.path.join(root, selection or "tests")
    arguments = ["-q", "-p", "no:cacheprovider", "-x", target]

    def run():
        previous = os.getcwd()
        os.chdir(root)
        try:
            with contextlib.redirect_stdout(io.StringIO()) as output:
                code = pytest.main(arguments)
        finally:
            os.chdir(previous)
        if code != 0:
            raise SystemExit(f"jinja2's tests failed (pytest exit {code}):\n{output.getvalue()[-3000:]}")

    return run


def version():
    return metadata.version("jinja2")
