"""Profiling a program's child processes: start_tracing(subprocesses=True),
the command line's --subprocesses.

A child forked while tracing (os.fork, multiprocessing's "fork") starts a run
of its own in Ocular's after-fork hook. A new interpreter (multiprocessing's
"spawn" and "forkserver", subprocess running Python) starts one from
_child/sitecustomize.py, which the parent puts first on its children's
PYTHONPATH; the options travel in the OCULAR_SUBPROCESSES variable. Each child
saves its profile (and its trace, when the parent writes one) beside the
parent's output, named `<stem>.<run token>-<pid>.ocular.json`; grandchildren
do the same. The parent's Profile.subprocesses lists the files there when it
stops (a child still running then is not in it); a child's lists none.
ocular.merge_traces makes one trace of the parent's and the children's
(family_traces names them; the command line writes `<stem>.merged<suffix>`).

A child's run ends at its interpreter's exit (atexit) or, for a child that
multiprocessing forked (it leaves through os._exit), at multiprocessing's exit
handlers. A child that calls os._exit itself saves nothing; an interpreter
started with -E or -I ignores PYTHONPATH and runs unprofiled.
"""

import atexit
import glob
import json
import os
import sys
import time

ENV = "OCULAR_SUBPROCESSES"
_CHILD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child")
PROFILE_SUFFIX = ".ocular.json"


def _split_output(output):
    """(absolute stem, trace suffix) of the parent's trace path, or of a
    profile beside the working directory when it writes no trace."""
    from . import TRACE_SUFFIXES   # ocular imports this module first

    if output is None:
        return os.path.abspath("ocular_profile"), None
    path = os.path.abspath(os.fspath(output))
    compressed = ".gz" if path.endswith(".gz") else ""
    bare = path[: len(path) - len(compressed)]
    for suffix in TRACE_SUFFIXES:
        if bare.endswith(suffix):
            return bare[: -len(suffix)], suffix + compressed
    return bare, compressed


class Family:
    """The children's side of one profiled run: where they write, what they
    run with, and what the parent's environment held before."""

    def __init__(self, config, saved_env=None):
        self.config = config
        self.saved_env = saved_env

    def child_paths(self, pid):
        """(profile path, trace path or None) of the child `pid`."""
        config = self.config
        base = f"{config['stem']}.{config['token']}-{pid}"
        trace = base + config["trace_suffix"] if config["trace_suffix"] is not None else None
        return base + PROFILE_SUFFIX, trace

    def written(self):
        pattern = f"{glob.escape(self.config['stem'])}.{self.config['token']}-*{PROFILE_SUFFIX}"
        return tuple(sorted(glob.glob(pattern)))


def family_traces(profile):
    """[the parent's trace, then each child's that exists] of a run that
    profiled its children and wrote a trace (for ocular.merge_traces), and
    the path the command line writes their merge to: `<stem>.merged<suffix>`.
    ([], None) when the run wrote no trace."""
    if not profile.trace_path:
        return [], None
    stem, suffix = _split_output(profile.trace_path)
    children = [path[: -len(PROFILE_SUFFIX)] + suffix for path in profile.subprocesses
                if path.endswith(PROFILE_SUFFIX)]
    traces = [profile.trace_path] + [path for path in children if os.path.exists(path)]
    return traces, f"{stem}.merged{suffix}"


def arm(options, output):
    """Called by start_tracing: children of this process will be profiled
    with `options` (start_tracing's, less output). -> Family."""
    stem, trace_suffix = _split_output(output if options.get("perfetto") else None)
    config = {"token": f"{os.getpid():x}{time.time_ns() & 0xFFFFFF:06x}", "stem": stem,
              "trace_suffix": trace_suffix, "options": options}
    saved = {name: os.environ.get(name) for name in (ENV, "PYTHONPATH")}
    os.environ[ENV] = json.dumps(config)
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _CHILD_DIR + (os.pathsep + path if path else "")
    return Family(config, saved)


def disarm(family):
    """Called by stop_tracing: the environment as it was; -> the children's
    saved profiles found (the run's first process names them all: a child's
    own children share its name, and its siblings too)."""
    if family.saved_env is None:
        return ()
    for name, value in family.saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return family.written()


def start_child(family):
    """Profile this process, a child of the run `family` belongs to; it saves
    at exit. Never raises: a child that cannot be profiled runs as it is."""
    import ocular

    profile_path, trace_path = family.child_paths(os.getpid())
    options = dict(family.config["options"])
    if trace_path is not None:
        options["output"] = trace_path
    try:
        ocular.start_tracing(**options)
    except Exception as error:  # noqa: BLE001  (e.g. no tool id free in the child)
        sys.stderr.write(f"ocular: child process {os.getpid()} is not profiled: {error}\n")
        return
    ocular._run.family = Family(family.config)  # its own children too; the environment is inherited
    done, owner = [], os.getpid()

    def finish():
        # once, and only here: a process this one forks inherits the handler
        if done or os.getpid() != owner:
            return
        done.append(True)
        profile = ocular.stop_tracing()
        if profile is not None:
            try:
                profile.save(profile_path)
            except OSError as error:
                sys.stderr.write(f"ocular: child process {os.getpid()}: {error}\n")

    atexit.register(finish)
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        # A child multiprocessing forked leaves through os._exit, after its
        # exit handlers; it clears the ones inherited first, then runs its
        # after-fork callbacks, so the handler is added from one of those.
        util.register_after_fork(ocular._run.family,
                                 lambda _family: util.Finalize(None, finish, exitpriority=100))


def start_spawned_child():
    """From _child/sitecustomize.py, in a new interpreter."""
    raw = os.environ.get(ENV)
    if not raw:
        return
    try:
        config = json.loads(raw)
    except ValueError:
        return
    start_child(Family(config))
