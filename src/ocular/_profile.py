"""The results model: plain immutable records built from the engine's raw
results at stop_tracing(). Every output (the text report, annotate, the
exporters) only reads a Profile.

Times are in cycles of the clock Ocular reads (`Profile.clock_source`, the
TSC on x86), with Ocular's own per-event cost already taken off
(`Profile.calibration` says how much, and how certain). Figures are signed:
a figure smaller than its `uncertainty` may come out below zero, and says so
rather than being clamped.

One account holds everything: on every thread, the time Ocular covered is
the functions' self time (each function's blocks plus its unattributed part),
plus the time in code Ocular does not trace (`untraced`), plus time no frame
can take (`lost`), plus the overhead removed and Ocular's own time. The
report's shares are shares of `Profile.total_cycles`, the program's part of
that account.

At threshold > 0 with sampling (the default there), every figure is a
whole-run estimate: what the sampling windows recorded, scaled by the run's
length over the windows' length; `sampled_*` fields keep what was recorded,
and `Profile.sampling` says how the estimate was made. At threshold 0 (and
with sample_interval_ms=None) the figures are what was recorded, and
`sampled_*` equal them.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

# ---- records ---------------------------------------------------------------


class Deferred(Sequence):
    """A tuple of records built on first use: Profile.instructions (some
    200 000 records after a run over 10 000 code objects) and Profile.sites,
    which most uses of a profile never read, so that stop_tracing() need not build them. It reads
    as the tuple it becomes (len, index, slice, iterate, ==, hash) and pickles
    as that tuple."""

    __slots__ = ("_build", "_records")

    def __init__(self, build):
        self._build, self._records = build, None

    def _tuple(self):
        records = self._records
        if records is None:
            build = self._build
            if build is None:  # another thread built it meanwhile (_records is set first)
                return self._records
            records = tuple(build())
            self._records, self._build = records, None
        return records

    def __len__(self):
        return len(self._tuple())

    def __getitem__(self, index):
        return self._tuple()[index]

    def __iter__(self):
        return iter(self._tuple())

    def __eq__(self, other):
        if isinstance(other, Deferred):
            other = other._tuple()
        return self._tuple() == other if isinstance(other, tuple) else NotImplemented

    def __hash__(self):
        return hash(self._tuple())

    def __add__(self, other):
        return self._tuple() + tuple(other)

    def __radd__(self, other):
        return tuple(other) + self._tuple()

    def __repr__(self):
        return repr(self._tuple())

    def __reduce__(self):
        return tuple, (self._tuple(),)


@dataclass(frozen=True, order=True)
class FunctionStats:
    filename: str
    qualname: str
    firstlineno: int
    calls: int  # PY_START events (capped by the de-instrumentation threshold, if any)
    cycles: int  # self cycles: time in the function's own code, callees excluded
    inclusive_cycles: int = 0  # self + callees; a recursive call's time counted once
    unattributed_cycles: int = 0  # of `cycles`, the part no block or instruction could take
    unobserved_cycles: int = 0  # of those, time that includes calls Ocular did not see
    uncertainty: int = 0  # +- cycles: the calibration's uncertainty over its events, and
    #                       when sampled, the sampling error (estimate / sqrt(windows))
    sampled_calls: int = 0  # what the sampling windows recorded (= calls when exact)
    sampled_cycles: int = 0  # (= cycles when exact)
    windows: int = 0  # sampling windows in which it ran (0 when exact)


@dataclass(frozen=True, order=True)
class BlockStats:
    filename: str
    qualname: str
    start_offset: int
    end_offset: int  # byte offset of the block's last instruction
    first_line: int | None
    last_line: int | None
    instructions: int
    hits: int
    cycles: int
    uncertainty: int = 0
    sampled_hits: int = 0  # what the sampling windows recorded (= hits when exact)
    sampled_cycles: int = 0


@dataclass(frozen=True, order=True)
class LineStats:
    filename: str
    lineno: int
    hits: int  # times the line ran (the most hits of its instructions)
    cycles: int
    shared: bool = False  # a share of a block that spans several lines, not measured alone
    uncertainty: int = 0
    sampled_hits: int = 0
    sampled_cycles: int = 0


@dataclass(frozen=True, order=True)
class InstructionStats:
    filename: str
    qualname: str
    offset: int
    opname: str
    lineno: int | None
    hits: int
    cycles: int
    specialized: str | None = None  # precise mode: CPython's specialised form at the end of the run
    uncertainty: int = 0
    sampled_hits: int = 0
    sampled_cycles: int = 0


@dataclass(frozen=True, order=True)
class SiteStats:
    """One (code, event, offset) site and how often it fired."""

    filename: str
    qualname: str
    event: str
    offset: int
    hits: int
    disabled: bool  # reached the threshold and was DISABLEd


@dataclass(frozen=True)
class CallStats:
    """A caller -> callee edge of the call tree."""

    calls: int  # PY_START events of the callee under this caller
    cycles: int  # the callee's self time under this caller
    inclusive_cycles: int  # the callee's inclusive time under this caller (outermost pairs)


@dataclass(frozen=True)
class Sampling:
    """How the whole-run estimates of a sampled profile were made."""

    interval_ms: float  # mean time between windows (randomised +-50 %)
    window_ms: float  # length of one window
    windows: int  # windows taken
    window_ns: int  # their total length
    scale: float  # what every recorded figure of the program was multiplied by (the program's
    #               time in the run over its time in the windows; overhead is not scaled)
    observed_events: int  # events the windows delivered
    estimated_events: int  # the run's events, estimated
    version_bumps: int = 0  # sys.monitoring.set_events calls the windows made
    budget_exhausted: bool = False  # windows stopped to spare 3.13's instrumentation-version budget
    warmup_ns: int = 0  # the run's start, traced whole (its figures are not scaled)
    whole: bool = False  # the run ended within the warm-up: every figure is exact

    @property
    def coverage(self):
        """After the warm-up, the share of the program's time the windows recorded."""
        return 1.0 / self.scale if self.scale else 0.0


