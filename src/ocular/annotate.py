"""Annotated source: a function's (or a file's) source, one line per source
line, with the figures Ocular measured beside each line (profile.annotate).

    line      hits      cycles          ns  share    source
      34         1      15,623       6,018   3.5%= > def loops(n):
      35         1       2,004         772   0.4%  |     total = 0

Figures are LineStats: per source line, summed over the run (and over every
function with code on that line). The margin marks the basic blocks of the
annotated code: '>' a block begins on this line, '|' the line is inside a
block begun above. '=' after a share marks a line whose figure is a share of a
block spanning several lines, not measured alone; '~' a figure no larger
than its uncertainty (it may be 0). In precise mode each line is followed by its instructions, named
`SPECIALIZED (BASE)` where CPython had specialised them.

Source comes from linecache; when it has none (the file is gone, or the code
was compiled from a string), the output says so and still lists the figures.
"""

import inspect
import linecache
import os
import types

from ._profile import FunctionStats
from ._report import _count, _instruction_name, _ms, _noted, _share, _short
from ._select import _code_of, files_named, function_of

_COLUMNS = f"{'line':>6} {'hits':>9} {'cycles':>12} {'ns':>12} {'share':>6}      source"
_DEF_STARTS = ("def ", "async def ", "class ", "@")


def _belongs(qualname, owner):
    """Whether code named `qualname` is part of the code named `owner`."""
    return owner is None or qualname == owner or qualname.startswith(owner + ".")


def _code_lines(code):
    lines = {line for _, _, line in code.co_lines() if line}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            lines |= _code_lines(const)
    return lines


def _function_range(profile, function, code, source):
    """(first, last) source line of a function: its code's lines if we have
    the code, its definition's block if we have the source, and every line
    the profile recorded for it."""
    first = last = function.firstlineno
    if code is not None:
        last = max([last, *_code_lines(code)])
    for block in profile.blocks:
        if block.filename == function.filename and block.qualname == function.qualname and block.last_line:
            last = max(last, block.last_line)
    for insn in profile.instructions:
        if insn.filename == function.filename and insn.qualname == function.qualname and insn.lineno:
            last = max(last, insn.lineno)
    if source and first <= len(source):
        if function.qualname == "<module>":
            last = len(source)
        elif source[first - 1].lstrip().startswith(_DEF_STARTS):
            try:
                last = max(last, first + len(inspect.getblock(source[first - 1:])) - 1)
            except (SyntaxError, IndentationError, ValueError, IndexError):
                pass  # the file changed since the run, or is not Python: keep what the profile says
    return first, last


def _figures(profile, lineno, stats, total):
    hits = f"{stats.hits:,}"
    cycles = _count(stats.cycles, stats.uncertainty)
    ns = _noted(f"{profile.cycles_to_ns(stats.cycles):,.0f}", stats.cycles, stats.uncertainty)
    share = _share(stats.cycles, stats.uncertainty, total)
    number = f"{lineno}" if lineno is not None else ""
    return f"{number:>6} {hits:>9} {cycles:>12} {ns:>12} {share:>6}"


def _margin(lineno, blocks):
    if any(b.first_line == lineno for b in blocks):
        return ">"
    if any(b.first_line is not None and b.first_line < lineno <= (b.last_line or 0) for b in blocks):
        return "|"
    return " "


def _body(profile, filename, first, last, owner, source):
    total = profile.total_cycles
    lines = {line.lineno: line for line in profile.lines if line.filename == filename}
    blocks = [b for b in profile.blocks if b.filename == filename and _belongs(b.qualname, owner)]
    insns = {}  # adaptive mode's instruction figures are shares of blocks: shown in precise mode only
    for insn in profile.instructions if profile.mode == "precise" else ():
        if insn.filename == filename and _belongs(insn.qualname, owner):
            insns.setdefault(insn.lineno, []).append(insn)
    out = [_COLUMNS]
    if source:
        numbers = range(first, min(last, len(source)) + 1)
    else:
        numbers = sorted(n for n in {*lines, *(n for n in insns if n is not None)} if first <= n <= last)
    for lineno in numbers:
        text = source[lineno - 1].rstrip("\r\n").expandtabs() if source else ""
        stats = lines.get(lineno)
        figures = _figures(profile, lineno, stats, total) if stats else f"{lineno:>6}" + " " * 43
        shared = "=" if stats is not None and stats.shared else " "
        out.append(f"{figures}{shared} {_margin(lineno, blocks)}   {text}".rstrip())
        out += _instruction_rows(profile, insns.get(lineno, ()), owner, total)
    if None in insns:
        out.append("  instructions without a source line:")
        out += _instruction_rows(profile, insns[None], owner, total)
    return out


