"""Plain-text report of a Profile: where the cycles went, with source.

Shares are of Profile.total_cycles, the program's time as measured (all
threads). A figure no larger than its uncertainty (the calibration's over
the events it took, and at threshold > 0 the sampling's) is shown marked '~';
a line whose figure is a share of a block that spans several lines (adaptive
mode spreads a block evenly) is marked '=', because it was not measured apart
from its neighbours.

Every line fits in WIDTH columns; paths below the working directory are shown
relative to it. `sort` orders every table (SORTS); `thread` gives the view of
one thread (its functions: blocks, lines and instructions are whole-run);
`limit` is the rows per table (None: every row).
"""

import linecache
import os

WIDTH = 100
SORTS = ("self", "inclusive", "calls", "hits")
FEW_WINDOWS = 5  # a sampled figure seen in fewer windows is marked uncertain ('?')


# ---- figures -----------------------------------------------------------------


def _short(filename, width=38):
    """`filename` relative to the working directory when below it, cut to `width`."""
    name = filename
    if os.path.isabs(filename):
        try:
            relative = os.path.relpath(filename)
        except ValueError:  # another drive
            relative = ".."
        if not relative.startswith(".."):
            name = relative
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _source(filename, lineno, width=None):
    if lineno is None:
        return ""
    text = linecache.getline(filename, lineno).strip()
    if width is None or len(text) <= width:
        return text
    return text[: width - 3] + "..."


def _within_noise(cycles, uncertainty):
    return uncertainty > 0 and abs(cycles) <= uncertainty


def _noted(text, cycles, uncertainty):
    """A figure no larger than its uncertainty is shown, marked '~' (it may
    be 0): a tight loop's figure, mostly taken-off overhead, can be one and
    still be the run's largest."""
    return "~" + text if _within_noise(cycles, uncertainty) else text


def _share(cycles, uncertainty, total):
    return _noted(f"{100.0 * cycles / total:.1f}%" if total else "-", cycles, uncertainty)


def _ms(profile, cycles, uncertainty=0):
    return _noted(f"{profile.cycles_to_ns(cycles) / 1e6:.3f}", cycles, uncertainty)


def _count(cycles, uncertainty):
    return _noted(f"{cycles:,}", cycles, uncertainty)


def _instruction_name(instruction):
    """CPython 3.15's profilers' naming: `SPECIALIZED (BASE)` when specialised."""
    if instruction.specialized:
        return f"{instruction.specialized} ({instruction.opname})"
    return instruction.opname


def _function_label(function, width=WIDTH):
    """`qualname  path:line`, the path shortened first when it does not fit."""
    line = f":{function.firstlineno}"
    room = max(12, width - len(function.qualname) - 2 - len(line))
    return f"{function.qualname}  {_short(function.filename, room)}{line}"


def _fit(text, width):
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def _table(title, header, rows, legend=None):
    """Columns right-aligned but the last, which is cut to keep within WIDTH
    (or, if it is a callable, called with the room it has)."""
    if not rows:
        return [title, "  (nothing recorded)", ""]
    rows = [[cell if callable(cell) else str(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header[:-1], *(r[:-1] for r in rows))]
    room = WIDTH - 2 - sum(widths) - 2 * len(widths)
    lines = [title]
    for row in [list(header), *rows]:
        cells = [cell.rjust(width) for cell, width in zip(row[:-1], widths)]
        last = row[-1](room) if callable(row[-1]) else row[-1]
        lines.append(("  " + "  ".join([*cells, _fit(last, room)])).rstrip())
    if legend:
        lines.append("  " + legend)
    lines.append("")
    return lines


def _check_sort(sort):
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(map(repr, SORTS))}, not {sort!r}")


def _check_limit(limit):
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be at least 0 (or None for every row), not {limit}")


def _sorted_functions(functions, sort):
    key = {"self": lambda f: -f.cycles, "inclusive": lambda f: -f.inclusive_cycles,
           "calls": lambda f: -f.calls, "hits": lambda f: -f.calls}[sort]
    return sorted(functions, key=key)


def _sorted_records(records, sort):
    """Blocks, lines, instructions: by cycles, or by hits for calls/hits."""
    if sort in ("calls", "hits"):
        return sorted(records, key=lambda r: -r.hits)
    return sorted(records, key=lambda r: -r.cycles)


# ---- sections --------------------------------------------------------------------


def _ms_text(profile, cycles):
    return f"{profile.cycles_to_ns(cycles) / 1e6:.1f} ms"


