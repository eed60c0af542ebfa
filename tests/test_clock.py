"""The attribution rules, exactly: runs on the test clock (ocular._testclock).

The engine's time advances only at events, by the work the test sets for each
event and each event's cost, which the engine takes off again as its
calibration. A pure-Python sys.monitoring recorder on another tool id notes
every event of the same run in order; an independent model of the rules turns
that sequence into the figures every function, instruction and thread must
show, to the cycle, however loaded the machine is.
"""

import dis
import math
import os
import sys
import threading

import pytest

import ocular
import workloads
from conftest import Listener
from ocular import _testclock

KINDS = _testclock.KINDS
OCULAR_DIR = os.path.dirname(ocular.__file__) + os.sep
E = sys.monitoring.events
EVENT_KIND = {E.PY_START: "start", E.PY_RESUME: "resume", E.PY_THROW: "resume", E.PY_RETURN: "return",
              E.PY_YIELD: "yield", E.PY_UNWIND: "unwind", E.RAISE: "raise", E.RERAISE: "raise",
              E.EXCEPTION_HANDLED: "handled", E.JUMP: "edge", E.BRANCH: "edge", E.INSTRUCTION: "instruction"}
PUSHES = {"start", "resume"}
POPS = {"return", "yield", "unwind"}
COMMON = [E.PY_START, E.PY_RESUME, E.PY_THROW, E.PY_RETURN, E.PY_YIELD, E.PY_UNWIND, E.RAISE, E.RERAISE,
          E.EXCEPTION_HANDLED]
EVENTS = {"adaptive": COMMON + [E.JUMP, E.BRANCH], "precise": COMMON + [E.INSTRUCTION]}

SOURCE = '''
def leaf(n):
    total = 0
    for i in range(n):
        if i % 3:
            total += i
    return total

def numbers(n):
    for i in range(n):
        yield i * 2

def fails(n):
    if n > 1:
        raise ValueError(n)
    return n

def catches(n):
    caught = 0
    for i in range(n):
        try:
            fails(i)
        except ValueError:
            caught += 1
    return caught

def driver():
    total = 0
    for k in range(4):
        total += leaf(5 + k)
    total += sum(numbers(6))
    total += catches(4)
    return total
'''


def clocked_module():
    namespace = {}
    exec(compile(SOURCE, "<clocked>", "exec"), namespace)
    return namespace


def noop():
    pass


class Recorder(Listener):
    """Every event of every code object, in order (a tool id of its own)."""

    def __init__(self, mode):
        self.events = EVENTS[mode]
        self.seen = []
        self.thread_ids = []  # the native id of each event's thread

    def _make_callback(self, event):
        seen, kind, thread_ids, native_id = self.seen, EVENT_KIND[event], self.thread_ids, threading.get_native_id

        def callback(code, offset, *rest):
            seen.append((code, kind, offset))
            thread_ids.append(native_id())

        return callback

    def bounds(self):
        """(index after start_tracing's return, index of stop_tracing's start)."""
        start = max(i for i, (code, kind, _) in enumerate(self.seen)
                    if code is ocular.start_tracing.__code__ and kind == "return")
        stop = min(i for i, (code, kind, _) in enumerate(self.seen)
                   if code is ocular.stop_tracing.__code__ and kind == "start")
        return start + 1, stop

    def programs(self, first, last):
        """The events seen[first:last] less those of Ocular's own code."""
        return [e for e in self.seen[first:last] if not e[0].co_filename.startswith(OCULAR_DIR)]

    def traced_window(self):
        """The events Ocular recorded: from start_tracing's return to
        stop_tracing's start, less those of Ocular's own code."""
        return self.programs(*self.bounds())

    def threads_window(self):
        """traced_window's events by native thread id."""
        first, last = self.bounds()
        by_thread = {}
        for event, thread in zip(self.seen[first:last], self.thread_ids[first:last]):
            if not event[0].co_filename.startswith(OCULAR_DIR):
                by_thread.setdefault(thread, []).append(event)
        return by_thread


def work_rules(namespace):
    """Work per code object and kind, each different, so that a figure charged
    to the wrong function or kind shows."""
    rules = []
    for k, name in enumerate(("leaf", "numbers", "fails", "catches", "driver")):
        code = namespace[name].__code__
        for j, kind in enumerate(KINDS):
            rules.append((code, kind, None, 1000 * (k + 1) + 17 * j + 3))
    return rules


