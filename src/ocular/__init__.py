"""Ocular: a tracing profiler for CPython 3.12+ that measures cycles per basic
block (adaptive mode) or per bytecode instruction (precise mode).

    import ocular
    ocular.start_tracing()
    ...
    profile = ocular.stop_tracing()
    print(profile.report())

Ocular registers as a sys.monitoring tool (id 2 if free, else 3, else 4; it
never takes another tool's id). Starting and stopping call
``sys.monitoring.restart_events()``, which is interpreter-wide: it re-arms the
sites every tool has DISABLEd, not only Ocular's.

PYTEST_DONT_REWRITE: this marker keeps pytest from rewriting Ocular's
asserts. pytest marks every top-level module of a distribution that has a
pytest plugin (ours: ocular_pytest) for rewriting, and when such a module is
already imported, as Ocular is in a program that calls start_tracing() before
pytest.main(), it warns; under `-W error` (many projects' setting) that warning
fails the suite being profiled.
"""

import sys

if sys.version_info < (3, 12):
    raise ImportError(
        "ocular needs CPython 3.12 or newer: it is built on sys.monitoring (PEP 669), "
        f"and this interpreter is {sys.version.split()[0]} ({sys.executable})."
    )

import atexit
import dataclasses
import os
import threading
import time
import warnings

from . import _calibration, _engine, _opcodes, _testclock
from . import subprocesses as _subprocesses
from ._build import Graveyard, adaptive_bytecodes, build_profile
from ._profile import (
    BlockStats,
    CallStats,
    FunctionStats,
    InstructionStats,
    LineStats,
    Profile,
    SiteStats,
    ThreadStats,
)

__all__ = [
    "start_tracing",
    "stop_tracing",
    "is_tracing",
    "Profile",
    "FunctionStats",
    "BlockStats",
    "LineStats",
    "InstructionStats",
    "SiteStats",
    "CallStats",
    "ThreadStats",
    "tracing",
    "profile",
    "load",
    "merge_traces",
]
__version__ = "0.1.0"

MODES = ("adaptive", "precise")
TRACE_DETAILS = ("blocks", "functions")
TRACE_SUFFIXES = (".json", ".pftrace", ".perfetto-trace")
TOOL_IDS = (2, 3, 4)  # PROFILER_ID, then the two ids CPython leaves unassigned
TOOL_NAME = "ocular"
MAX_BUFFER_MB = 1 << 20  # 1 TiB of trace buffers
_EXACT_EXCEPTION_EVENTS = ("RAISE", "RERAISE", "EXCEPTION_HANDLED")
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

from .tracemerge import merge_traces  # noqa: E402  (it reads TRACE_SUFFIXES above)

_engine.set_opcode_table(*_opcodes.opcode_table())

# Recalibration period during a run: often where every event is traced (the
# correction is most of each figure there), rarely where sites are DISABLEd.
_REFRESH_MS = {True: _calibration.REFRESH_MS, False: 5 * _calibration.REFRESH_MS}


class _Run:
    """What one start_tracing() call installed, so stop can undo exactly that."""

    def __init__(self, mode, threshold, tool, callbacks, output):
        self.mode = mode
        self.threshold = threshold
        self.tool = tool
        self.callbacks = callbacks
        self.output = output
        self.hooked = False
        self.calibrator = None
        self.calibration_ms = 0.0
        self.sample_interval_ms = None
        self.window_ms = None
        self.graveyard = Graveyard()
        self.registry_seen = 0
        self.family = None  # subprocesses.Family when children are profiled too

    def refresh(self):
        """The clock's periodic work, in the main thread at a safe point:
        recalibrate, and release the data of code objects the program dropped
        (a long run that keeps compiling code keeps bounded memory)."""
        self.calibrator.refresh()
        size = _engine.registry_size()
        if size - self.registry_seen >= RETIRE_EVERY:
            self.registry_seen = size
            self.graveyard.take(_engine.retire_dead())


_run = None
_lock = threading.Lock()


def is_tracing():
    """True between a successful start_tracing() and stop_tracing()."""
    return _run is not None


def _check_patterns(name, value):
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} must be None, a str or an iterable of str, not {type(value).__name__}")
    try:
        patterns = list(value)
    except TypeError:
        raise TypeError(
            f"{name} must be None, a str or an iterable of str, not {type(value).__name__}"
        ) from None
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"{name} must contain only str, found {type(pattern).__name__}")
    return patterns