def _calibration_lines(profile):
    cal = profile.calibration
    if not cal:
        return []
    principal = cal.costs[cal.principal]
    out = [f"  clock {profile.clock_source} at {profile.tsc_hz / 1e9:.3f} GHz; calibrated in "
           f"{cal.duration_ms:.0f} ms before the run",
           f"  calibration: an {cal.principal} event costs {principal.ticks:.1f} +- {principal.spread:.1f} "
           f"cycles (+{cal.far.ticks:.1f} past byte 256); taken off every figure"]
    if cal.scales:
        low, high = cal.scale_spread
        out.append(f"  recalibrated {len(cal.scales)} time{'s' if len(cal.scales) != 1 else ''} during the run: x{low:.2f} .. x{high:.2f} "
                   "of the start's cost")
    return out


def _sampling_lines(profile):
    sampling = profile.sampling
    if sampling and sampling.whole:
        return [f"  every event traced: the run ended within the sampling's warm-up "
                f"({sampling.warmup_ns / 1e6:.0f} ms, traced whole)"]
    if sampling and not sampling.windows:
        after = max(profile.duration_ns - sampling.warmup_ns, 0)
        return [f"  the first {sampling.warmup_ns / 1e6:.0f} ms traced whole; no sampling window opened in the "
                f"{after / 1e6:.1f} ms after it",
                f"  ({100 * after / max(profile.duration_ns, 1):.0f} % of the run's wall time): that part is "
                "in no figure below (threshold 0 traces all of it)"]
    if sampling:
        return [
            f"  ESTIMATES: the first {sampling.warmup_ns / 1e6:.0f} ms traced whole, then "
            f"{sampling.windows:,} sampling windows of {sampling.window_ms:g} ms every ~{sampling.interval_ms:g} ms",
            f"  they saw {100 * sampling.coverage:.1f} % of the program's time after the warm-up; "
            f"what they saw counts x{sampling.scale:.1f}",
            f"  ({sampling.observed_events:,} events recorded, ~{sampling.estimated_events:,} in the run;"
            f" '?': a function seen in fewer than {FEW_WINDOWS} windows)",
            *(["  WARNING: sampling stopped early to spare the interpreter's instrumentation budget"]
              if sampling.budget_exhausted else []),
        ]
    if profile.deinstrument_threshold:
        return [f"  first {profile.deinstrument_threshold} hits of every site only (sample_interval_ms=None):",
                "  figures describe the start of each loop and the first calls of each function"]
    return []


def _header(profile):
    total = profile.total_cycles
    noise = sum(f.uncertainty for f in profile.functions)  # what the unattributed sum may be off by
    threads = len(profile.threads)
    if threads > 1:
        on = (f"{threads} threads traced: every time below is summed over them (see Threads) "
              "and can exceed the wall time")
    else:
        on = f"{threads} thread traced"
    out = [
        f"Ocular profile: {profile.mode} mode, de-instrumentation threshold "
        f"{profile.deinstrument_threshold or 'off (every event traced)'}",
        f"  traced {profile.duration_ns / 1e6:.1f} ms wall; {on}",
        f"  {profile.events:,} events; {profile.disabled_sites:,} sites de-instrumented",
        f"  program time {_ms_text(profile, total)}: unattributed {_share(profile.unattributed_cycles, noise, total)}"
        f" (no block could take it), untraced code {_share(profile.untraced_cycles, 0, total)}",
        f"  Ocular's overhead removed {_ms_text(profile, profile.overhead_cycles)}; its own time "
        f"(recalibration) {_ms_text(profile, profile.ocular_cycles)}, not in the program's",
        *_sampling_lines(profile),
        *_calibration_lines(profile),
        "  ~: a figure no larger than its uncertainty ("
        + ("the calibration's and the windows'" if profile.sampling and not profile.sampling.whole
           else "the calibration's, over its events") + "): it may be 0",
    ]
    if profile.trace_path:
        dropped = f", {profile.dropped_events:,} dropped" if profile.dropped_events else ""
        out.append(f"  trace: {_short(profile.trace_path, 50)}, {profile.trace_bytes / 1e6:.1f} MB "
                   f"({profile.trace_events:,} events{dropped})")
        if profile.trace_kept:
            out.append(f"  the trace holds {profile.trace_kept}")
    if profile.subprocesses:
        count = len(profile.subprocesses)
        out.append(f"  {count} child process{'es' if count != 1 else ''} profiled, saved as "
                   f"{_short(profile.subprocesses[0], 50)}{' ...' if count > 1 else ''} (ocular.load)")
    if profile.lost_frames:
        out.append(f"  {profile.lost_frames:,} frames ended without an event Ocular saw")
    if profile.failure:
        out.append(f"  WARNING: recording stopped early: {_fit(profile.failure, WIDTH - 36)}")
    out.append("")
    return [_fit(line, WIDTH) for line in out]