HEADS = {kind: 2 + i for i, kind in enumerate(KINDS)}
TAILS = {kind: 3 + 2 * i for i, kind in enumerate(KINDS)}


def work_of(rules, code, kind, offset):
    for rule_code, rule_kind, rule_offset, ticks in rules:
        if rule_code is code and rule_kind in (None, kind) and rule_offset in (None, offset):
            return ticks
    return 0


def model(events, rules):
    """The attribution rules, independently: an event's work is the time the
    program ran since the previous event, so it belongs to the frame that ran
    then: the caller's for a frame's start or resumption, else the frame's own.
    Returns (self cycles, calls) by qualified name and the instructions' cycles
    by (qualname, offset), where precise mode's instruction that ran is the
    frame's last INSTRUCTION event, or the handler an exception was caught by,
    or where the frame began."""
    stack = []  # [qualname, offset of the running instruction]
    cycles, calls, insns = {}, {}, {}
    for code, kind, offset in events:
        work = work_of(rules, code, kind, offset)
        if kind in PUSHES:
            owner = stack[-1] if stack else None
            stack.append([code.co_qualname, offset])
            calls[code.co_qualname] = calls.get(code.co_qualname, 0) + (kind == "start")
        elif stack and stack[-1][0] == code.co_qualname:
            owner = stack[-1]
        else:  # a frame already running when tracing began: adopted where it is
            owner = [code.co_qualname, offset]
            stack.append(owner)
        if owner is not None:
            cycles[owner[0]] = cycles.get(owner[0], 0) + work
            key = (owner[0], owner[1])
            insns[key] = insns.get(key, 0) + work
        elif work:
            cycles[None] = cycles.get(None, 0) + work  # below every frame the run saw
        if kind in ("instruction", "handled") and stack and stack[-1][0] == code.co_qualname:
            stack[-1][1] = offset
        if kind in POPS and stack and stack[-1][0] == code.co_qualname:
            stack.pop()
    return cycles, calls, insns


def model_edges(events, rules):
    """The call tree by the same rules: {(caller qualname or None, callee
    qualname): [calls, self, inclusive]}, where a frame's caller is the frame
    below it when it began (a generator's is whoever resumed it), each
    activation's inclusive time is its self time and its callees' inclusive
    time (nothing recurses here), and frames still open at the end close there."""
    stack, edges = [], {}

    def edge(frame):
        return edges.setdefault((frame["caller"], frame["name"]), [0, 0, 0])

    def close(frame):
        inclusive = frame["self"] + frame["child"]
        totals = edge(frame)
        totals[1] += frame["self"]
        totals[2] += inclusive
        if stack:
            stack[-1]["child"] += inclusive

    for code, kind, offset in events:
        name = code.co_qualname
        frame = {"name": name, "caller": stack[-1]["name"] if stack else None, "self": 0, "child": 0}
        if kind in PUSHES:  # the time up to a frame's start is its caller's
            owner = stack[-1] if stack else None
            stack.append(frame)
            edge(frame)[0] += kind == "start"
        elif stack and stack[-1]["name"] == name:
            owner = stack[-1]
        else:  # a frame running before tracing began, adopted
            owner = frame
            stack.append(frame)
        if owner is not None:
            owner["self"] += work_of(rules, code, kind, offset)
        if kind in POPS and stack[-1]["name"] == name:
            close(stack.pop())
    while stack:
        close(stack.pop())
    return edges


def clocked_run(mode, rules, heads=HEADS, tails=TAILS):
    namespace = clocked_module()
    rules = rules(namespace) if callable(rules) else rules
    with _testclock.on_test_clock(heads=heads, tails=tails, rules=rules), Recorder(mode) as recorder:
        ocular.start_tracing(mode=mode, perfetto=False, deinstrument_threshold=0)
        noop()  # the first event: its head falls before the account begins
        result = namespace["driver"]()
        profile = ocular.stop_tracing()
    assert result == namespace["driver"]()
    return profile, recorder.traced_window(), rules


MODES = ["adaptive", "precise"]


