"""Building a Profile from the engine's raw results (collect.c's tuples).

Code objects that share a filename, qualified name and first line (the same
source compiled twice, a module imported twice) become one function. All
figures arrive as whole cycles; every sum below is a sum of integers, so the
invariants the records promise (blocks + unattributed = self, instructions =
blocks in precise mode, a thread's account) hold exactly.
"""

import dataclasses
import functools
import dis
import statistics
import sys

from . import _engine
from ._profile import (
    BlockStats,
    CallStats,
    Deferred,
    FunctionStats,
    InstructionStats,
    LineStats,
    Profile,
    SiteStats,
    Sampling,
    ThreadStats,
)

_OPNAMES = getattr(dis, "_all_opname", dis.opname)
_RESUME = dis.opmap["RESUME"]
_FRAME_EVENTS = {
    "RETURN_VALUE": "PY_RETURN",
    "RETURN_CONST": "PY_RETURN",
    "YIELD_VALUE": "PY_YIELD",
    "JUMP_FORWARD": "JUMP",
    "JUMP_BACKWARD": "JUMP",
}
_BRANCH_EVENTS = ("BRANCH_LEFT", "BRANCH_RIGHT") if hasattr(sys.monitoring.events, "BRANCH_LEFT") \
    else ("BRANCH", "BRANCH")


def _site_event(code_bytes, offset, opcode, kind):
    if kind == 2:
        return "INSTRUCTION"
    if opcode == _RESUME:
        arg = code_bytes[offset + 1] if offset + 1 < len(code_bytes) else 0
        return "PY_START" if arg & 3 == 0 else "PY_RESUME"
    name = _FRAME_EVENTS.get(dis.opname[opcode])
    return name or _BRANCH_EVENTS[kind]


def _specialized(adaptive, raw_insns):
    """{offset: specialised opname} where CPython's adaptive bytecode (a copy
    read before Ocular unhooked, while the run's specialisations were in
    place) holds a specialisation of the base instruction. Reads the adaptive
    bytes directly: 3.12's dis.get_instructions(adaptive=True) raises on
    instrumented code."""
    names = {}
    for offset, opcode, *_ in raw_insns:
        op = adaptive[offset] if offset < len(adaptive) else 0
        name = _OPNAMES[op] if op < len(_OPNAMES) else None
        base = dis.opname[opcode]
        if name and name != base and name.startswith(base):
            names[offset] = name
    return names


# How much the cost of one event depends on the code around it, beyond what a
# calibration can see: across kernel bodies and loop lengths it was measured
# to vary by +-8 %, and an interval with no work between two events (a lone
# jump reached by a branch: the end of one callback overlaps the start of the
# next) comes out 15-20 % cheaper than the kernels' average. Instruction
# intervals vary more: a LOAD_CONST or LOAD_FAST right after a BINARY_OP or a
# LOAD_ATTR (generic under INSTRUCTION events) comes out 0.19-0.38 of an event
# below zero, the same site in every run (3.13.0: 0.32-0.38 on one day and
# 0.19-0.29 on another; 3.12.1: 0.26-0.32; fenced clock reads give the same,
# so it is not the reordering of rdtsc), the other cheap instructions within
# +-0.18. The cause is not found; the spread states it.
CONTEXT_SPREAD = {"edge": 0.20, "instruction": 0.40}


def uncertainty_per_event(calibration):
    """How far off, in cycles, the correction of one event may be: the spread
    of the principal kind's measurement, how much the refreshes moved it, and
    no less than its dependence on context."""
    if not calibration:
        return 0.0
    principal = calibration.costs[calibration.principal]
    drift = 0.0
    if len(calibration.scales) >= 2:
        drift = statistics.pstdev(calibration.scales) * principal.ticks
    return max(principal.spread + drift, CONTEXT_SPREAD[calibration.principal] * principal.ticks)


def far_uncertainty(calibration):
    """An offset past byte 256 reaches the callback as a new int: its cost is
    known, but not how it splits between allocation (before the callback's
    clock read) and release (after); where an interval has such an event at
    one end only, the split matters by up to half of it."""
    return calibration.far.ticks / 2 if calibration else 0.0


