"""What each kind of sys.monitoring event costs the traced program.

Every interval Ocular times runs from one event's clock read to the next, so
it holds the tail of one event (the rest of Ocular's callback, CPython's
return to the program) and the head of the next (CPython's dispatch up to the
callback's clock read). To take that cost off, each kind of event is measured
on a kernel built for it: the kernel is timed with the tick counter as it runs
traced and as its untraced twin (the same source compiled again, excluded from
tracing), round-robin, and the difference per event is that kind's cost. A
robust median over repeats, and the spread of that median, are kept.

How a cost splits between the interval before the event and the one after it
cannot be measured from outside (only their sum shows in the timeline); Ocular
gives each half. Every sum a function, a loop or a thread shows is unaffected
by that split; only the first and last block of a call can be.

During a run the machine's speed drifts (on a shared VM by up to 1.7x within
seconds), and the cost in ticks drifts with it: the principal kernel is timed
again every ~`REFRESH_MS` from the main thread, as Ocular's own time, and all
costs are scaled by what it shows.
"""

from dataclasses import dataclass, field

from . import _engine

# engine.h's event kinds, in its order: per-kind lists cross to the engine by
# position, so the order is checked against the engine's own at import.
KINDS = ("edge", "instruction", "start", "return", "resume", "yield", "raise", "handled", "unwind")


def check_kind_order(engine_names, names=KINDS):
    """Raise ImportError unless the engine names the event kinds in `names`' order."""
    if tuple(engine_names) != tuple(names):
        raise ImportError(f"ocular._engine's event kinds {tuple(engine_names)} are not in the order of "
                          f"ocular._calibration.KINDS {tuple(names)}: the engine and the package come "
                          "from different builds; reinstall Ocular")


check_kind_order(_engine.EVENT_KIND_NAMES)
FAR_OFFSET = _engine.FAR_OFFSET  # offsets past this are passed to callbacks as new ints

REFRESH_MS = 20.0

_PAD = "\n".join(f"    pad{k} = 0" for k in range(80))  # pushes what follows past FAR_OFFSET

_KERNELS = f'''
def edge_pass(n):
    for i in range(n):
        pass

def edge_add(n):
    total = 0
    for i in range(n):
        total += i

def edge_list(n, items=list(range(1000))):
    for x in items[:n]:
        pass

def edge_while(n):
    i = 0
    while i < n:
        i += 1

def edge_pass_far(n):
{_PAD}
    for i in range(n):
        pass

def straight_short(n):
    for i in range(n):
        a = i

def straight_long(n):
    for i in range(n):
        a = i
        b = a
        c = b
        d = c
        e = d
        f = e
        g = f
        h = g

def straight_build(n):
    for i in range(n):
        a = i
        t = (a, a)
        u = [t]
        v = u
        w = t

def straight_short_far(n):
{_PAD}
    for i in range(n):
        a = i

def straight_long_far(n):
{_PAD}
    for i in range(n):
        a = i
        b = a
        c = b
        d = c
        e = d
        f = e
        g = f
        h = g

def callee():
    pass

def call_driver(n):
    for i in range(n):
        callee()

def generator():
    while True:
        yield

def generator_driver(n):
    step = generator().__next__
    for i in range(n):
        step()

def raiser(n, error=ValueError):
    for i in range(n):
        try:
            raise error
        except error:
            pass
'''

# The drivers run untraced in both copies: only what they call is timed.
_DRIVERS = ("call_driver", "generator_driver")


def _compile():
    traced, twin = {}, {}
    exec(compile(_KERNELS, "<ocular calibration>", "exec"), traced)
    exec(compile(_KERNELS, "<ocular calibration twin>", "exec"), twin)
    names = [n for n, v in traced.items() if callable(v) and hasattr(v, "__code__")]
    kernel_codes = [traced[n].__code__ for n in names if n not in _DRIVERS]
    twin_codes = [twin[n].__code__ for n in names] + [traced[n].__code__ for n in _DRIVERS]
    return traced, twin, tuple(kernel_codes), tuple(twin_codes)


