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
"""

import sys

if sys.version_info < (3, 12):
    raise ImportError(
        "ocular needs CPython 3.12 or newer: it is built on sys.monitoring (PEP 669), "
        f"and this interpreter is {sys.version.split()[0]} ({sys.executable})."
    )

import atexit
import os
import threading
import warnings

from . import _engine, _opcodes
from ._profile import (
    BlockStats,
    FunctionStats,
    InstructionStats,
    LineStats,
    Profile,
    SiteStats,
    build_profile,
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
]
__version__ = "0.1.0"

MODES = ("adaptive", "precise")
TRACE_SUFFIXES = (".json", ".pftrace", ".perfetto-trace")
TOOL_IDS = (2, 3, 4)  # PROFILER_ID, then the two ids CPython leaves unassigned
TOOL_NAME = "ocular"
_CALIBRATION_CALLS = 3000
_EXACT_EXCEPTION_EVENTS = ("RAISE", "RERAISE", "EXCEPTION_HANDLED")
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

_engine.set_opcode_table(*_opcodes.opcode_table())


def _calibration_target():
    """An empty function: its apparent duration is one event's cost."""


class _Run:
    """What one start_tracing() call installed, so stop can undo exactly that."""

    def __init__(self, mode, threshold, tool, callbacks, output):
        self.mode = mode
        self.threshold = threshold
        self.tool = tool
        self.callbacks = callbacks
        self.output = output
        self.hooked = False


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
    if max_buffer_mb < 1:
        raise ValueError(f"max_buffer_mb must be at least 1, not {max_buffer_mb}")
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
):
    """Start tracing every thread.

    mode: "adaptive" (cycles per basic block, CPython keeps specialising) or
        "precise" (cycles per bytecode instruction).
    perfetto: write a trace to `output` (.json Chrome JSON, .pftrace or
        .perfetto-trace protobuf, optionally .gz).
    deinstrument_threshold: hits per site after which the site is DISABLEd
        and runs at full speed; 0 traces everything.
    exclude / include_only: substrings matched against a code object's
        filename, module name and qualified name.
    max_buffer_mb: memory bound of the trace buffers; past it, new trace
        events are dropped and counted.
    """
    global _run
    exclude, include_only, output = _check_arguments(
        mode, perfetto, deinstrument_threshold, exclude, include_only, output, max_buffer_mb
    )
    with _lock:
        if _run is not None:
            raise RuntimeError("Ocular is already tracing; call ocular.stop_tracing() first")
        engine_mode = _engine.MODE_PRECISE if mode == "precise" else _engine.MODE_ADAPTIVE
        callbacks = _engine.callbacks(engine_mode)
        if deinstrument_threshold:
            # Exception events can never be DISABLEd: they would cost on every
            # raise for the whole run. With a threshold, an interval an
            # exception cut through goes unattributed instead; threshold 0
            # (the gapless timeline) follows exceptions exactly.
            for name in _EXACT_EXCEPTION_EVENTS:
                callbacks.pop(name, None)
        run = _Run(mode, deinstrument_threshold, _acquire_tool_id(), callbacks, output)
        try:
            _engine.start(
                engine_mode,
                deinstrument_threshold,
                exclude,
                include_only,
                _OWN_DIR,
                sys.monitoring.DISABLE,
                _calibration_target.__code__,
                output,
                max_buffer_mb << 20,
            )
        except BaseException:
            sys.monitoring.free_tool_id(run.tool)
            raise
        try:
            _hook(run)
            if output:
                _watch_thread_names(True)
            for _ in range(_CALIBRATION_CALLS):
                _calibration_target()
            _engine.end_calibration()
        except BaseException:
            _engine.stop()
            _unhook(run)
            _watch_thread_names(False)
            _engine.reset()
            raise
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
            # Read while the run's specialisations are still in place.
            specialized = _opcodes.specialized_names(raw) if run.mode == "precise" else {}
        finally:
            # Whatever failed above, nothing of Ocular's may stay hooked.
            _unhook(run)
            _watch_thread_names(False)
        try:
            trace_stats = _engine.finish_trace(_thread_names())
            profile = build_profile(run, totals, raw, specialized, trace_stats)
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
    # trace file belong to the parent.
    global _run, _lock
    _lock = threading.Lock()  # the parent may have held it at fork
    run, _run = _run, None
    if run is None:
        return
    _engine.abandon_after_fork()
    _unhook(run)
    _watch_thread_names(False)
    _engine.reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _stop_at_exit():
    # Events still fire during atexit handlers; stopping here flushes the
    # trace of a program that never called stop_tracing().
    if _run is not None:
        stop_tracing()