SAMPLE_INTERVAL_MS = 50.0  # default: mean time between sampling windows at threshold > 0
MIN_SAMPLE_INTERVAL_MS = 5.0  # 2 instrumentation-version bumps per window; see _sampling_budget
WINDOW_SHARE = 0.01  # a window is this share of the interval: the overhead's main term
# Shorter windows would be mostly their own switching. Estimates are as good as
# the windows are many (README, limitations): tight loops' hits and calls vary
# by +-25 % between runs at 5 ms intervals (a bias low of 10-45 % was measured
# in earlier sessions); 3 ms windows did not reliably do better, and cost 6x
# the overhead.
MIN_WINDOW_MS = 0.5
WARMUP_MS = 10.0  # the run's start is traced whole: a short run's profile is exact
RETIRE_EVERY = 256  # new code objects between two looks for dead ones


def _check_interval(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"sample_interval_ms must be None (first N hits only) or a number of milliseconds, "
            f"not {type(value).__name__}"
        )
    if not MIN_SAMPLE_INTERVAL_MS <= value <= 60000:
        raise ValueError(
            f"sample_interval_ms must be between {MIN_SAMPLE_INTERVAL_MS:g} and 60000 (or None), not {value!r}"
        )
    return float(value)


def _check_arguments(mode, perfetto, threshold, exclude, include_only, output, max_buffer_mb):
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, not {mode!r}")
    if not isinstance(perfetto, bool):
        raise TypeError(f"perfetto must be True or False, not {type(perfetto).__name__}")
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise TypeError(
            f"deinstrument_threshold must be an int (0 = never de-instrument), not {type(threshold).__name__}"
        )
    if threshold < 0 or threshold > 0xFFFFFFFF:
        raise ValueError(f"deinstrument_threshold must be between 0 and {0xFFFFFFFF}, not {threshold}")
    exclude = _check_patterns("exclude", exclude)
    include_only = _check_patterns("include_only", include_only)
    if isinstance(max_buffer_mb, bool) or not isinstance(max_buffer_mb, int):
        raise TypeError(f"max_buffer_mb must be an int, not {type(max_buffer_mb).__name__}")
    if not 1 <= max_buffer_mb <= MAX_BUFFER_MB:
        # The engine takes the bound in bytes as a 64-bit count: a larger
        # value would wrap around to a small bound and drop the whole trace.
        raise ValueError(f"max_buffer_mb must be between 1 and {MAX_BUFFER_MB}, not {max_buffer_mb}")
    if not perfetto:
        return exclude, include_only, None
    if not isinstance(output, (str, os.PathLike)):
        raise TypeError(f"output must be a path (str or os.PathLike), not {type(output).__name__}")
    output = os.fspath(output)
    if not isinstance(output, str):
        raise TypeError("output must be a str path")
    base = output[:-3] if output.endswith(".gz") else output
    if not base.endswith(TRACE_SUFFIXES):
        raise ValueError(
            f"output must end in one of {', '.join(TRACE_SUFFIXES)} (optionally followed by .gz), "
            f"not {output!r}"
        )
    return exclude, include_only, os.path.abspath(output)


def _acquire_tool_id():
    monitoring = sys.monitoring
    for tool in TOOL_IDS:
        if monitoring.get_tool(tool) is None:
            try:
                monitoring.use_tool_id(tool, TOOL_NAME)
                return tool
            except ValueError:  # taken by another thread in between
                continue
    holders = ", ".join(f"{tool} by {monitoring.get_tool(tool)!r}" for tool in TOOL_IDS)
    raise RuntimeError(
        f"no sys.monitoring tool id is free for Ocular: ids {holders} are held. "
        "Ocular only uses ids 2-4 and never evicts another tool; stop one of them first."
    )


def _events_mask(callbacks):
    mask = 0
    for name in callbacks:
        mask |= getattr(sys.monitoring.events, name)
    return mask


def _hook(run):
    monitoring = sys.monitoring
    for name, callback in run.callbacks.items():
        monitoring.register_callback(run.tool, getattr(monitoring.events, name), callback)
    run.hooked = True
    monitoring.set_events(run.tool, _events_mask(run.callbacks))
    # Sites DISABLEd by an earlier run stay disabled through set_events for
    # code that did not run in between; only restart_events() re-arms them.
    monitoring.restart_events()


def _unhook(run):
    """Undo _hook and free the tool id; tolerant of a partial hook."""
    monitoring = sys.monitoring
    if monitoring.get_tool(run.tool) != TOOL_NAME:
        return
    if run.hooked:
        monitoring.set_events(run.tool, 0)
        for name in run.callbacks:
            monitoring.register_callback(run.tool, getattr(monitoring.events, name), None)
        # Ocular sets no local events; DISABLEd sites are per tool and are
        # re-armed for everybody by this interpreter-wide call.
        monitoring.restart_events()
    monitoring.free_tool_id(run.tool)