def _maker(cls):
    """A fast constructor of a frozen dataclass record from all its fields in
    order. A frozen dataclass's __init__ sets each field through
    object.__setattr__, ~2.5 us for a block's twelve; a profile of 10 000
    code objects has some 100 000 records, and stop_tracing() builds them.
    The constructor is generated, as dataclasses generates __init__, from the
    record's own field names: a dict display builds the instance's __dict__ in
    a third of the time dict(zip(names, values)) takes."""
    names = [f.name for f in dataclasses.fields(cls)]
    parameters = ", ".join(f"v{i}" for i in range(len(names)))
    display = ", ".join(f"{name!r}: v{i}" for i, name in enumerate(names))
    # __name__: code of Ocular's modules is never traced (filter.c), this too
    namespace = {"__name__": __name__, "new": object.__new__, "set_attribute": object.__setattr__, "cls": cls}
    exec(compile(f"def make({parameters}):\n"
                 f"    record = new(cls)\n"
                 f"    set_attribute(record, '__dict__', {{{display}}})\n"
                 f"    return record\n", f"<ocular record {cls.__name__}>", "exec"), namespace)
    return namespace["make"]


_block = _maker(BlockStats)
_line = _maker(LineStats)
_instruction = _maker(InstructionStats)
_site = _maker(SiteStats)
_function = _maker(FunctionStats)


class RetiredCode:
    """What is left of a code object that died during the run (its data was
    handed over and released then): what the records need of it."""

    __slots__ = ("co_filename", "co_qualname", "co_firstlineno", "co_code")

    def __init__(self, key, code_bytes):
        self.co_filename, self.co_qualname, self.co_firstlineno = key
        self.co_code = code_bytes


class _Figures:
    """Code objects' results summed by position (one function's, in Graveyard)."""

    __slots__ = ("blocks", "lines", "insns", "sites", "unplaced", "tainted")

    def __init__(self):
        self.blocks, self.lines, self.insns, self.sites = {}, {}, {}, {}
        self.unplaced = self.tainted = 0

    def add(self, raw):
        _code, _id, blocks, lines, insns, sites, unplaced, tainted = raw
        for start, end, n, first, last, hits, cycles in blocks:
            old = self.blocks.get(start)
            self.blocks[start] = (start, end, n, first, last, hits + (old[5] if old else 0),
                                  cycles + (old[6] if old else 0))
        for lineno, hits, cycles, shared in lines:
            old = self.lines.get(lineno, (lineno, 0, 0, 0))
            self.lines[lineno] = (lineno, old[1] + hits, old[2] + cycles, old[3] or shared)
        for offset, opcode, lineno, hits, cycles in insns:
            old = self.insns.get(offset, (offset, opcode, lineno, 0, 0))
            self.insns[offset] = (offset, opcode, lineno, old[3] + hits, old[4] + cycles)
        for offset, opcode, hits, kind in sites:
            old = self.sites.get((offset, kind), (offset, opcode, 0, kind))
            self.sites[(offset, kind)] = (offset, opcode, old[2] + hits, kind)
        self.unplaced += unplaced
        self.tainted += tainted


class Graveyard:
    """Results of code objects that died during the run, folded by function
    (filename, qualname, first line): a process that keeps compiling the same
    source (exec in a loop, templates) keeps one entry per function, not one
    per code object. Each entry keeps what was observed and, for a sampled
    run's estimate, the warm-up's part of it (the base, which is not scaled)."""

    def __init__(self):
        self.entries = {}  # key -> [code_bytes, observed _Figures, base _Figures]

    def __len__(self):
        return len(self.entries)

    def take(self, retired):
        for key, code_bytes, observed, base in retired:
            entry = self.entries.get(key)
            if entry is None:
                entry = self.entries[key] = [code_bytes, _Figures(), _Figures()]
            entry[1].add(observed)
            entry[2].add(base)

    def raw_codes(self, scale=None):
        """The entries as collect.c's code tuples (code id -1): as observed,
        or, with `scale`, estimated as collect.c estimates (base + (observed -
        base) * scale)."""
        for key, (code_bytes, seen, base) in self.entries.items():
            def at(observed, warmup):
                return observed if scale is None else round(warmup + (observed - warmup) * scale)

            def part(table, position, index):
                row = table.get(position)
                return row[index] if row else 0

            yield (RetiredCode(key, code_bytes), -1,
                   [(a, b, n, f, l, at(h, part(base.blocks, a, 5)), at(c, part(base.blocks, a, 6)))
                    for a, b, n, f, l, h, c in seen.blocks.values()],
                   [(ln, at(h, part(base.lines, ln, 1)), at(c, part(base.lines, ln, 2)), sh)
                    for ln, h, c, sh in seen.lines.values()],
                   [(o, op, ln, at(h, part(base.insns, o, 3)), at(c, part(base.insns, o, 4)))
                    for o, op, ln, h, c in seen.insns.values()],
                   [(o, op, at(h, part(base.sites, (o, k), 2)), k) for o, op, h, k in seen.sites.values()],
                   at(seen.unplaced, base.unplaced), at(seen.tainted, base.tainted))


