"""Builds ocular._engine. Set OCULAR_STRICT=1 for -Werror (CI does) and
OCULAR_SANITIZE=1 for an AddressSanitizer/UBSan build."""
import glob
import os
import sys

from setuptools import Extension, setup

if sys.version_info < (3, 12):
    sys.exit(
        "Ocular needs CPython 3.12 or newer: it is built on sys.monitoring (PEP 669). "
        f"This interpreter is {sys.version.split()[0]} ({sys.executable})."
    )

compile_args = ["-std=c11", "-O2", "-Wall", "-Wextra", "-fvisibility=hidden"]
link_args = []
if os.environ.get("OCULAR_STRICT"):
    compile_args.append("-Werror")
if os.environ.get("OCULAR_SANITIZE"):
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    compile_args += sanitize + ["-O1", "-g"]
    link_args += sanitize

ENGINE = "src/ocular/_engine/"
# The data path: bindings, hot path, per-code data, filters, clock, per-thread
# stacks, then the trace export pipeline.
sources = ["module.c", "monitor.c", "frames.c", "calltree.c", "codeinfo.c", "filter.c", "clock.c",
           "tstate.c", "phase.c", "calibrate.c", "sampler.c", "breaker.c", "stacks.c", "collect.c", "retired.c",
           "monitor_test.c"]
sources += ["buffers.c", "writer.c", "json.c", "pftrace.c", "sink.c"]
if os.path.exists(ENGINE + "_trace_stub.c"):  # local development only, never committed
    sources[-5:] = ["_trace_stub.c"]

engine = Extension(
    "ocular._engine",
    sources=[ENGINE + name for name in sources],
    depends=sorted(glob.glob("src/ocular/_engine/*.h")),
    define_macros=[("_GNU_SOURCE", "1")],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    libraries=["z", "pthread"],
)

setup(ext_modules=[engine])