def start_tracing(
    mode="adaptive",
    perfetto=True,
    deinstrument_threshold=500,
    exclude=None,
    include_only=None,
    *,
    output="ocular_trace.json",
    max_buffer_mb=256,
    sample_interval_ms=SAMPLE_INTERVAL_MS,
    max_trace_mb=None,
    trace_detail="blocks",
    subprocesses=False,
):
    """Start tracing every thread.

    mode: "adaptive" (cycles per basic block, CPython keeps specialising) or
        "precise" (cycles per bytecode instruction).
    perfetto: write a trace to `output` (.json Chrome JSON, .pftrace or
        .perfetto-trace protobuf, optionally .gz).
    deinstrument_threshold: 0 traces every event of the run (exact). Above 0
        the run is sampled (see sample_interval_ms).
    sample_interval_ms: with a threshold above 0, Ocular traces every event
        for the run's first WARMUP_MS (10) milliseconds, then in short windows
        (0.5 ms, or 1 % of this interval if longer) at random intervals of about
        this many milliseconds, and nothing in between; the profile's figures
        are whole-run estimates (FunctionStats.sampled_* keep what was
        recorded). A run that ends within the warm-up is traced whole.
        None instead records the first `deinstrument_threshold` hits of
        every site and DISABLEs it (figures then describe only the start of
        each loop and the first calls of each function).
    exclude / include_only: substrings matched against a code object's
        filename, module name and qualified name.
    max_buffer_mb: memory bound of the trace buffers; past it, new trace
        events are dropped and counted.
    max_trace_mb: a size budget for the trace file (None: none). Past 80 % of
        it only function slices are written (blocks and instructions stop),
        past all of it nothing new; slices already open are closed. Perfetto's
        UI cannot open traces much over 2 GB.
    trace_detail: "blocks" (functions, blocks, and in precise mode
        instructions) or "functions" (function slices only: about a tenth of
        the size for loop-heavy code).
    subprocesses: True profiles the child processes too (forked, spawned by
        multiprocessing, or Python run by subprocess), with these options;
        each saves its profile beside the output, and the parent's
        Profile.subprocesses names them (see ocular.subprocesses).
    """
    global _run
    exclude, include_only, output = _check_arguments(
        mode, perfetto, deinstrument_threshold, exclude, include_only, output, max_buffer_mb
    )
    sample_interval_ms = _check_interval(sample_interval_ms)
    if max_trace_mb is not None and (isinstance(max_trace_mb, bool) or not isinstance(max_trace_mb, (int, float))):
        raise TypeError(f"max_trace_mb must be None or a number of megabytes, not {type(max_trace_mb).__name__}")
    if max_trace_mb is not None and not 1 <= max_trace_mb <= 1 << 20:
        raise ValueError(f"max_trace_mb must be between 1 and {1 << 20} (or None), not {max_trace_mb!r}")
    if trace_detail not in TRACE_DETAILS:
        raise ValueError(f"trace_detail must be one of {', '.join(map(repr, TRACE_DETAILS))}, not {trace_detail!r}")
    if not isinstance(subprocesses, bool):
        raise TypeError(f"subprocesses must be True or False, not {type(subprocesses).__name__}")
    children = dict(mode=mode, perfetto=perfetto, deinstrument_threshold=deinstrument_threshold,
                    exclude=exclude and list(exclude), include_only=include_only and list(include_only),
                    max_buffer_mb=max_buffer_mb, sample_interval_ms=sample_interval_ms,
                    max_trace_mb=max_trace_mb, trace_detail=trace_detail)
    sampling = bool(deinstrument_threshold) and sample_interval_ms is not None
    engine_threshold = 0 if sampling else deinstrument_threshold
    with _lock:
        if _run is not None:
            raise RuntimeError("Ocular is already tracing; call ocular.stop_tracing() first")
        engine_mode = _engine.MODE_PRECISE if mode == "precise" else _engine.MODE_ADAPTIVE
        callbacks = _engine.callbacks(engine_mode)
        if engine_threshold:
            # Exception events can never be DISABLEd: they would cost on every
            # raise for the whole run. With a threshold, an interval an
            # exception cut through goes unattributed instead; threshold 0
            # (the gapless timeline) and sampling windows (between which every
            # event is off) follow exceptions exactly.
            for name in _EXACT_EXCEPTION_EVENTS:
                callbacks.pop(name, None)
        run = _Run(mode, deinstrument_threshold, _acquire_tool_id(), callbacks, output)
        run.sample_interval_ms = sample_interval_ms if sampling else None
        run.window_ms = max(MIN_WINDOW_MS, sample_interval_ms * WINDOW_SHARE) if sampling else None
        run.calibrator = _testclock.calibrator(mode) or _calibration.Calibrator(mode, exceptions=not engine_threshold)
        run.calibrator.before_hooking()
        try:
            _engine.start(
                engine_mode,
                engine_threshold,
                exclude,
                include_only,
                _OWN_DIR,
                sys.monitoring.DISABLE,
                run.calibrator.kernel_codes,
                run.calibrator.twin_codes,
                output,
                max_buffer_mb << 20,
                int((max_trace_mb or 0) * (1 << 20)),
                TRACE_DETAILS.index(trace_detail),
            )
        except BaseException:
            sys.monitoring.free_tool_id(run.tool)
            raise
        try:
            _hook(run)
            _watch_thread_names(True)
            began = time.perf_counter()
            _engine.own_begin()
            try:
                run.calibrator.measure()
            finally:
                _engine.own_end()
            run.calibration_ms = (time.perf_counter() - began) * 1e3
            refresh_ms = _REFRESH_MS[engine_threshold == 0 and not sampling] if run.calibrator.refreshes else 0.0
            _engine.start_clock(run.refresh, refresh_ms,
                                sys.monitoring.set_events, run.tool, _events_mask(run.callbacks),
                                run.sample_interval_ms or 0.0, run.window_ms or 0.0, WARMUP_MS)
            _engine.end_calibration()  # last: the traced interval begins here
        except BaseException:
            _engine.stop()
            _unhook(run)
            _watch_thread_names(False)
            _engine.reset()
            raise
        if subprocesses:
            run.family = _subprocesses.arm(children, output)
        _run = run