@dataclass(frozen=True)
class ThreadStats:
    native_id: int
    name: str | None
    covered_cycles: int  # from the thread's first event to its last (or to stop)
    functions: tuple = ()  # FunctionStats of this thread alone
    untraced_cycles: int = 0  # time below every frame Ocular saw (excluded or untraced code)
    lost_cycles: int = 0  # time of frames that vanished unseen: nobody's for sure
    overhead_cycles: int = 0  # Ocular's per-event cost, removed
    ocular_cycles: int = 0  # Ocular's own time (calibration refreshes)
    edges: tuple = ()  # ((caller FunctionStats or None, callee FunctionStats, CallStats), ...)

    @property
    def program_cycles(self):
        """The program's time on this thread: covered less Ocular's overhead and own time."""
        return self.covered_cycles - self.overhead_cycles - self.ocular_cycles


@dataclass(frozen=True)
class Profile:
    mode: str
    deinstrument_threshold: int
    tsc_hz: float
    duration_ns: int
    events: int  # events delivered to Ocular's callbacks while recording
    disabled_sites: int
    functions: tuple = ()
    blocks: tuple = ()
    lines: tuple = ()
    instructions: tuple = ()  # from stop_tracing(), a Deferred: built on first use
    sites: tuple = ()
    threads: tuple = ()
    calibration: object = None  # _calibration.Calibration
    sampling: Sampling | None = None  # set when the figures are sampled estimates
    lost_frames: int = 0  # frames that ended without an event Ocular saw
    failure: str | None = None  # why recording stopped early, if it did
    trace_path: str | None = None
    trace_events: int = 0
    trace_block_slices: int = 0  # slices in the trace file (instructions not counted)
    trace_function_slices: int = 0
    dropped_events: int = 0
    trace_error: str | None = None
    clock_source: str = field(default="rdtsc")
    trace_bytes: int = 0  # the trace file's size
    trace_kept: str | None = None  # what a size budget or trace_detail left in it (None: everything)
    subprocesses: tuple = ()  # the saved profiles of its child processes (start_tracing(subprocesses=True))
    _edges: tuple = field(default=(), repr=False)  # merged over threads, as in ThreadStats.edges

    # -- the account -----------------------------------------------------------

    @property
    def total_cycles(self):
        """The program's time as Ocular measured it, summed over threads: the
        functions' self time, the untraced time below them and lost time."""
        return sum(t.program_cycles for t in self.threads)

    @property
    def unattributed_cycles(self):
        """Time no block or instruction took: functions' unattributed time and lost time."""
        return sum(f.unattributed_cycles for f in self.functions) + sum(t.lost_cycles for t in self.threads)

    @property
    def untraced_cycles(self):
        return sum(t.untraced_cycles for t in self.threads)

    @property
    def overhead_cycles(self):
        return sum(t.overhead_cycles for t in self.threads)

    @property
    def ocular_cycles(self):
        return sum(t.ocular_cycles for t in self.threads)

    @property
    def event_cost_cycles(self):
        """The principal event kind's calibrated cost (ticks per event)."""
        if not self.calibration:
            return 0
        return round(self.calibration.costs[self.calibration.principal].ticks)

    def cycles_to_ns(self, cycles):
        if isinstance(cycles, bool) or not isinstance(cycles, (int, float)):
            raise TypeError(f"cycles must be an int or float, not {type(cycles).__name__}")
        return cycles * 1e9 / self.tsc_hz if self.tsc_hz else 0.0

    # -- the call tree -----------------------------------------------------------

    def _function_of(self, target):
        from ._select import function_of

        return function_of(self, target)

    def callers(self, target):
        """{caller FunctionStats (None: unknown, below what Ocular saw): CallStats}
        for a FunctionStats, function, code object or name."""
        callee = self._function_of(target)
        return {caller: stats for caller, c, stats in self._edges if c == callee}

    def callees(self, target):
        """{callee FunctionStats: CallStats} for a FunctionStats, function, code object or name."""
        caller = self._function_of(target)
        return {callee: stats for c, callee, stats in self._edges if c == caller}

    @property
    def edges(self):
        """Every caller -> callee edge, merged over threads: ((caller, callee, CallStats), ...)."""
        return self._edges

    # -- rendering ---------------------------------------------------------------

    def report(self, limit=20, *, sort="self", thread=None):
        """The text report: `limit` rows per table (None: every row), ordered by
        `sort` ("self", "inclusive", "calls" or "hits"); `thread` (a native id or
        a name) gives the view of that thread alone."""
        from ._report import render

        return render(self, limit, sort, thread)

    def report_callers(self, target=None, limit=20, *, thread=None):
        """Who called `target` (a function, code object, FunctionStats or name;
        None: the hottest functions), with the calls and time along each edge."""
        from ._callers import render_callers

        return render_callers(self, target, limit, thread)

    def report_callees(self, target=None, limit=20, *, thread=None):
        """What `target` called, with the calls and each callee's time under it."""
        from ._callers import render_callees

        return render_callees(self, target, limit, thread)

    def annotate(self, target):
        """The source of a function, code object, FunctionStats, function name or
        file, one line per source line with its figures (see ocular.annotate)."""
        from .annotate import annotate

        return annotate(self, target)

    def save(self, path):
        """Write this profile to `path` as versioned JSON (gzipped if it ends in
        .gz); ocular.load(path) gives it back, equal to this one."""
        from .saved import save

        save(self, path)

    def __str__(self):
        return self.report()

    def export(self, name, path, **options):
        """Write the profile in one of ocular.export.FORMATS."""
        from .export import write

        return write(name, self, path, **options)

    def to_pstats(self, path, **options):
        """A pstats file (`pstats.Stats(path)`); see ocular.export.pstats."""
        return self.export("pstats", path, **options)

    def to_speedscope(self, path, **options):
        """speedscope JSON, one profile per thread (lines=True: leaf frames per line)."""
        return self.export("speedscope", path, **options)

    def to_collapsed(self, path, **options):
        """Collapsed stacks `a;b;c weight` (unit="ns" or "cycles"; lines=True)."""
        return self.export("collapsed", path, **options)

    def to_pprof(self, path, **options):
        """gzipped pprof profile.proto (lines=True: locations down to the line)."""
        return self.export("pprof", path, **options)

    def to_html(self, path, **options):
        """A self-contained HTML report (heatmap, functions, flame graph); see ocular.export.html."""
        return self.export("html", path, **options)