def _functions(profile, functions, total, limit, sort, title):
    def few(f):
        return "?" if profile.sampling and profile.sampling.windows and f.windows < FEW_WINDOWS else ""

    rows = [(_share(f.cycles, f.uncertainty, total) + few(f), _ms(profile, f.cycles, f.uncertainty),
             _share(f.inclusive_cycles, f.uncertainty, total), _ms(profile, f.inclusive_cycles, f.uncertainty),
             f"{f.calls:,}", lambda room, f=f: _function_label(f, room))
            for f in _sorted_functions(functions, sort)[:limit]]
    return _table(f"{title} (by {sort})", ("self", "self ms", "incl", "incl ms", "calls", "function"), rows)


def _threads(profile, limit):
    rows = []
    for t in profile.threads[:limit]:
        program = t.program_cycles
        rows.append((f"{t.native_id}", _ms_text(profile, t.covered_cycles), _ms_text(profile, program),
                     _share(t.untraced_cycles, 0, program), _ms_text(profile, t.lost_cycles),
                     f"{len(t.functions):,}", t.name or "?"))
    lines = _table("Threads (wall time of each, from its first event to its last)",
                  ("native id", "wall", "program", "untraced", "lost", "functions", "name"), rows)
    if limit is not None and len(profile.threads) > limit:
        lines.insert(-1, f"  ... and {len(profile.threads) - limit} more threads")
    return lines


def _instructions(profile, total, limit, sort):
    rows = [(_share(i.cycles, i.uncertainty, total), _count(i.cycles, i.uncertainty), f"{i.hits:,}",
             f"{_short(i.filename, 24)}:{i.lineno or '-'}", i.offset, _instruction_name(i),
             _source(i.filename, i.lineno))
            for i in _sorted_records(profile.instructions, sort)[:limit]]
    return _table("Hottest instructions (SPECIALIZED (BASE): CPython's specialisation by the end of the run)",
                 ("share", "cycles", "hits", "line", "offset", "instruction", "source"), rows)


def _block_label(block, width):
    """`qualname  path` (the lines are a column of their own)."""
    room = max(12, width - len(block.qualname) - 2)
    return f"{block.qualname}  {_short(block.filename, room)}"


def _blocks(profile, total, limit, sort):
    rows = [(_share(b.cycles, b.uncertainty, total), _count(b.cycles, b.uncertainty), f"{b.hits:,}",
             f"{b.first_line}-{b.last_line}", f"{b.start_offset}-{b.end_offset}",
             lambda room, b=b: _block_label(b, room))
            for b in _sorted_records(profile.blocks, sort)[:limit]]
    return _table("Hottest basic blocks (their source: the lines table, or profile.annotate)",
                  ("share", "cycles", "hits", "lines", "offsets", "function"), rows)


def _lines(profile, total, limit, sort):
    shown = _sorted_records(profile.lines, sort)[:limit]
    rows = [(_share(line.cycles, line.uncertainty, total) + ("=" if line.shared else " "),
             _count(line.cycles, line.uncertainty), f"{line.hits:,}",
             f"{_short(line.filename, 30)}:{line.lineno}", _source(line.filename, line.lineno))
            for line in shown]
    legend = ("= : a share of a block spanning several lines (spread evenly, not measured alone)"
              if any(line.shared for line in shown) else None)
    return _table("Hottest lines", ("share", "cycles", "hits", "line", "source"), rows, legend)


def _thread_view(profile, thread, limit, sort):
    program = thread.program_cycles
    out = [
        f"Ocular profile of thread {thread.name or '?'} (native id {thread.native_id}): {profile.mode} mode, "
        f"threshold {profile.deinstrument_threshold or 'off'}",
        f"  wall {_ms_text(profile, thread.covered_cycles)} (its first event to its last); program time "
        f"{_ms_text(profile, program)}; untraced code {_share(thread.untraced_cycles, 0, program)}; "
        f"lost {_ms_text(profile, thread.lost_cycles)}",
        f"  Ocular's overhead removed {_ms_text(profile, thread.overhead_cycles)}; its own time "
        f"{_ms_text(profile, thread.ocular_cycles)}; shares are of the thread's program time",
        "  blocks, lines and instructions are recorded for the whole run, not per thread: see report()",
        "",
    ]
    out = [_fit(line, WIDTH) for line in out]
    out += _functions(profile, thread.functions, program, limit, sort, "Hottest functions on this thread")
    return out


def render(profile, limit=20, sort="self", thread=None):
    _check_sort(sort)
    _check_limit(limit)
    if thread is not None:
        from ._select import thread_of

        out = _thread_view(profile, thread_of(profile, thread), limit, sort)
        return "\n".join(out).rstrip() + "\n"
    total = profile.total_cycles
    out = _header(profile)
    out += _threads(profile, limit)
    out += _functions(profile, profile.functions, total, limit, sort, "Hottest functions")
    if profile.mode == "precise":
        out += _instructions(profile, total, limit, sort)
    out += _blocks(profile, total, limit, sort)
    out += _lines(profile, total, limit, sort)
    return "\n".join(out).rstrip() + "\n"