# Names of threads that started while tracing (they may be gone by stop).
_started_thread_names = {}
_original_bootstrap = threading.Thread._bootstrap_inner


def _named_bootstrap(thread):
    # Runs first on every new threading.Thread (subclasses included); Ocular's
    # own code is never traced, so this costs one dict store per thread.
    _started_thread_names[threading.get_native_id()] = thread.name
    return _original_bootstrap(thread)


def _watch_thread_names(on):
    threading.Thread._bootstrap_inner = _named_bootstrap if on else _original_bootstrap


def _thread_names():
    names = dict(_started_thread_names)
    names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id})
    _started_thread_names.clear()
    return names


def stop_tracing():
    """Stop tracing and return the Profile (None if Ocular was not tracing)."""
    global _run
    with _lock:
        run = _run
        if run is None:
            return None
        _run = None
        try:
            totals = _engine.stop()
            raw = _engine.collect()
            estimate = None
            if run.sample_interval_ms and totals["warmup_done"]:
                estimate = _engine.collect(totals["scale"])
            # Read while the run's specialisations are still in place.
            adaptive_code = adaptive_bytecodes(raw) if run.mode == "precise" else {}
        finally:
            # Whatever failed above, nothing of Ocular's may stay hooked.
            _unhook(run)
            _watch_thread_names(False)
            children = _subprocesses.disarm(run.family) if run.family else ()
        try:
            names = _thread_names()
            if run.sample_interval_ms:
                names[_engine.WINDOW_TRACK_TID] = "Ocular: sampling windows"  # the clock thread's track
            trace_stats = _engine.finish_trace(names)
            calibration = run.calibrator.result(run.calibration_ms)
            profile = build_profile(run, totals, raw, calibration, trace_stats, names, adaptive_code,
                                    estimate, run.graveyard)
            if children:
                profile = dataclasses.replace(profile, subprocesses=children)
        finally:
            _engine.reset()
    if profile.failure:
        warnings.warn(f"Ocular stopped recording early: {profile.failure}", RuntimeWarning, stacklevel=2)
    if trace_stats and trace_stats["error_errno"]:
        warnings.warn(
            f"Ocular could not write the whole trace to {run.output}: {trace_stats['error_message']}",
            RuntimeWarning,
            stacklevel=2,
        )
    return profile


def _after_fork_in_child():
    # A child forked while tracing runs untraced: the run, its tool id and its
    # trace file belong to the parent ...
    global _run, _lock
    _lock = threading.Lock()  # the parent may have held it at fork
    run, _run = _run, None
    if run is None:
        return
    _engine.abandon_after_fork()
    _unhook(run)
    _watch_thread_names(False)
    _engine.reset()
    if run.family is not None:  # ... unless asked to profile its children: a run of its own
        _subprocesses.start_child(run.family)


os.register_at_fork(after_in_child=_after_fork_in_child)

# In-code sessions and saved profiles (after start_tracing/stop_tracing, which they use).
from .saved import load  # noqa: E402
from .session import profile, tracing  # noqa: E402


def load_ipython_extension(ipython):
    """`%load_ext ocular`: the %ocular and %%ocular magics (see ocular.ipython)."""
    from .ipython import load_ipython_extension as load

    load(ipython)


@atexit.register
def _stop_at_exit():
    # Events still fire during atexit handlers; stopping here flushes the
    # trace of a program that never called stop_tracing().
    if _run is not None:
        stop_tracing()