def split_first_head(profile, events):
    """The account begins when the calibration ends, so the first event's head
    (not taken off: nothing before it is known) is time of the program: below
    every frame if that event begins a frame, else the frame's it is adopted
    in. Returns ([time below every frame, the adopted frame's], that head),
    the head taken off."""
    first_code, first_kind, _ = events[0]
    head = HEADS[first_kind]
    (thread,) = profile.threads
    if first_kind in PUSHES:
        return [thread.untraced_cycles - head], head
    adopted = [f for f in profile.functions if f.qualname == first_code.co_qualname]
    return [thread.untraced_cycles, adopted[0].cycles - head], head


@pytest.mark.parametrize("mode", MODES)
def test_every_function_gets_exactly_the_work_of_its_own_code(mode):
    profile, events, rules = clocked_run(mode, work_rules)
    expected, calls, _ = model(events, rules)
    functions = {f.qualname: f for f in profile.functions if f.filename == "<clocked>"}
    assert set(functions) == {"leaf", "numbers", "fails", "catches", "driver"}
    for name, function in functions.items():
        assert function.cycles == expected[name], name
        assert function.calls == calls[name], name
    assert expected["leaf"] and expected["numbers"] and expected["fails"]
    # inclusive: its own and every callee's (nothing recurses here)
    assert functions["catches"].inclusive_cycles == expected["catches"] + expected["fails"]
    assert functions["driver"].inclusive_cycles == sum(expected[n] for n in functions)
    # The work of the calls the test made (their starts) is the test's frame's,
    # or, where that frame delivered no event (adaptive mode), time below every
    # frame Ocular saw.
    mine = [f.cycles for f in profile.functions if f.qualname == clocked_run.__qualname__]
    outside, first_head = split_first_head(profile, events)
    assert outside == [expected.get(None, 0)] + ([expected["clocked_run"]] if mode == "precise" else [])
    assert sum(mine) == expected.get("clocked_run", 0) + (first_head if mode == "precise" else 0)


@pytest.mark.parametrize("mode", MODES)
def test_every_call_edge_gets_exactly_its_calls_and_time(mode):
    profile, events, rules = clocked_run(mode, work_rules)
    expected = model_edges(events, rules)
    clocked = {"leaf", "numbers", "fails", "catches", "driver"}
    got = {(caller.qualname if caller else None, callee.qualname): [stats.calls, stats.cycles, stats.inclusive_cycles]
           for caller, callee, stats in profile.edges if callee.filename == "<clocked>"}
    assert got == {key: value for key, value in expected.items() if key[1] in clocked}
    assert got[("catches", "fails")][0] == 4 and got[("driver", "numbers")][1] > 0


@pytest.mark.parametrize("mode", MODES)
def test_blocks_and_instructions_add_up_to_their_function(mode):
    profile, _, _ = clocked_run(mode, work_rules)
    for function in (f for f in profile.functions if f.filename == "<clocked>"):
        parts = [profile.blocks] + ([profile.instructions] if mode == "precise" else [])
        for records in parts:
            placed = sum(r.cycles for r in records if r.filename == "<clocked>" and r.qualname == function.qualname)
            assert placed + function.unattributed_cycles == function.cycles, function.qualname
        assert function.cycles > function.unattributed_cycles