class _Function:
    """Accumulators for one function (all code objects with its key)."""

    __slots__ = ("key", "calls", "self", "inclusive", "blocks", "events", "tainted", "windows")

    def __init__(self, key):
        self.key = key
        self.calls = self.self = self.inclusive = self.blocks = self.events = self.tainted = 0
        self.windows = 0


class _Recorded:
    """What was recorded, by key, to stand beside an estimate (sampled_*)."""

    def __init__(self, raw):
        self.blocks, self.lines, self.funcs, self.thread_funcs = {}, {}, {}, {}
        self._insns = []  # (id or key, raw instructions): no code object, which must not be kept alive
        keys = dict(raw.get("retired", {}))
        for code, code_id, raw_blocks, raw_lines, raw_insns, _sites, _unplaced, _tainted in raw["codes"]:
            key = (code.co_filename, code.co_qualname, code.co_firstlineno)
            if code_id >= 0:
                keys[code_id] = key
            else:
                code_id = key  # a graveyard entry: one per key
            if raw_insns:
                self._insns.append((code_id, raw_insns))
            for start, _end, _n, _first, _last, hits, cycles in raw_blocks:
                self.blocks[(code_id, start)] = (hits, cycles)
            for lineno, hits, cycles, _shared in raw_lines:
                old = self.lines.get((key[0], lineno), (0, 0))
                self.lines[(key[0], lineno)] = (max(hits, old[0]), cycles + old[1])
        for tid, _covered, _outside, _removed, _own, _lost, raw_funcs, _edges in raw["threads"]:
            for code_id, calls, self_cycles, _inclusive, windows in raw_funcs:
                key = keys[code_id]
                old = self.funcs.get(key, (0, 0, 0))
                self.funcs[key] = (old[0] + calls, old[1] + self_cycles, max(old[2], windows))
                old = self.thread_funcs.get((tid, key), (0, 0, 0))
                self.thread_funcs[(tid, key)] = (old[0] + calls, old[1] + self_cycles, max(old[2], windows))

    @functools.cached_property
    def insns(self):
        """Read only by Profile.instructions, itself built on first use."""
        insns = {}
        for code_id, raw_insns in self._insns:
            for offset, _op, _line, hits, cycles in raw_insns:
                insns[(code_id, offset)] = (hits, cycles)
        return insns


def _sampling(run, totals):
    if not run.sample_interval_ms:
        return None
    done = bool(totals.get("warmup_done"))
    scale = totals["scale"] if done else 1.0
    tsc_hz = totals["tsc_hz"] or 1.0
    return Sampling(
        interval_ms=run.sample_interval_ms, window_ms=run.window_ms, windows=totals["windows"],
        window_ns=round(totals["window_ticks"] * 1e9 / tsc_hz),
        scale=scale, observed_events=totals["events"], estimated_events=round(totals["events"] * scale),
        version_bumps=totals.get("version_bumps", 0), budget_exhausted=bool(totals.get("budget_exhausted")),
        warmup_ns=round(totals.get("warmup_ticks", 0) * 1e9 / tsc_hz), whole=not done)


def _trace_kept(trace_stats, totals):
    """What the trace file holds, in words, when its size budget or detail left
    something out (None when it holds everything)."""
    stage = trace_stats.get("budget_stage", 0) if trace_stats else 0
    if not stage:
        return None
    skipped = trace_stats.get("budget_skipped", 0)
    if stage == 1 and not trace_stats.get("functions_only_from_ns"):
        return "function slices only (trace_detail='functions')"
    parts = ["block and instruction slices until the size budget's 80 %, function slices after"]
    if stage == 2:
        parts = ["block and instruction slices until 80 % of the size budget, function slices until "
                 "100 %, then nothing new"]
    return f"{parts[0]} ({skipped:,} records left out)"


def _with_graveyard(raw, graveyard, scale=None):
    if not graveyard:
        return raw
    return dict(raw, codes=list(raw["codes"]) + list(graveyard.raw_codes(scale)))


