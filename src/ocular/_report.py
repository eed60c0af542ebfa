"""Plain-text report of a Profile: where the cycles went, with source."""

import linecache
import os


def _short(filename, width=38):
    name = os.path.relpath(filename) if os.path.isabs(filename) else filename
    if name.startswith(".."):
        name = filename
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _source(filename, lineno):
    if lineno is None:
        return ""
    return linecache.getline(filename, lineno).strip()


def _percent(part, whole):
    return f"{100.0 * part / whole:5.1f}%" if whole else "  -  "


def _table(title, header, rows):
    if not rows:
        return [title, "  (nothing recorded)", ""]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [title]
    for row in [header, *rows]:
        cells = [str(cell).rjust(width) if i < len(row) - 1 else str(cell)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    lines.append("")
    return lines


def render(profile, limit=20):
    total = profile.total_cycles + max(profile.unattributed_cycles, 0)
    ns = profile.cycles_to_ns
    out = [
        f"Ocular profile ({profile.mode} mode, de-instrumentation threshold "
        f"{profile.deinstrument_threshold or 'off'})",
        f"  traced {profile.duration_ns / 1e6:.1f} ms, {profile.events:,} events, "
        f"{profile.disabled_sites:,} sites de-instrumented",
        f"  clock {profile.clock_source} at {profile.tsc_hz / 1e9:.3f} GHz; "
        f"{profile.event_cost_cycles} cycles per event subtracted",
        f"  unattributed: {profile.unattributed_cycles:,} cycles ({_percent(max(profile.unattributed_cycles, 0), total).strip()}) "
        f"-- intervals whose ends were de-instrumented or left by an exception",
    ]
    if profile.trace_path:
        out.append(f"  trace: {profile.trace_path} ({profile.trace_events:,} events"
                   f"{f', {profile.dropped_events:,} dropped' if profile.dropped_events else ''})")
    if profile.failure:
        out.append(f"  WARNING: recording stopped early: {profile.failure}")
    out.append("")

    rows = [(_percent(f.cycles, total), f"{ns(f.cycles) / 1e6:.3f}", f"{f.calls:,}",
             f"{_short(f.filename)}:{f.firstlineno}", f.qualname)
            for f in profile.functions[:limit]]
    out += _table("Hottest functions (self time)", ("self", "ms", "calls", "where", "function"), rows)

    if profile.mode == "precise":
        rows = [(_percent(i.cycles, total), f"{i.cycles:,}", f"{i.hits:,}",
                 f"{_short(i.filename, 28)}:{i.lineno}", i.offset,
                 i.opname + (f" ({i.specialized})" if i.specialized else ""),
                 _source(i.filename, i.lineno)[:50])
                for i in profile.instructions[:limit]]
        out += _table("Hottest instructions", ("share", "cycles", "hits", "line", "offset",
                                               "instruction", "source"), rows)

    rows = [(_percent(b.cycles, total), f"{b.cycles:,}", f"{b.hits:,}",
             f"{_short(b.filename, 28)}:{b.first_line}-{b.last_line}",
             f"{b.start_offset}-{b.end_offset}", b.qualname, _source(b.filename, b.first_line)[:50])
            for b in profile.blocks[:limit]]
    out += _table("Hottest basic blocks", ("share", "cycles", "hits", "lines", "offsets",
                                           "function", "first line"), rows)

    rows = [(_percent(line.cycles, total), f"{line.cycles:,}", f"{line.hits:,}",
             f"{_short(line.filename)}:{line.lineno}", _source(line.filename, line.lineno)[:60])
            for line in profile.lines[:limit]]
    out += _table("Hottest lines", ("share", "cycles", "hits", "line", "source"), rows)
    return "\n".join(out).rstrip() + "\n"