@dataclass(frozen=True)
class KindCost:
    """What one event of a kind adds to the program's time, in ticks."""

    ticks: float
    spread: float  # standard error of `ticks`, from the repeats' spread


@dataclass(frozen=True)
class Calibration:
    """The measured event costs of a run (Profile.calibration)."""

    costs: dict  # kind name -> KindCost, as measured at start
    far: KindCost  # extra cost per offset argument past FAR_OFFSET bytes
    principal: str  # the kind re-measured during the run
    scales: tuple = ()  # each refresh's measured cost / the start's, in order
    duration_ms: float = 0.0  # how long the start's calibration took
    untraced: dict = field(default_factory=dict)  # kernel -> untraced ticks per iteration
    probe_reference: float = 0.0  # ticks of the principal path's probe at phase 1 (the unit of `costs`)

    @property
    def scale_spread(self):
        return (min(self.scales), max(self.scales)) if self.scales else (1.0, 1.0)


# Small statistics of our own: the calibration runs inside the program's time
# (as Ocular's own), and the statistics module's code would be traced there.
def _median(values):
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def _mean(values):
    values = list(values)
    return sum(values) / len(values)


def _pstdev(values):
    values = list(values)
    mean = _mean(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def _median_and_sd(values):
    """Median and a standard deviation from the median absolute deviation,
    which one outlier (an interrupt) does not move."""
    median = _median(values)
    return median, 1.4826 * _median(abs(v - median) for v in values)


def _robust(values):
    """Median and the standard error of the median (from the MAD). The
    repeats are taken at phase 1, so what is left is noise: an interrupt, a
    repeat whose twin and traced halves met different phases."""
    median, sd = _median_and_sd(values)
    return median, sd * 1.2533 / max(len(values), 1) ** 0.5


class Calibrator:
    """Times the kernels; created once per run, kept for the refreshes."""

    refreshes = True  # re-timed during the run (_testclock's stand-in is not)

    def __init__(self, mode, exceptions):
        self.mode = mode
        self.exceptions = exceptions
        self.traced, self.twin, self.kernel_codes, self.twin_codes = _compile()
        self.principal = "instruction" if mode == "precise" else "edge"
        self.base = None
        self.costs = None
        self.scales = []

    # An untraced kernel timed beside the exception kernel, before hooking and
    # again after: the ratio of its two times is how much the machine's speed
    # changed in between (by up to 2x on a shared VM), which the exception
    # kernel's untraced time, timed before hooking only, must follow.
    SPEED_KERNEL = "straight_build"

    def before_hooking(self, repeats=11, n=1000):
        """Time what cannot have an untraced twin once Ocular is hooked: the
        exception kernel (RAISE and EXCEPTION_HANDLED are global events, which
        fire in excluded code too), beside the speed kernel."""
        if self.exceptions:
            raiser, speed = _engine.time_calls(
                (self.twin["raiser"], self.twin[self.SPEED_KERNEL]), n, repeats)[0]
            self.raiser_untraced = _median(raiser) / n
            self.speed_untraced = _median(speed) / n

    def _per_iteration(self, name, n, repeats):
        """(cost ticks per iteration, its standard error, local events per
        iteration, untraced ticks per iteration, [cost of each repeat]) of one
        kernel, at phase 1: each repeat's difference is divided by the phase
        the thread's probes saw during it (phase.h)."""
        traced, twin = self.traced[name], self.twin[name]
        codes = {f.__code__ for f in self._callees(name)}
        before = sum(self._in_frame_events(code) for code in codes)
        (twin_times, traced_times), (_, phases) = _engine.time_calls((twin, traced), n, repeats)
        events = (sum(self._in_frame_events(code) for code in codes) - before) / (repeats * n)
        deltas = [(t - u) / n / p for t, u, p in zip(traced_times, twin_times, phases)]
        delta, error = _robust(deltas)
        return delta, error, events, _median(twin_times) / n, deltas

    def _in_frame_events(self, code):
        """Events of a code object so far, other than its frame's start/end:
        its edges (adaptive) or instructions (precise)."""
        edges, instructions, _frame_events = _engine.site_hits(code)
        return instructions if self.mode == "precise" else edges

    def _callees(self, name):
        """The traced functions whose events a kernel's run delivers."""
        if name == "call_driver":
            return [self.traced["callee"]]
        if name == "generator_driver":
            return [self.traced["generator"]]
        return [self.traced[name]]

    # Kernels run past the small ints (offsets and loop counters above 256 are
    # new ints, as in most real loops); the bodies differ (a range, a list, a
    # while loop; CPython runs an instrumented FOR_ITER unspecialised, which
    # costs more over some iterators than others), because the cost of an
    # event depends a little on the code around it, and that variation is part
    # of the stated spread.
    EDGE_BODIES = ("edge_pass", "edge_add", "edge_list", "edge_while")
    INSN_PAIRS = (("straight_short", "straight_long"), ("straight_short", "straight_build"))

    def _edge_cost(self, n, repeats, names):
        values, spreads, samples = [], [], []
        for name in names:
            delta, spread, events, _, deltas = self._per_iteration(name, n, repeats)
            values.append(delta / events)
            spreads.append(spread / events)
            samples += [d / events for d in deltas]
        return values, spreads, samples

    def _insn_cost(self, n, repeats, pairs):
        values, spreads, samples = [], [], []
        for short, long in pairs:
            (ds, ss, es, _, short_deltas), (dl, sl, el, _, long_deltas) = (
                self._per_iteration(short, n, repeats), self._per_iteration(long, n, repeats))
            values.append((dl - ds) / (el - es))
            spreads.append((ss**2 + sl**2) ** 0.5 / (el - es))
            samples += [(b - a) / (el - es) for a, b in zip(short_deltas, long_deltas)]
        return values, spreads, samples

    @staticmethod
    def _combine(values, spreads, _samples=None):
        """One cost from several kernels and rounds: their median; its spread,
        the larger of the measurement's and the kernels' disagreement (they are
        timed one after the other, so that includes how much the cost moved
        meanwhile: on a shared machine it wanders by several percent within
        milliseconds)."""
        median, between = _median_and_sd(values)
        measured = (sum(x * x for x in spreads) ** 0.5) / len(spreads)
        # robust (MAD) from three values on: one round of four repeats hit by
        # an interrupt must not make the spread larger than the cost (seen:
        # 112 on 77 ticks); two values have no median deviation to speak of
        if len(values) <= 2:
            between = _pstdev(values) if len(values) > 1 else 0.0
        return KindCost(median, max(measured, between))

    def _raise_delta(self, n, repeats):
        """(ticks, spread, local events) per iteration of the exception kernel
        at phase 1: its traced time, less its untraced time as timed before
        hooking carried to now by the speed kernel's ratio (each repeat by its
        own neighbour)."""
        code = self.traced["raiser"].__code__
        before = self._in_frame_events(code)
        (traced, speed), (phases, _) = _engine.time_calls(
            (self.traced["raiser"], self.twin[self.SPEED_KERNEL]), n, repeats)
        events = (self._in_frame_events(code) - before) / (repeats * n)
        deltas = [(t / n - self.raiser_untraced * (s / n) / self.speed_untraced) / p
                  for t, s, p in zip(traced, speed, phases)]
        return (*_robust(deltas), events)

    def _probe_references(self, n):
        """Let every probed path run a little while the probes' times are
        collected: each path's median becomes its reference (phase 1)."""
        _engine.probe_collect(True)
        names = ["call_driver", "generator_driver"]
        names += ["straight_short", "straight_long"] if self.mode == "precise" else ["edge_pass"]
        for name in names:
            _engine.time_calls((self.traced[name],), n, 5)
        self.probe_references = _engine.probe_collect(False)

    # The principal kind is timed in rounds spread over the calibration: what
    # an event costs against the probe wanders by several percent over tens of
    # milliseconds (two calibrations of one process, back to back, differ by
    # a 6 % standard deviation), and repeats taken all at once would not show
    # it in their spread.
    ROUNDS = 3

    def _principal_round(self, n, repeats):
        if self.mode == "precise":
            return self._insn_cost(n, repeats, self.INSN_PAIRS)
        return self._edge_cost(n, repeats, self.EDGE_BODIES)

    def measure(self, repeats=12, n=1000):
        self._probe_references(n)
        per_round = max(2, repeats // self.ROUNDS)
        rounds = [self._principal_round(n, per_round)]
        if self.mode == "precise":
            far_event = self._insn_cost(n, repeats, (("straight_short_far", "straight_long_far"),))
        else:
            far_event = self._edge_cost(n, repeats, ("edge_pass_far",))
        rounds.append(self._principal_round(n, per_round))
        t = {name: self._per_iteration(name, n, repeats) for name in ("call_driver", "generator_driver")}
        raiser = self._raise_delta(n, repeats) if self.exceptions else None
        rounds += [self._principal_round(n, per_round) for _ in range(self.ROUNDS - 2)]
        measured = tuple(sum((r[i] for r in rounds), []) for i in range(3))
        unit = self._combine(*measured)
        # the far kernel's twin is the first kernel (or pair) of every round
        near = KindCost(_mean(r[0][0] for r in rounds), _mean(r[1][0] for r in rounds))
        far_value, far_spread = far_event[0][0] - near.ticks, far_event[1][0] + near.spread
        if self.mode != "precise":  # the far edge kernel has two far offsets per event
            far_value, far_spread = far_value / 2, far_spread / 2
        far = KindCost(far_value, far_spread)
        self.samples = list(measured[2])
        costs = {self.principal: unit}
        # Calls, generator switches and exceptions: the pair's cost, less the
        # local events (instructions or edges) its kernel delivers; half to each
        # event.
        pairs = [(("start", "return"), t["call_driver"][:3]), (("resume", "yield"), t["generator_driver"][:3]),
                 (("raise", "handled", "unwind"), raiser)]
        for kinds, measurement in pairs:
            if measurement is None:  # not delivered at threshold > 0 except PY_UNWIND: as a return
                each = costs["return"]
            else:
                delta, spread, events = measurement
                each = KindCost((delta - events * unit.ticks) / 2, (spread + events * unit.spread) / 2)
            for kind in kinds:
                costs[kind] = each
        other = "edge" if self.mode == "precise" else "instruction"
        costs[other] = KindCost(0.0, 0.0)
        self.costs = costs
        self.far = far
        self.untraced = {name: value[3] for name, value in t.items()}
        if raiser:
            self.untraced["raiser"] = self.raiser_untraced
        self.base = unit.ticks
        self.install(1.0)

    def install(self, scale):
        """Hand the costs, scaled, to the engine: half before each event, half after."""
        halves = [self.costs[kind].ticks * scale / 2 for kind in KINDS]
        far = self.far.ticks * scale / 2
        _engine.set_corrections(halves, list(halves), far, far)

    # The cost applied during a run is the median of the most recent samples of
    # the principal kind, at phase 1 (the probes follow the phase itself): the
    # start's samples, then each refresh's, which slowly replace them.
    WINDOW = 400

    def refresh(self):
        """Re-time the principal kernel (what an event costs at phase 1 can
        drift too: caches, the program's own state) and update every cost by the
        ratio of the recent median to the start's."""
        window = _engine.window_id()
        if self.mode == "precise":
            samples = self._insn_cost(500, 4, self.INSN_PAIRS[:1])[2]
        else:
            samples = self._edge_cost(500, 4, self.EDGE_BODIES[:1])[2]
        if window != _engine.window_id() or not _engine.is_recording():
            return  # a sampling window closed meanwhile: the kernels ran partly untraced
        self.samples = (self.samples + samples)[-self.WINDOW:]
        if self.base and self.base > 0:
            scale = _median(self.samples) / self.base
            if scale > 0:
                self.scales.append(scale)
                self.install(scale)

    def result(self, duration_ms):
        path = _engine.PROBE_INSN if self.mode == "precise" else _engine.PROBE_EDGE
        return Calibration(costs=dict(self.costs), far=self.far, principal=self.principal,
                           scales=tuple(self.scales), duration_ms=duration_ms,
                           untraced=dict(self.untraced),
                           probe_reference=self.probe_references[path] / 16)