def build_profile(run, totals, raw, calibration, trace_stats, thread_names, adaptive_code=None,
                  estimate=None, graveyard=None):
    """The Profile of a run. `raw` is what was recorded; `estimate`, when the
    run was sampled, the same results scaled to the whole run (collect.c);
    `graveyard`, what code objects that died during the run left."""
    sampling = _sampling(run, totals)
    adaptive_code = adaptive_code or {}
    raw = _with_graveyard(raw, graveyard)
    if estimate is not None:
        estimate = _with_graveyard(estimate, graveyard, totals["scale"])
    recorded = _Recorded(raw) if estimate is not None else None
    if estimate is not None:
        raw = estimate
    delta = uncertainty_per_event(calibration)
    delta_far = delta + far_uncertainty(calibration)
    far_offset = _engine.FAR_OFFSET
    opnames = dis.opname
    disabled_at = run.threshold if run.threshold and not sampling else None
    key_of_id, functions = dict(raw.get("retired", {})), {}
    code_blocks = []  # (key, BlockStats fields...) until the functions' windows are known
    code_insns, code_sites = [], []  # per code object: read on first use
    lines = {}
    for code, code_id, raw_blocks, raw_lines, raw_insns, raw_sites, _unplaced, tainted in raw["codes"]:
        filename, qualname = code.co_filename, code.co_qualname
        key = (filename, qualname, code.co_firstlineno)
        if code_id >= 0:
            key_of_id[code_id] = key
        else:
            code_id = key  # a graveyard entry: one per key, as in _Recorded
        function = functions.get(key) or functions.setdefault(key, _Function(key))
        function.tainted += tainted
        for start, end, n_instr, first, last, hits, cycles in raw_blocks:
            function.blocks += cycles
            function.events += hits
            sampled_hits, sampled_cycles = (recorded.blocks.get((code_id, start), (0, 0)) if recorded
                                            else (hits, cycles))
            code_blocks.append((key, filename, qualname, start, end, first if first > 0 else None,
                                last if last > 0 else None, n_instr, hits, cycles,
                                hits * (delta_far if end > far_offset else delta), sampled_hits,
                                sampled_cycles))
        # offsets past FAR_OFFSET cost more to correct; most code has none
        line_far = (() if len(code.co_code) <= far_offset else
                    {lineno for offset, _op, lineno, _hits, _cycles in raw_insns if offset > far_offset})
        for lineno, hits, cycles, shared in raw_lines:
            far = lineno in line_far
            old = lines.get((filename, lineno))
            if old:
                hits, cycles, shared, far = max(hits, old[0]), cycles + old[1], shared or old[2], far or old[3]
            lines[(filename, lineno)] = (hits, cycles, bool(shared), far, key)
        # kept without the code object, which the profile must not keep alive
        if raw_insns:
            code_insns.append((code_id, key, raw_insns, adaptive_code.get(code)))
        if raw_sites:
            code_sites.append((filename, qualname, code.co_code, raw_sites))

    thread_records = []
    edges = {}
    for tid, covered, outside, removed, own, lost, raw_funcs, raw_edges in raw["threads"]:
        local = {}
        for code_id, calls, self_cycles, inclusive, windows in raw_funcs:
            key = key_of_id[code_id]
            for function in (functions[key], local.get(key) or local.setdefault(key, _Function(key))):
                function.calls += calls
                function.self += self_cycles
                function.inclusive += inclusive
                function.windows = max(function.windows, windows)
        local_records = {}
        for key, f in local.items():
            sampled_calls, sampled_cycles, windows = (recorded.thread_funcs.get((tid, key), (0, 0, 0))
                                                      if recorded else (f.calls, f.self, 0))
            local_records[key] = _function(*key, f.calls, f.self, f.inclusive, 0, 0, 0,
                                           sampled_calls, sampled_cycles, windows if sampling else 0)
        local_edges = []
        for caller_id, callee_id, calls, self_cycles, inclusive in raw_edges:
            caller = key_of_id.get(caller_id) if caller_id >= 0 else None
            callee = key_of_id[callee_id]
            local_edges.append((local_records.get(caller), local_records[callee],
                                CallStats(calls, self_cycles, inclusive)))
            merged = edges.get((caller, callee), (0, 0, 0))
            edges[(caller, callee)] = (merged[0] + calls, merged[1] + self_cycles, merged[2] + inclusive)
        thread_records.append(ThreadStats(
            native_id=tid, name=thread_names.get(tid), covered_cycles=covered,
            functions=tuple(sorted(local_records.values(), key=lambda f: -f.cycles)),
            untraced_cycles=outside, lost_cycles=lost, overhead_cycles=removed, ocular_cycles=own,
            edges=tuple(local_edges)))

    # The relative error of what the windows add (1/sqrt(windows)); the
    # warm-up's part of a figure is measured, not estimated, and has none.
    sampling_error = {key: 1.0 / max(f.windows, 1) ** 0.5 if sampling else 0.0 for key, f in functions.items()}
    factor = sampling.scale if sampling and sampling.scale > 1 else 0.0

    def estimated(key, figure, observed):
        """The uncertainty of `figure`'s estimated part: estimate = base +
        (observed - base) * scale, so the windows' part, estimate - base, is
        (estimate - observed) * scale / (scale - 1)."""
        if not factor:
            return 0.0
        return abs((figure - observed) * factor / (factor - 1)) * sampling_error[key]
    records = {}
    for key, f in functions.items():
        if not (f.calls or f.self or f.blocks):
            continue
        unattributed = f.self - f.blocks
        sampled_calls, sampled_cycles, windows = (recorded.funcs.get(key, (0, 0, 0)) if recorded
                                                  else (f.calls, f.self, 0))
        records[key] = _function(
            *key, f.calls, f.self, f.inclusive, unattributed,
            min(f.tainted, unattributed) if unattributed > 0 else 0,
            round((f.events + 2 * f.calls) * delta + estimated(key, f.self, sampled_cycles)),
            sampled_calls, sampled_cycles, windows if sampling else 0)
    blocks = [_block(*fields[1:10], round(fields[10] + estimated(fields[0], fields[9], fields[12])),
                     *fields[11:]) for fields in code_blocks]

    def instructions():
        records = []
        for code_id, key, raw_insns, adaptive in code_insns:
            filename, qualname = key[0], key[1]
            names = _specialized(adaptive, raw_insns) if adaptive else {}
            for offset, opcode, lineno, hits, cycles in raw_insns:
                sampled_hits, sampled_cycles = (recorded.insns.get((code_id, offset), (0, 0)) if recorded
                                                else (hits, cycles))
                correction = hits * (delta_far if offset > far_offset else delta)
                records.append(_instruction(
                    filename, qualname, offset, opnames[opcode], lineno if lineno > 0 else None, hits,
                    cycles, names.get(offset), round(correction + estimated(key, cycles, sampled_cycles)),
                    sampled_hits, sampled_cycles))
        return sorted(records, key=lambda i: -i.cycles)

    def sites():
        return [_site(filename, qualname, _site_event(code_bytes, offset, opcode, kind),
                      offset, hits, disabled_at is not None and hits >= disabled_at)
                for filename, qualname, code_bytes, raw_sites in code_sites
                for offset, opcode, hits, kind in raw_sites]

    merged_edges = tuple((records.get(caller), records[callee], CallStats(*values))
                         for (caller, callee), values in edges.items() if callee in records)
    line_stats = []
    for (filename, lineno), (hits, cycles, shared, far, key) in lines.items():
        sampled_hits, sampled_cycles = (recorded.lines.get((filename, lineno), (0, 0)) if recorded
                                        else (hits, cycles))
        line_stats.append(_line(filename, lineno, hits, cycles, shared,
                                round(hits * (delta_far if far else delta) + estimated(key, cycles, sampled_cycles)),
                                sampled_hits, sampled_cycles))
    trace_stats = trace_stats or {}
    return Profile(
        mode=run.mode,
        deinstrument_threshold=run.threshold,
        tsc_hz=totals["tsc_hz"],
        duration_ns=totals["duration_ns"],
        events=totals["events"],
        disabled_sites=totals["disabled_sites"],
        functions=tuple(sorted(records.values(), key=lambda f: -f.cycles)),
        blocks=tuple(sorted(blocks, key=lambda b: -b.cycles)),
        lines=tuple(sorted(line_stats, key=lambda line: -line.cycles)),
        # a run over 10 000 code objects has some 200 000 of them, which most
        # uses of a profile never read: built on first use
        instructions=Deferred(instructions),
        sites=Deferred(sites),
        threads=tuple(sorted(thread_records, key=lambda t: -t.covered_cycles)),
        calibration=calibration,
        sampling=sampling,
        lost_frames=totals["lost_frames"],
        failure=totals["failure"],
        trace_path=run.output,
        trace_events=trace_stats.get("events_written", 0),
        trace_block_slices=trace_stats.get("block_slices", 0),
        trace_function_slices=trace_stats.get("function_slices", 0),
        dropped_events=trace_stats.get("events_dropped", 0),
        trace_error=trace_stats.get("error_message") or None,
        trace_bytes=trace_stats.get("bytes_written", 0),
        trace_kept=_trace_kept(trace_stats, totals),
        clock_source=totals["clock_source"],
        _edges=merged_edges,
    )


def adaptive_bytecodes(raw):
    """{code: a copy of its adaptive bytecode} for the code objects a precise
    run saw instructions of: read before Ocular unhooks, while the run's
    specialisations are in place; turned into names when Profile.instructions
    is first read."""
    return {code: code._co_code_adaptive for code, _id, _blocks, _lines, raw_insns, *_ in raw["codes"]
            if raw_insns}
