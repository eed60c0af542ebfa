"""A clock the tests control (the engine's testclock.h).

While `on_test_clock(...)` is active, a run's time is a counter that advances only
at events, by amounts the test sets: the program's work before each event (by
event kind, or per code object and offset) and each event's own cost, which
the engine is told as its calibration instead of measuring it. Every figure of
such a run is then known exactly, however loaded the machine: the tests
compare them with a model of the attribution rules. This module is in Ocular's
own package so that its code, like the rest of Ocular's, is never traced.
"""

import contextlib

from . import _calibration, _engine

KINDS = _calibration.KINDS  # engine.h's order: edge, instruction, start, ...

_active = None  # the costs of the test clock that is on


def _per_kind(values, name):
    values = dict(values or {})
    unknown = set(values) - set(KINDS)
    if unknown:
        raise ValueError(f"{name}: unknown event kinds {sorted(unknown)}; valid: {', '.join(KINDS)}")
    return [int(values.get(kind, 0)) for kind in KINDS]


@contextlib.contextmanager
def on_test_clock(work=None, heads=None, tails=None, far=(0, 0), rules=()):
    """Run the enclosed start_tracing()..stop_tracing() on the test clock.

    work / heads / tails: {kind: ticks} (missing kinds 0): what the program
        does before an event of that kind, and the event's cost before and
        after the engine's clock read (taken off again as the calibration).
    far: (head, tail) added per offset argument past FAR_OFFSET bytes.
    rules: (code, kind or None, offset or None, ticks): work for events of
        that code object (first match wins; else `work`).
    """
    global _active
    heads, tails = _per_kind(heads, "heads"), _per_kind(tails, "tails")
    table = [(code, -1 if kind is None else KINDS.index(kind), -1 if offset is None else offset, ticks)
             for code, kind, offset, ticks in rules]
    _engine._test_clock(_per_kind(work, "work"), heads, tails, int(far[0]), int(far[1]), table)
    _active = (heads, tails, int(far[0]), int(far[1]))
    try:
        yield
    finally:
        _active = None
        _engine._test_clock(None)


def now():
    """The calling thread's test-clock time in ticks (each thread has its own)."""
    return _engine._test_clock_now()


def advance(ticks):
    """The calling thread's clock moves on by `ticks`: the program running
    where Ocular sees no event (between sampling windows)."""
    _engine._test_clock_advance(int(ticks))


def switch_window():
    """In a sampled run on the test clock (which has no clock thread): end
    the window that is open (the warm-up first) or open the next, here and
    now. Returns whether a window is open after it."""
    return _engine._test_switch_window()


class FixedCalibrator:
    """Stands in for _calibration.Calibrator on the test clock: the event
    costs are the test's, installed as measured ones would be."""

    refreshes = False
    kernel_codes = twin_codes = ()

    def __init__(self, mode, heads, tails, far_head, far_tail):
        self.mode = mode
        self.heads, self.tails, self.far_head, self.far_tail = heads, tails, far_head, far_tail
        self.principal = "instruction" if mode == "precise" else "edge"

    def before_hooking(self):
        pass

    def measure(self):
        _engine.probe_collect(True)
        _engine.probe_collect(False)  # no probe references: every thread's phase stays 1
        _engine.set_corrections([float(h) for h in self.heads], [float(t) for t in self.tails],
                                float(self.far_head), float(self.far_tail))

    def refresh(self):
        pass

    def result(self, duration_ms):
        costs = {kind: _calibration.KindCost(float(h + t), 0.0) for kind, h, t in zip(KINDS, self.heads, self.tails)}
        return _calibration.Calibration(costs=costs, far=_calibration.KindCost(float(self.far_head + self.far_tail), 0.0),
                                        principal=self.principal, duration_ms=duration_ms, probe_reference=1.0)


def calibrator(mode):
    """The calibrator of a run starting now: a fixed one on the test clock, else None."""
    return FixedCalibrator(mode, *_active) if _active else None