@pytest.mark.parametrize("mode", MODES)
def test_each_thread_gets_exactly_the_work_of_its_own_events(mode):
    # Two threads run the same code at once, their events interleaving as the
    # GIL passes between them. The test clock runs per thread (a thread's
    # time passes only at its own events), so each thread's figures are the
    # model of its own events alone.
    namespace = clocked_module()
    rules = work_rules(namespace)
    go = threading.Barrier(2)

    def worker():
        go.wait()
        namespace["driver"]()

    with _testclock.on_test_clock(heads=HEADS, tails=TAILS, rules=rules), Recorder(mode) as recorder:
        ocular.start_tracing(mode=mode, perfetto=False, deinstrument_threshold=0)
        noop()
        workers = [threading.Thread(target=worker) for _ in range(2)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        profile = ocular.stop_tracing()
    events = recorder.threads_window()
    threads = {t.native_id: t for t in profile.threads}
    for thread in workers:
        expected, calls, _ = model(events[thread.native_id], rules)
        functions = {f.qualname: f for f in threads[thread.native_id].functions if f.filename == "<clocked>"}
        assert set(functions) == {"leaf", "numbers", "fails", "catches", "driver"}
        for name, function in functions.items():
            assert (function.cycles, function.calls) == (expected[name], calls[name]), name
        assert functions["driver"].inclusive_cycles == sum(expected[n] for n in functions)
    merged = {f.qualname: f.cycles for f in profile.functions if f.filename == "<clocked>"}
    assert merged["leaf"] == sum(model(events[t.native_id], rules)[0]["leaf"] for t in workers)


def llround(x):
    """C's llround for x >= 0: halves away from zero (Python's round() goes to even)."""
    return math.floor(x + 0.5)


@pytest.mark.parametrize("mode", MODES)
def test_sampled_estimates_are_the_warmup_plus_the_windows_scaled_by_the_untraced_share(mode):
    # At a threshold above 0 the run is sampled: traced whole in a warm-up,
    # then only in windows. On the test clock the test switches the windows
    # itself (there is no clock thread) and the program runs `gap` ticks
    # unseen before each, besides a driver() call whose events Ocular does not
    # get. The estimate is the warm-up's figures plus the windows' times the
    # scale: the program's time after the warm-up over its time in the
    # windows, both known here exactly.
    namespace = clocked_module()
    rules = work_rules(namespace)
    gap = 250_000
    with _testclock.on_test_clock(heads=HEADS, tails=TAILS, rules=rules), Recorder(mode) as recorder:
        ocular.start_tracing(mode=mode, perfetto=False, deinstrument_threshold=500)
        noop()
        namespace["driver"]()
        marks = [len(recorder.seen)]
        opened = [_testclock.switch_window()]  # the warm-up ends
        for _ in range(2):
            _testclock.advance(gap)
            namespace["driver"]()  # between windows: Ocular sees none of it
            marks.append(len(recorder.seen))
            opened.append(_testclock.switch_window())
            namespace["driver"]()
            marks.append(len(recorder.seen))
            opened.append(_testclock.switch_window())
        profile = ocular.stop_tracing()
    assert opened == [False, True, False, True, False]
    warmup = recorder.programs(recorder.bounds()[0], marks[0])
    windows = [recorder.programs(marks[1], marks[2]), recorder.programs(marks[3], marks[4])]
    work_in_windows = sum(work_of(rules, *event) for window in windows for event in window)
    scale = (2 * gap + work_in_windows) / work_in_windows
    assert profile.sampling.windows == 2 and not profile.sampling.whole
    assert profile.sampling.scale == pytest.approx(scale, rel=1e-12)

    clocked = {"leaf", "numbers", "fails", "catches", "driver"}
    base_edges = model_edges(warmup, rules)
    window_edges = {}
    for window in windows:
        for key, (calls, self_cycles, _) in model_edges(window, rules).items():
            totals = window_edges.setdefault(key, [0, 0])
            totals[0] += calls
            totals[1] += self_cycles
    base_calls = model(warmup, rules)[1]
    window_calls = [model(window, rules)[1] for window in windows]
    functions = {f.qualname: f for f in profile.functions if f.filename == "<clocked>"}
    assert set(functions) == clocked
    for name, function in functions.items():
        recorded_calls = base_calls[name] + sum(calls[name] for calls in window_calls)
        seen_cycles = sum(v[1] for k, v in window_edges.items() if k[1] == name)
        base_cycles = sum(v[1] for k, v in base_edges.items() if k[1] == name)
        # each caller/callee pair scaled and rounded once: a function's self is their sum
        estimate = base_cycles + sum(llround(v[1] * scale) for k, v in window_edges.items() if k[1] == name)
        assert function.calls == base_calls[name] + llround((recorded_calls - base_calls[name]) * scale), name
        assert function.cycles == estimate, name
        assert (function.sampled_calls, function.sampled_cycles) == (recorded_calls, base_cycles + seen_cycles), name
        assert function.windows == 2, name
    assert functions["leaf"].calls == 4 + llround(8 * scale)


@pytest.mark.parametrize("mode", MODES)
def test_each_events_cost_is_taken_off_exactly(mode):
    # No work anywhere: every event costs its head and tail, and nothing else
    # happens. Once the costs are taken off, every figure is zero.
    profile, events, _ = clocked_run(mode, [])
    outside, first_head = split_first_head(profile, events)
    assert outside == [0] or outside == [0, 0]
    first_code = events[0][0]
    assert [f for f in profile.functions if (f.cycles or f.inclusive_cycles) and f.qualname != first_code.co_qualname] == []
    assert [b for b in profile.blocks if b.cycles and b.qualname != first_code.co_qualname] == []
    assert [i for i in profile.instructions if i.cycles and i.qualname != first_code.co_qualname] == []
    (thread,) = profile.threads
    assert thread.overhead_cycles == sum(HEADS[k] + TAILS[k] for _, k, _ in events) - first_head
    assert thread.covered_cycles == thread.overhead_cycles + first_head
    assert profile.total_cycles == first_head


@pytest.mark.parametrize("mode", MODES)
def test_the_thread_account_is_the_work_plus_the_costs(mode):
    profile, events, rules = clocked_run(mode, work_rules)
    (thread,) = profile.threads
    work = sum(work_of(rules, *event) for event in events)
    _, first_head = split_first_head(profile, events)
    assert thread.overhead_cycles == sum(HEADS[k] + TAILS[k] for _, k, _ in events) - first_head
    assert thread.covered_cycles == work + thread.overhead_cycles + first_head
    assert profile.total_cycles == work + first_head
    assert sum(f.cycles for f in profile.functions) + thread.untraced_cycles == work + first_head
    assert thread.lost_cycles == 0 and thread.ocular_cycles == 0


def test_precise_instructions_get_the_work_of_the_event_that_ends_them():
    def rules(namespace):
        leaf = namespace["leaf"].__code__
        offsets = sorted({i.offset for i in dis.get_instructions(leaf)})
        # a different amount at every instruction of leaf, and per kind elsewhere
        return [(leaf, "instruction", offset, 100 + 7 * n) for n, offset in enumerate(offsets)] + work_rules(namespace)

    profile, events, rules = clocked_run("precise", rules)
    _, _, expected = model(events, rules)
    got = {(i.qualname, i.offset): i.cycles for i in profile.instructions if i.filename == "<clocked>"}
    want = {key: cycles for key, cycles in expected.items() if key[0] in {q for q, _ in got}}
    assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}
    leaf_values = {v for (q, _), v in want.items() if q == "leaf"}
    assert len(leaf_values) >= 8  # the per-instruction amounts reached distinct instructions
    leaf = rules[0][0]
    leaf_lines = range(leaf.co_firstlineno, leaf.co_firstlineno + 6)
    lines = sum(line.cycles for line in profile.lines if line.filename == "<clocked>" and line.lineno in leaf_lines)
    assert lines == sum(v for (q, _), v in want.items() if q == "leaf") > 0




