"""The results model: plain immutable records built from the engine's raw
counters at stop_tracing()."""

import dis
import sys
from dataclasses import dataclass, field

# ---- records ---------------------------------------------------------------


@dataclass(frozen=True, order=True)
class FunctionStats:
    filename: str
    qualname: str
    firstlineno: int
    calls: int  # PY_START events recorded (capped by the de-instrumentation threshold)
    cycles: int  # self cycles: time in the function's own code, callees excluded


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


@dataclass(frozen=True, order=True)
class LineStats:
    filename: str
    lineno: int
    hits: int  # times the line ran (the most hits of its instructions)
    cycles: int


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
class Profile:
    mode: str
    deinstrument_threshold: int
    tsc_hz: float
    duration_ns: int
    events: int  # events delivered to Ocular's callbacks while recording
    disabled_sites: int
    unattributed_cycles: int  # cycles that could not be given to a block/instruction
    functions: tuple = ()
    blocks: tuple = ()
    lines: tuple = ()
    instructions: tuple = ()
    sites: tuple = ()
    event_cost_cycles: int = 0  # calibrated at start, subtracted from every interval
    lost_frames: int = 0  # frames that ended without an event Ocular saw
    failure: str | None = None  # why recording stopped early, if it did
    trace_path: str | None = None
    trace_events: int = 0
    trace_block_slices: int = 0  # slices in the trace file (instructions not counted)
    trace_function_slices: int = 0
    dropped_events: int = 0
    trace_error: str | None = None
    clock_source: str = field(default="rdtsc")

    @property
    def total_cycles(self):
        return sum(f.cycles for f in self.functions)

    def cycles_to_ns(self, cycles):
        return cycles * 1e9 / self.tsc_hz if self.tsc_hz else 0.0

    def report(self, limit=20):
        from ._report import render

        return render(self, limit)

    def __str__(self):
        return self.report()


# ---- building ----------------------------------------------------------------

_SITE_EVENTS = {
    "RETURN_VALUE": "PY_RETURN",
    "RETURN_CONST": "PY_RETURN",
    "YIELD_VALUE": "PY_YIELD",
    "JUMP_FORWARD": "JUMP",
    "JUMP_BACKWARD": "JUMP",
}


def _site_event(instr, alt):
    if instr.opname == "RESUME":
        return "PY_START" if (instr.arg or 0) & 3 == 0 else "PY_RESUME"
    if instr.opname in _SITE_EVENTS:
        return _SITE_EVENTS[instr.opname]
    if hasattr(sys.monitoring.events, "BRANCH_LEFT"):
        return "BRANCH_RIGHT" if alt else "BRANCH_LEFT"
    return "BRANCH"


def _line_table(code):
    """{offset: line}; None where the compiler gave no line (and for the line 0
    of a module's RESUME)."""
    lines = {}
    for start, end, line in code.co_lines():
        for offset in range(start, end, 2):
            lines[offset] = line if line else None
    return lines


def _spread(total, count):
    """Split an integer total over `count` parts exactly (remainder to the last)."""
    share = total // count if count else 0
    return [share] * (count - 1) + [total - share * (count - 1)] if count else []


class _CodeResult:
    def __init__(self, code, calls, self_cycles, raw_blocks, sites, alt_sites, raw_insns):
        self.code = code
        self.calls = calls
        self.self_cycles = self_cycles
        self.raw_blocks = raw_blocks
        self.sites = sites
        self.alt_sites = alt_sites
        self.raw_insns = raw_insns
        self.instrs = list(dis.get_instructions(code))
        self.by_offset = {i.offset: i for i in self.instrs}
        self.lines = _line_table(code)

    def block_instructions(self):
        """[(start_offset, hits, cycles, [instructions])] in offset order."""
        starts = [b[0] for b in self.raw_blocks]
        result = []
        index = 0
        for number, (start, _n_instr, hits, cycles) in enumerate(self.raw_blocks):
            end = starts[number + 1] if number + 1 < len(starts) else float("inf")
            members = []
            while index < len(self.instrs) and self.instrs[index].offset < end:
                if self.instrs[index].offset >= start:
                    members.append(self.instrs[index])
                index += 1
            result.append((start, hits, cycles, members))
        return result