def _instruction_rows(profile, insns, owner, total):
    rows = []
    for insn in sorted(insns, key=lambda i: (i.qualname != owner, i.qualname, i.offset)):
        where = f"  (in {insn.qualname})" if owner is not None and insn.qualname != owner else ""
        rows.append(f"{_figures(profile, None, insn, total)}         @{insn.offset:<5} "
                    f"{_instruction_name(insn)}{where}")
    return rows


def _source_of(filename):
    source = linecache.getlines(filename)
    if source:
        return source, []
    return [], [f"  source not available: linecache has no text for {filename!r} (the file is gone, "
                "or the code was not read from a file); the lines with figures:"]


def _legend(profile, self_cycles, unattributed):
    out = ["  per line: hits, cycles and ns over the whole run; share of the program's time",
           "  margin: '>' a basic block begins on the line, '|' inside a block begun above; "
           "'=' a share of a",
           "  block spanning several lines (not measured alone); '~' no larger than its uncertainty"]
    if profile.mode == "precise":
        out.append("  under each line its instructions: @offset, SPECIALIZED (BASE) where CPython specialised it")
    if profile.deinstrument_threshold:
        part = f" ({_share(unattributed, 0, self_cycles)} of self time)" if self_cycles else ""
        out.append(f"  each site is traced for its first {profile.deinstrument_threshold:,} hits; later time "
                   f"is unattributed{part}")
    return out


def _annotate_function(profile, function, code):
    source, missing = _source_of(function.filename)
    first, last = _function_range(profile, function, code, source)
    total = profile.total_cycles
    out = [
        f"Annotated source of {function.qualname}  {_short(function.filename, 60)}:{function.firstlineno} "
        f"({profile.mode} mode)",
        f"  {function.calls:,} call{'s' if function.calls != 1 else ''}; self {_ms(profile, function.cycles, function.uncertainty)} ms "
        f"({_share(function.cycles, function.uncertainty, total)}), inclusive "
        f"{_ms(profile, function.inclusive_cycles, function.uncertainty)} ms "
        f"({_share(function.inclusive_cycles, function.uncertainty, total)}) of the program's "
        f"{profile.cycles_to_ns(total) / 1e6:.3f} ms",
        *_legend(profile, function.cycles, function.unattributed_cycles),
        *missing,
        "",
    ]
    owner = None if function.qualname == "<module>" else function.qualname
    return out + _body(profile, function.filename, first, last, owner, source)


def _annotate_file(profile, filename):
    source, missing = _source_of(filename)
    functions = [f for f in profile.functions if f.filename == filename]
    self_cycles = sum(f.cycles for f in functions)
    out = [
        f"Annotated source of {_short(filename, 80)} ({profile.mode} mode)",
        f"  {len(functions):,} functions recorded in it; their self time {_ms(profile, self_cycles)} ms "
        f"({_share(self_cycles, 0, profile.total_cycles)} of the program's time)",
        *_legend(profile, self_cycles, sum(f.unattributed_cycles for f in functions)),
        *missing,
        "",
    ]
    last = len(source) if source else max([0, *(line.lineno for line in profile.lines
                                                 if line.filename == filename)])
    return out + _body(profile, filename, 1, last, None, source)


def annotate(profile, target):
    """The annotated source of `target`: a function, method or code object, a
    FunctionStats, a source file's name (as recorded, absolute, or a trailing
    part of it), or a function's name (`qualname`, `FILE:qualname`, `FILE:LINE`)."""
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if isinstance(target, str):
        files = files_named(profile, target)
        if len(files) > 1:
            raise ValueError(f"{target!r} names several files of this profile: {', '.join(files[:6])}")
        if files:
            return "\n".join(_annotate_file(profile, files[0])).rstrip() + "\n"
    function = function_of(profile, target)
    code = None if isinstance(target, (str, FunctionStats)) else _code_of(target)
    return "\n".join(_annotate_function(profile, function, code)).rstrip() + "\n"