@pytest.mark.parametrize("mode", MODES)
def test_offsets_past_256_bytes_cost_their_extra_and_no_more(mode):
    # sys.monitoring passes offsets past 256 bytes as new ints, which costs
    # the event more: `far`'s loop is `near`'s past that point. With the same
    # work per event and the extra cost of a far offset taken off, the two
    # loops read the same, to the cycle.
    namespace = {}
    exec(compile(workloads.FAR_AND_NEAR_SOURCE, "<far-and-near>", "exec"), namespace)
    assert len(namespace["far"].__code__.co_code) > 300
    kind = "instruction" if mode == "precise" else "edge"
    rules = [(namespace[name].__code__, kind, None, 40) for name in ("near", "far")]
    with _testclock.on_test_clock(heads=HEADS, tails=TAILS, far=(11, 13), rules=rules), Recorder(mode) as recorder:
        ocular.start_tracing(mode=mode, perfetto=False, deinstrument_threshold=0, include_only="<far-and-near>")
        noop()
        namespace["near"](50)
        namespace["far"](50)
        profile = ocular.stop_tracing()
    cycles = {f.qualname: f.cycles for f in profile.functions}
    events = {name: [offset for code, k, offset in recorder.traced_window() if k == kind and code.co_qualname == name]
              for name in ("near", "far")}
    assert sum(o > 256 for o in events["far"]) >= 50 and max(events["near"]) < 256
    for name in ("near", "far"):
        assert cycles[name] == 40 * len(events[name]) > 0, name