def build_profile(run, totals, raw, specialized, trace_stats):
    precise = run.mode == "precise"
    functions, blocks, instructions, sites = [], [], [], []
    lines = {}
    for entry in raw:
        result = _CodeResult(*entry)
        code = result.code
        filename, qualname = code.co_filename, code.co_qualname
        if result.calls or result.self_cycles:
            functions.append(FunctionStats(filename, qualname, code.co_firstlineno, result.calls,
                                           max(result.self_cycles, 0)))
        site_hits = dict(result.sites)
        insn_hits = {offset: (hits, cycles) for offset, hits, cycles in result.raw_insns}
        code_specialized = specialized.get(code, {})
        for start, hits, cycles, members in result.block_instructions():
            if not members:
                continue
            if precise:
                per_instr = []
                for instr in members:
                    hits_i, cycles_i = insn_hits.get(instr.offset, (0, 0))
                    if instr.opname == "RESUME":  # no INSTRUCTION event: its hits are PY_START/PY_RESUME
                        hits_i = site_hits.get(instr.offset, 0)
                    per_instr.append((instr, hits_i, max(cycles_i, 0)))
                hits = per_instr[0][1]
                cycles = sum(c for _, _, c in per_instr)
            else:
                # Noise can leave a tiny block's net cycles (after the event
                # cost is subtracted) below zero: report it as zero.
                cycles = max(cycles, 0)
                per_instr = [(instr, hits, share)
                             for instr, share in zip(members, _spread(cycles, len(members)))]
            if not hits and not cycles:
                continue
            block_lines = [result.lines.get(i.offset) for i in members]
            known = [line for line in block_lines if line is not None]
            blocks.append(BlockStats(filename, qualname, start, members[-1].offset,
                                     min(known) if known else None, max(known) if known else None,
                                     len(members), hits, cycles))
            for instr, hits_i, cycles_i in per_instr:
                lineno = result.lines.get(instr.offset)
                if hits_i or cycles_i:
                    instructions.append(InstructionStats(
                        filename, qualname, instr.offset, instr.opname, lineno, hits_i,
                        cycles_i, code_specialized.get(instr.offset)))
                if lineno is not None:
                    line_hits, line_cycles = lines.get((filename, lineno), (0, 0))
                    lines[(filename, lineno)] = (max(line_hits, hits_i), line_cycles + cycles_i)
        for offset, hits in result.sites:
            instr = result.by_offset.get(offset)
            if instr is not None:
                sites.append(SiteStats(filename, qualname, _site_event(instr, False), offset, hits,
                                       bool(run.threshold) and hits >= run.threshold))
        for offset, hits in result.alt_sites:
            instr = result.by_offset.get(offset)
            if instr is not None:
                sites.append(SiteStats(filename, qualname, _site_event(instr, True), offset, hits,
                                       bool(run.threshold) and hits >= run.threshold))
        for offset, (hits, _cycles) in insn_hits.items():
            if hits:
                sites.append(SiteStats(filename, qualname, "INSTRUCTION", offset, hits,
                                       bool(run.threshold) and hits >= run.threshold))
    line_stats = [LineStats(f, n, h, c) for (f, n), (h, c) in lines.items() if h or c]
    trace_stats = trace_stats or {}
    return Profile(
        mode=run.mode,
        deinstrument_threshold=run.threshold,
        tsc_hz=totals["tsc_hz"],
        duration_ns=totals["duration_ns"],
        events=totals["events"],
        disabled_sites=totals["disabled_sites"],
        unattributed_cycles=totals["unattributed_cycles"],
        functions=tuple(sorted(functions, key=lambda f: -f.cycles)),
        blocks=tuple(sorted(blocks, key=lambda b: -b.cycles)),
        lines=tuple(sorted(line_stats, key=lambda line: -line.cycles)),
        instructions=tuple(sorted(instructions, key=lambda i: -i.cycles)),
        sites=tuple(sites),
        event_cost_cycles=totals["event_cost"],
        lost_frames=totals["lost_frames"],
        failure=totals["failure"],
        trace_path=run.output,
        trace_events=trace_stats.get("events_written", 0),
        trace_block_slices=trace_stats.get("block_slices", 0),
        trace_function_slices=trace_stats.get("function_slices", 0),
        dropped_events=trace_stats.get("events_dropped", 0),
        trace_error=trace_stats.get("error_message") or None,
        clock_source=totals["clock_source"],
    )
